from tests.resilience.conftest import gateway  # noqa: F401  (the Docker bridge gateway fixture)
