"""Fixtures of the security tests: the API server of tests/api and the real-Docker daemon of
tests/e2e, shared rather than copied."""

from tests.api.conftest import accounts, api_server, hash_pool, start_server  # noqa: F401 (fixtures)
from tests.e2e.conftest import ccserver, daemon_log, engine, gateway  # noqa: F401 (fixtures)
