"""The API fixtures of tests/api (a real CCSite on a real socket, real accounts, the store of
every backend), for the dashboard's endpoints."""

from tests.api.conftest import accounts, api_server, hash_pool, start_server

__all__ = ["accounts", "api_server", "hash_pool", "start_server"]
