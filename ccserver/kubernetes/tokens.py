"""A bearer token that follows its file: bound service-account tokens expire (an hour by
default), and whoever mounts them (the kubelet's projected volume, a sidecar, an operator's
cron job) writes the next one into the same file before then.

The file is read again at most every :data:`REFRESH_SECONDS` (as client-go does), in the
background of the call that finds it due, and at once when the API server answers 401; the
call that got the 401 is then made once more if the token changed.  Reads run on the
reactor's thread pool, never on the reactor thread.  A file that cannot be read or holds no
token keeps the last good token in use (the next 401 names the setting); its text is never in a
message or a log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

log = Logger(namespace="ccserver.kubernetes")

#: seconds between two reads of a token file (client-go re-reads a token file every minute)
REFRESH_SECONDS = 60.0

ReadFile = Callable[[str], "Deferred[bytes]"]


class TokenSource:
    """The token in use, and the file it comes from (``None``: a token given inline)."""

    def __init__(
        self,
        token: str,
        path: str | None,
        where: str,
        reactor: Any,
        parse: Callable[[bytes, str], str],
        read_file: ReadFile | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        """``parse(raw, where)`` turns the file's bytes into a token or raises (a message
        naming ``where``, the setting); ``read_file(path)`` reads the file off the reactor
        thread (default: the reactor's thread pool)."""
        self._token = token
        self.path = path
        self.where = where
        self.reactor = reactor
        self.parse = parse
        self.read_file = read_file or self._read_in_thread
        self.refresh_seconds = refresh_seconds
        self.read_at = reactor.seconds()
        self.problem: str | None = None
        self._waiters: list[Deferred[bool]] = []

    @property
    def token(self) -> str:
        return self._token

    def _read_in_thread(self, path: str) -> Deferred[bytes]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), Path(path).read_bytes)

    def refresh_if_due(self) -> None:
        """Start a read in the background when the last one is older than the period."""
        if self.path is not None and self.reactor.seconds() - self.read_at >= self.refresh_seconds:
            self.refresh()

    def refresh(self) -> Deferred[bool]:
        """Read the file again now (one read at a time: a caller during a read shares it);
        fires with whether the token changed, never with an error."""
        if self.path is None:
            return succeed(False)
        waiter: Deferred[bool] = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self.read_at = self.reactor.seconds()
            Deferred.fromCoroutine(self._read(self.path)).addBoth(self._wake)
        return waiter

    def _wake(self, result: Any) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(result is True)

    async def _read(self, path: str) -> bool:
        try:
            raw = await self.read_file(path)
            token = self.parse(raw, self.where)
        except Exception as e:
            problem = f"{self.where}: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
            if problem != self.problem:
                log.warn("{problem}; the last token read stays in use", problem=problem)
            self.problem = problem
            return False
        self.problem = None
        if token == self._token:
            return False
        self._token = token
        log.info("{where}: a new token was read from {path}", where=self.where, path=path)
        return True
