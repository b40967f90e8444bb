"""Entry point: python3 /opt/container_worker '<settings JSON>' (or python -m ccserver.worker ...)."""

import sys

try:
    from .runner import main
except ImportError:  # run as the directory /opt/container_worker
    from runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
