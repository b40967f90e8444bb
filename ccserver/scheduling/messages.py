"""How scheduling names an error in a log line or a container's transition."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of the error's message (at most 1000 characters), or its class name."""
    text = str(error).strip()
    return text.splitlines()[0][:1000] if text else error.__class__.__name__
