"""Log observers built from ``[server]``: ``log_dir``, ``suppress_stdout``, ``log_format``.

twistd looks for an ``ILogObserver`` component on the application before it starts logging;
:func:`build_observer` makes the one ccserver installs there (see ``CCServer.setServiceParent``).
With none of the logging keys set, twistd's own choice (stdout with ``-n``, ``twistd.log``
otherwise) is kept.
"""

from __future__ import annotations

import os
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


__all__ = ["build_observer", "wants_own_observer", "globalLogPublisher", "open_log_file"]
