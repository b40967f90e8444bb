"""Entry point: python3 /opt/container_worker '<settings JSON>' (or python -m ccserver.worker ...).

The sibling modules import each other only relatively (one import path, as mypy sees them). Run as
a directory, this file is the top-level module __main__ without a package, so it first imports the
directory itself as the package `container_worker` (whatever the directory is called), then its
runner. sys.path keeps the directory first, so an image's `custom_connectors` module next to the
worker still imports.
"""

import importlib
import importlib.util
import os
import sys

PACKAGE = "container_worker"


def _runner_as_directory():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        PACKAGE, os.path.join(here, "__init__.py"), submodule_search_locations=[here]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"{here} is not the worker package")
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.runner")


if __package__:  # python -m ccserver.worker
    from .runner import main
else:  # python3 /opt/container_worker
    main = _runner_as_directory().main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
