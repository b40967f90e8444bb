"""Following this daemon's pods: one watch (a streamed ``GET ...?watch=1``, read by the
reactor, no thread), and what its events mean for ccserver.

:class:`PodWatch` keeps the watch open: it starts from a LIST's ``resourceVersion``, reopens
from the last one it saw when the server ends the watch (``timeoutSeconds``) or the
connection drops (after a short backoff), relists when the server says that version is gone
(410 or an ERROR event), and reopens when nothing, not even a bookmark, came for longer than
``timeoutSeconds`` + slack.  Repeated failures to reopen end it with ``on_broken``.

:class:`PodTracker` turns pods into the cluster's events: a pod whose container runs reports
it (once: its output can be followed), a pod that ended reports its container died (once), a
pod Pending for a hopeless reason or for longer than ``pending_timeout_seconds`` (counted from
the pod's creation, so a restart of the daemon does not restart the count) has its Job deleted
and its container reported stuck.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ccserver.identity import DAEMON_LABEL
from ccserver.kubernetes.errors import KubeAPIError, KubeUnavailable
from ccserver.kubernetes.jobs import (
    NO_EXIT_CODE,
    pod_container,
    pod_end,
    pod_running,
    pod_waiting,
    stuck_description,
)

log = Logger(namespace="ccserver.kubernetes")

#: the longest line of a watch (one pod object) read
MAX_LINE_BYTES = 4 * 1024 * 1024


class Stream(Protocol):
    """An open streamed answer (:class:`ccserver.livelogs.engine_http.BodyStream`)."""

    ended: Deferred[bool]

    def close(self) -> None: ...


class WatchAPI(Protocol):
    """What the watch needs of :class:`ccserver.kubernetes.api.KubeAPI`."""

    async def call(self, operation: str, method: str, path: str, query: dict[str, Any] | None = None) -> Any: ...

    async def open_stream(self, path: str, query: dict[str, Any], on_data: Callable[[bytes], None]) -> Stream: ...


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class PodWatch:
    """One watch of the pods matching ``selector`` in ``namespace``."""

    def __init__(
        self,
        api: WatchAPI,
        clock: Any,
        namespace: str,
        selector: str,
        on_pod: Callable[[str, Mapping[str, Any]], None],
        on_broken: Callable[[BaseException], None],
        *,
        timeout_seconds: int = 300,
        read_slack: float = 15.0,
        max_failures: int = 5,
        backoff: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        self.api = api
        self.clock = clock
        self.path = f"/api/v1/namespaces/{namespace}/pods"
        self.selector = selector
        self.on_pod = on_pod
        self.on_broken = on_broken
        self.timeout_seconds = timeout_seconds
        self.read_slack = read_slack
        self.max_failures = max_failures
        self.backoff = backoff
        #: the last resourceVersion seen (None: list first)
        self.version: str | None = None
        #: how often the watch was opened, and lists made (for tests and logs)
        self.opened = 0
        self.listed = 0
        self._stopped = False
        self._stream: Stream | None = None
        self._run: Deferred[None] | None = None
        self._sleep: Deferred[None] | None = None
        self._deadline: IDelayedCall | None = None
        self._buffer = bytearray()
        self._silent = False
        self._gone = False

    def start(self) -> None:
        self._run = ensureDeferred(self._loop())
        self._run.addErrback(lambda f: log.failure("the pod watch failed", f))

    def stop(self) -> None:
        self._stopped = True
        self._cancel_deadline()
        if self._stream is not None:
            self._stream.close()
        if self._sleep is not None and not self._sleep.called:
            self._sleep.cancel()

    @property
    def running(self) -> bool:
        return self._run is not None and not self._run.called

    async def _loop(self) -> None:
        failures = 0
        last: BaseException | None = None
        while not self._stopped:
            try:
                if self.version is None:
                    await self._list()
                opened = self.clock.seconds()
                ended_cleanly = await self._follow()
                if ended_cleanly and self.clock.seconds() - opened >= 1:
                    failures = 0
                else:  # silent past the deadline, or ended at once: back off
                    failures += 1
                    last = KubeUnavailable("the watch of the pods went silent or ended at once")
            except _Gone:
                self.version = None
                failures = 0
                continue
            except CancelledError:
                return
            except Exception as e:
                if self._stopped:
                    return
                failures += 1
                last = e
                log.info("pod watch interrupted ({n}/{max}): {error}", n=failures, max=self.max_failures, error=e)
            if self._stopped:
                return
            if failures >= self.max_failures:
                self._stopped = True
                self.on_broken(last or KubeUnavailable("the watch of the pods cannot be resumed"))
                return
            if failures:
                low, high = self.backoff
                self._sleep = deferLater(self.clock, min(high, low * 2 ** (failures - 1)), lambda: None)
                try:
                    await self._sleep
                except CancelledError:
                    return

    async def _list(self) -> None:
        answer = await self.api.call("list_pods", "GET", self.path, {"labelSelector": self.selector})
        self.listed += 1
        for pod in answer.get("items") or ():
            self.on_pod("LISTED", pod)
        self.version = str((answer.get("metadata") or {}).get("resourceVersion") or "") or None

    async def _follow(self) -> bool:
        """Read one watch to its end: True when the server ended it (its timeout), False when
        it went silent past the read deadline.  Raises on a broken connection and
        :class:`_Gone` when the version must be listed again."""
        query = {
            "watch": "1",
            "labelSelector": self.selector,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.timeout_seconds),
        }
        if self.version:
            query["resourceVersion"] = self.version
        self._buffer.clear()
        self._silent = False
        self._gone = False
        try:
            stream = await self.api.open_stream(self.path, query, self._data)
        except KubeAPIError as e:
            if e.status == 410:
                raise _Gone() from None
            raise
        self.opened += 1
        self._stream = stream
        self._arm_deadline()
        try:
            clean = await stream.ended
        finally:
            self._stream = None
            self._cancel_deadline()
        if self._gone:
            raise _Gone()
        if self._silent:
            return False
        if not clean and not self._stopped:
            raise KubeUnavailable("the connection of the pod watch broke")
        return True

    def _data(self, data: bytes) -> None:
        self._arm_deadline()
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if line.strip():
                self._line(line)
        if len(self._buffer) > MAX_LINE_BYTES:
            log.warn("a pod watch line is longer than {n} bytes: listing again", n=MAX_LINE_BYTES)
            self._expire()

    def _line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
        except (ValueError, KeyError, TypeError):
            log.warn("a pod watch sent something that is not an event: listing again")
            self._expire()
            return
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            log.info("pod watch error event {code}: {message}", code=code, message=obj.get("message", ""))
            self._expire()
            return
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.version = str(version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.on_pod(kind, obj)

    def _expire(self) -> None:
        """Relist: the version is gone, or what came cannot be trusted."""
        self._gone = True
        if self._stream is not None:
            self._stream.close()

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.clock.callLater(self.timeout_seconds + self.read_slack, self._quiet)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _quiet(self) -> None:
        self._deadline = None
        self._silent = True
        log.info("the pod watch sent nothing for {s} s: reopening", s=self.timeout_seconds + self.read_slack)
        if self._stream is not None:
            self._stream.close()


def created_at(stamp: Any) -> float | None:
    """The seconds since the epoch of an RFC 3339 ``creationTimestamp`` (``2026-12-02T07:00:00Z``)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


class Reports(Protocol):
    def container_running(self, node: str, name: str) -> None: ...

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None: ...

    def container_stuck(self, node: str, name: str, reason: str) -> None: ...


class PodTracker:
    """What the pods of one cluster's Jobs mean for their containers."""

    def __init__(
        self,
        node: str,
        events: Reports,
        clock: Any,
        pending_timeout: float,
        delete_job: Callable[[str], Awaitable[object]],
    ) -> None:
        self.node = node
        self.events = events
        self.clock = clock
        self.pending_timeout = pending_timeout
        self.delete_job = delete_job
        #: containers whose end (or trouble) was reported; forgotten when their pod is deleted
        self.reported: set[str] = set()
        #: containers whose running was reported (once per container)
        self.running: set[str] = set()
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._timers: dict[str, IDelayedCall] = {}

    def pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        name = pod_container(pod)
        if not name:
            return
        if kind == "DELETED":
            # a pod deleted before it ended (by us, or by someone else) ended its container
            if name not in self.reported:
                code = pod_end(pod)
                self._report_died(name, NO_EXIT_CODE if code is None else code, pod)
            self._forget(name)
            self.reported.discard(name)
            self.running.discard(name)
            return
        self._latest[name] = pod
        if name in self.reported:
            return
        code = pod_end(pod)
        if code is not None:
            self._forget(name)
            self.running.discard(name)
            self._report_died(name, code, pod)
            return
        if name not in self.running and pod_running(pod):
            self.running.add(name)
            self.events.container_running(self.node, name)
        waiting = pod_waiting(pod)
        if waiting is None:
            self._cancel(name)
        elif waiting.hopeless:
            self._stuck(name)
        elif name not in self._timers:
            self._timers[name] = self.clock.callLater(self._pending_left(pod), self._timed_out, name)

    def _pending_left(self, pod: Mapping[str, Any]) -> float:
        """Seconds of ``pending_timeout`` left, counted from the pod's creation: a daemon that
        restarts (and lists the pod again) does not restart the count.  Without a readable
        creation time, or with one ahead of this clock, the whole bound."""
        created = created_at((pod.get("metadata") or {}).get("creationTimestamp"))
        if created is None:
            return self.pending_timeout
        # the API gives whole seconds: counted from the end of that second, never early
        waited = self.clock.seconds() - (created + 1.0)
        return min(self.pending_timeout, max(0.0, self.pending_timeout - max(0.0, waited)))

    def _report_died(self, name: str, code: int, pod: Mapping[str, Any]) -> None:
        self.reported.add(name)
        owner = ((pod.get("metadata") or {}).get("labels") or {}).get(DAEMON_LABEL)
        self.events.container_died(self.node, name, code, owner)

    def _timed_out(self, name: str) -> None:
        self._timers.pop(name, None)
        pod = self._latest.get(name)
        if pod is not None and name not in self.reported and pod_waiting(pod) is not None:
            self._stuck(name)

    def _stuck(self, name: str) -> None:
        pod = self._latest.get(name) or {}
        waiting = pod_waiting(pod)
        if waiting is None:
            return
        self._cancel(name)
        self.reported.add(name)
        reason = stuck_description(waiting, self.pending_timeout)
        ensureDeferred(self._delete_then_report(name, reason))

    async def _delete_then_report(self, name: str, reason: str) -> None:
        try:
            await self.delete_job(name)
        except Exception as e:
            log.warn("could not delete the stuck Job {name} on {node}: {error}", name=name, node=self.node, error=e)
        self.events.container_stuck(self.node, name, reason)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _forget(self, name: str) -> None:
        self._cancel(name)
        self._latest.pop(name, None)

    def stop(self) -> None:
        for name in list(self._timers):
            self._cancel(name)
