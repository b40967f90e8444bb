"""Small stand-ins for the cluster and the scheduler, for tests of the web API.

They implement only what :class:`ccserver.web.api.API` calls and record the calls, so a
test can assert that ``POST /nodes`` re-checked the named nodes or that ``POST /tasks``
woke the scheduler.  The authenticator and the store are never faked in the API tests: the
real ones are cheap enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed


class FakeCluster:
    """Nodes by name with fixed capacities; a node named in ``dead`` is listed as dead."""

    def __init__(self, names: Sequence[str] = ("node1", "node2"), dead: Sequence[str] = ()) -> None:
        self.names = list(names)
        self.dead = {name: "the inspection container failed" for name in dead}
        self.rechecked: list[list[str]] = []

    def node_names(self) -> list[str]:
        return list(self.names)

    def nodes_status(self) -> Deferred[dict[str, Any]]:
        healthy: list[dict[str, Any]] = [
            {
                "name": name,
                "total_ram": 8192,
                "reserved_ram": 0,
                "total_cpus": 4,
                "reserved_cpus": 0,
                "active_application_containers": [],
                "active_data_containers": [],
            }
            for name in self.names
            if name not in self.dead
        ]
        dead = [{"name": name, "description": text} for name, text in self.dead.items()]
        return succeed({"healthy_nodes": healthy, "dead_nodes": dead})

    def recheck(self, names: list[str]) -> Deferred[None]:
        self.rechecked.append(list(names))
        for name in names:
            self.dead.pop(name, None)
        return succeed(None)


class FakeScheduler:
    """Counts ``wake()`` calls."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1
