"""How ccserver names a place inside a nested document or configuration file in a message.

One spelling everywhere, so that an error about a request body, a query or the
configuration points at the key the same way: ``tasks[3].application_container_description``
or ``server.listeners[0].port``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def path_text(path: Iterable[Any], prefix: str = "") -> str:
    """``tasks[3].application_container_description.container_ram``: names are joined with
    dots, list indexes in brackets, after ``prefix`` (the path so far, possibly empty)."""
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
