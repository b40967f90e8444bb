"""Pausing Python's cyclic garbage collector while large, short-lived, acyclic data is alive.

A maximum-size batch is about half a million container objects (task documents, their lists,
ObjectIds) that live for the seconds between parsing and answering.  Each full collection in
that time walks all of them while holding the GIL: measured, 40 full collections of 40-700 ms
during one 8 MiB batch and the rounds after it, which stopped the reactor thread as surely as
parsing on it did.  The documents hold no reference cycles, so reference counting frees them
the moment the request is answered; the collector has nothing to find among them.

:class:`CollectorPause` turns automatic collection off while at least one holder is active
and back on when the last one releases (or after ``longest`` seconds, whatever happens), on
the reactor's next turn.  It
is re-enabled only after the large data is gone, so no big young generation is left to walk.
Cyclic garbage made meanwhile by other work is collected once collection is back on.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="ccserver.collector")

#: no hold keeps the collector off longer than this many seconds
LONGEST_SECONDS = 120.0


class CollectorPause:
    """Used on the reactor thread only (holds are taken and released there)."""

    def __init__(self, clock: Any, longest: float = LONGEST_SECONDS) -> None:
        self.clock = clock
        self.longest = longest
        self._holders = 0
        self._was_enabled = False
        self._resume: Any = None

    @property
    def holders(self) -> int:
        return self._holders

    def hold(self) -> Callable[[], None]:
        """Pause automatic collection; call the returned function (once or more) to release."""
        if self._holders == 0:
            if self._resume is not None and self._resume.active():
                self._resume.cancel()  # still off from the last hold: stays off
            else:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._resume = None
        self._holders += 1
        released = [False]

        def release() -> None:
            if released[0]:
                return
            released[0] = True
            if timer.active():
                timer.cancel()
            self._holders -= 1
            if self._holders == 0:
                # on the next turn of the reactor: the release runs inside the callbacks of
                # the Deferred that delivered the large data (a store read, say), which holds
                # it until they return; collecting now would walk all of it
                self._resume = self.clock.callLater(0, self._enable)

        def expire() -> None:
            log.warn("a garbage collector pause outlived {s} s; collection is back on", s=self.longest)
            release()

        timer = self.clock.callLater(self.longest, expire)
        return release

    def _enable(self) -> None:
        self._resume = None
        if self._holders == 0 and self._was_enabled:
            gc.enable()
