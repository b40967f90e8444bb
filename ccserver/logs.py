"""Log observers built from ``[server]``: ``log_dir``, ``suppress_stdout``, ``log_format``.

twistd looks for an ``ILogObserver`` component on the application before it starts logging;
:func:`build_observer` makes the one ccserver installs there (see ``CCServer.setServiceParent``).
With none of the logging keys set, twistd's own choice (stdout with ``-n``, ``twistd.log``
otherwise) is kept.
"""

from __future__ import annotations

import os
import re
import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

from ccserver.config import ServerConfig

LOG_FILE_NAME = "ccserver.log"

#: what a client could use to forge a log line or drive a terminal: C0 and C1 controls,
#: DEL, the Unicode line separators and bidirectional overrides; the backslash too, so that
#: an escape in the log always means an escaped character
_UNPRINTABLE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``value`` as one line of text for the log, whatever a client put into it: control
    characters, line breaks and backslashes come out escaped (``\\n``, ``\\x1b``, ``\\\\``).
    Bytes are read as Latin-1, so every byte shows."""
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return _UNPRINTABLE.sub(_escape_one, text)


@implementer(ILogObserver)
class FanOut:
    """Send each event to several observers (stdout and the rotated file)."""

    def __init__(self, observers: list[ILogObserver]) -> None:
        self.observers = observers

    def __call__(self, event: dict) -> None:
        for observer in self.observers:
            observer(event)


def wants_own_observer(server: ServerConfig) -> bool:
    return bool(server.log_dir or server.suppress_stdout or server.log_format == "json")


def _file_observer(stream: IO[str], fmt: str) -> ILogObserver:
    if fmt == "json":
        return jsonFileLogObserver(stream)
    return textFileLogObserver(stream)


def open_log_file(server: ServerConfig) -> LogFile:
    """The rotated log file in ``log_dir`` (created if missing)."""
    assert server.log_dir
    os.makedirs(server.log_dir, exist_ok=True)
    return LogFile(
        LOG_FILE_NAME,
        server.log_dir,
        rotateLength=server.log_rotate_bytes,
        maxRotatedFiles=server.log_max_rotated_files,
    )


def build_observer(server: ServerConfig, stdout: IO[str] | None = None) -> ILogObserver:
    observers: list[ILogObserver] = []
    if not server.suppress_stdout:
        observers.append(_file_observer(stdout or sys.stdout, server.log_format))
    if server.log_dir:
        # ignore: a LogFile is not an IO[str], but has the write and flush the observers call
        observers.append(_file_observer(open_log_file(server), server.log_format))  # type: ignore[arg-type]
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    return FilteringLogObserver(FanOut(observers), [predicate])


__all__ = ["build_observer", "wants_own_observer", "globalLogPublisher", "open_log_file", "printable"]
