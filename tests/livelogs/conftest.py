"""Fixtures of the live logs tests: the Docker bridge gateway, as the resilience tests have it."""

from tests.resilience.conftest import gateway  # noqa: F401  (the fixture itself)
