"""Sphinx configuration of the ccserver documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import re
from pathlib import Path

_init = Path(__file__).resolve().parent.parent / "ccserver" / "__init__.py"
_match = re.search(r'^__version__\s*=\s*"([^"]+)"', _init.read_text(), re.M)

project = "ccserver"
author = "The Curious Containers authors"
copyright = "Curious Containers authors"
release = _match.group(1) if _match else "unknown"
version = ".".join(release.split(".")[:2])

extensions: list[str] = []
exclude_patterns = ["_build"]
templates_path: list[str] = []
highlight_language = "none"

html_theme = "alabaster"
html_static_path: list[str] = []
html_title = f"ccserver {release}"
html_theme_options = {
    "description": "CC-Server 0.10 on Twisted",
    "fixed_sidebar": True,
}
