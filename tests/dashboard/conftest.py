"""The API fixtures of tests/api (a real CCSite on a real socket, real accounts, the store of
every backend) for the dashboard's endpoints, and the Docker bridge gateway of tests/resilience
for the browser test's real daemon."""

from tests.api.conftest import accounts, api_server, hash_pool, start_server
from tests.resilience.conftest import gateway

__all__ = ["accounts", "api_server", "gateway", "hash_pool", "start_server"]
