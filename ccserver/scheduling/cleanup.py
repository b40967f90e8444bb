"""Reconcile and clean up: containers that ended, vanished or are left over.

The engines are compared with the store (:meth:`Cleanup.reconcile`, once per node when it is
found healthy and on every full round), ends reported by the event streams are acted on
(:meth:`Cleanup.container_died`), and containers nobody needs any more go
(:meth:`Cleanup.cleanup`).  Only containers carrying this daemon's identity label are ever
touched; those of an older ccserver (no label) only when our store knows them.  Every node
is asked through its :class:`~ccserver.cluster.backend.NodeBackend` (a Docker engine or a
Kubernetes cluster, whose Jobs are its containers).
"""

from __future__ import annotations

from collections.abc import Callable

from bson import ObjectId
from twisted.logger import Logger

from ccserver import states
from ccserver.callbacks import results_sent
from ccserver.cluster import docker_ops
from ccserver.cluster.service import Cluster
from ccserver.identity import DaemonIdentity
from ccserver.lifecycle import Lifecycle
from ccserver.scheduling.messages import first_line
from ccserver.storage.base import Store

log = Logger(namespace="ccserver.scheduler")

LIVE = {"$in": list(states.LIVE_STATES)}


class Cleanup:
    def __init__(
        self,
        store: Store,
        cluster: Cluster,
        lifecycle: Lifecycle,
        identity: DaemonIdentity,
        removed: Callable[[ObjectId], None],
    ) -> None:
        """``removed`` hears of each container removed (by its document id)."""
        self.store = store
        self.cluster = cluster
        self.lifecycle = lifecycle
        #: this daemon's id: the label of the containers it creates, and the only ones it touches
        self.identity = identity
        self.removed = removed
        #: the container kinds (see ccserver.kinds): the life cycle's
        self.kinds = lifecycle.kinds
        #: nodes compared with the store since they were last found healthy
        self.reconciled: set[str] = set()
        #: containers of an older ccserver (no daemon label) unknown to our store, warned about once
        self._foreign_warned: set[str] = set()
        #: node -> live containers found vanished by the last reconcile, on nodes that remove a
        #: container that cannot run before they report it (their report is awaited once)
        self._vanished: dict[str, set[str]] = {}

    async def container_died(self, node: str, name: str, code: int, legacy: bool = False) -> None:
        try:
            _id = ObjectId(name)
        except Exception:
            return  # an inspection container, removed by its runner
        for kind in self.kinds.kept():
            assert kind.collection is not None
            collection = kind.collection
            doc = await self.store.find_one(collection, {"_id": _id}, {"state": 1, "cluster_node": 1, "callbacks": 1})
            if doc is not None:
                break
        else:
            if legacy:
                self.leave_foreign(node, name)
            else:
                await self.remove(node, name)
            return
        if states.is_end(doc["state"]):
            await self.remove(node, name)
            return
        if kind.success_callbacks is not None and results_sent(doc, kind.success_callbacks):
            # its results were sent; only the answer to its last callback was lost
            await self.lifecycle.container_succeeded(
                collection,
                _id,
                f"Results sent (callback {kind.success_callbacks - 1}); the container has ended.",
            )
            await self.remove(node, name)
            return
        logs = ""
        try:
            logs = await self.cluster.backend(node).logs_tail(name)
        except Exception:
            pass
        if code:
            why = f"container exited with code {code}" + (f"; last output:\n{logs.strip()}" if logs.strip() else "")
        else:
            why = "container exited before it sent all its callbacks" + (
                f"; last output:\n{logs.strip()}" if logs.strip() else ""
            )
        await self.lifecycle.container_failed(collection, _id, why)
        await self.remove(node, name)

    async def container_stuck(self, node: str, name: str, reason: str) -> None:
        """Container ``name`` could not run on ``node`` and is gone: its live document fails
        with ``reason`` (nothing when it ended already, or is not ours)."""
        try:
            _id = ObjectId(name)
        except Exception:
            return
        for kind in self.kinds.kept():
            assert kind.collection is not None
            doc = await self.store.find_one(kind.collection, {"_id": _id}, {"state": 1, "cluster_node": 1})
            if doc is None:
                continue
            if doc.get("cluster_node") == node and not states.is_end(doc["state"]):
                await self.lifecycle.container_failed(kind.collection, _id, reason)
            self.removed(_id)
            return

    def leave_foreign(self, node: str, name: str) -> None:
        if name not in self._foreign_warned:
            self._foreign_warned.add(name)
            log.warn(
                "container {name} on node {node} was made by a ccserver without a daemon identity "
                "and is unknown to this daemon's store: left alone (remove it by hand if it is nobody's)",
                name=name,
                node=node,
            )

    async def remove(self, node: str, name: str) -> None:
        try:
            await self.cluster.backend(node).remove(name, await self.identity.get())
        except Exception as e:
            log.warn("could not remove container {name} on {node}: {error}", name=name, node=node, error=first_line(e))
        try:
            self.removed(ObjectId(name))
        except Exception:
            pass

    async def reconcile(self, nodes: list[str] | None = None) -> None:
        """Compare engines with the store (every healthy one by default): fail live documents
        whose container vanished, collect containers that ended unnoticed (e.g. while the
        daemon was down), remove containers of ended or unknown documents.  Containers that
        are still running are left alone: their callbacks are accepted as before.

        On a node that removes a container that cannot run before it reports why (a
        cluster's stuck pod: its Job is deleted, then ``container_stuck`` comes), a vanished
        container fails only when it is still vanished, and still live, at the next
        reconcile: its report, with the real reason, wins the race."""
        daemon = await self.identity.get()
        for node in nodes if nodes is not None else self.cluster.healthy_names():
            try:
                backend = self.cluster.backend(node)
                present = await backend.ours(daemon)
            except Exception as e:
                self.cluster.report_error(node, e)
                continue
            vanished: set[str] = set()
            for kind in self.kinds.kept():
                assert kind.collection is not None
                collection = kind.collection
                docs = await self.store.find(
                    collection,
                    {"cluster_node": node, "state": {"$in": [states.WAITING, states.PROCESSING]}},
                    projection={"_id": 1},
                )
                for doc in docs:
                    name = str(doc["_id"])
                    if name not in present and backend.removes_stuck and name not in self._vanished.get(node, ()):
                        vanished.add(name)
                    elif name not in present:
                        await self.lifecycle.container_failed(
                            collection, doc["_id"], f"container vanished from {backend.where}"
                        )
                    elif present[name][1] in ("exited", "dead"):
                        try:
                            _, code = await backend.state(name)
                        except docker_ops.ContainerGone:
                            await self.lifecycle.container_failed(
                                collection, doc["_id"], f"container vanished from {backend.where}"
                            )
                            continue
                        await self.container_died(node, name, code, legacy=present[name][2])
            for name, (label, _status, legacy) in present.items():
                known = self.kinds.named(label)
                if known is None or known.collection is None:
                    continue  # an inspection (or a kind whose runner removes it)
                try:
                    _id = ObjectId(name)
                except Exception:
                    continue
                found = await self.store.find_one(known.collection, {"_id": _id}, {"state": 1})
                if found is None and legacy:
                    self.leave_foreign(node, name)
                elif found is None or states.is_end(found["state"]):
                    await self.remove(node, name)
            self._vanished[node] = vanished
            self.reconciled.add(node)

    async def cleanup(self) -> None:
        """Containers that no live container needs any more (data containers) succeed and
        go; containers of ended (e.g. cancelled) documents are removed."""
        for kind in self.kinds.kept():
            needing = [k for k in self.kinds.needing(kind) if k.collection and k.needs_field]
            if not needing:
                continue
            assert kind.collection is not None
            live = await self.store.find(
                kind.collection, {"state": LIVE}, projection={"_id": 1, "cluster_node": 1, "state": 1}
            )
            if not live:
                continue
            used: set[ObjectId] = set()
            for other in needing:
                assert other.collection is not None and other.needs_field is not None
                docs = await self.store.find(other.collection, {"state": LIVE}, projection={other.needs_field: 1})
                used.update(i for d in docs for i in d.get(other.needs_field) or [])
            for doc in live:
                if doc["_id"] not in used:
                    if await self.lifecycle.transition(
                        kind.collection,
                        doc["_id"],
                        states.SUCCESS,
                        f"No {' or '.join(k.word for k in needing)} needs this {kind.word}.",
                    ):
                        await self.remove(doc["cluster_node"], str(doc["_id"]))
        # cancelled containers (of the kinds a task's cancel cancels) are killed and removed
        for kind in self.kinds.kept():
            if kind.task_field is None:
                continue
            assert kind.collection is not None
            cancelled = await self.store.find(
                kind.collection, {"state": states.CANCELLED, "removed": {"$ne": True}}, projection={"cluster_node": 1}
            )
            for doc in cancelled:
                await self.remove(doc["cluster_node"], str(doc["_id"]))
                await self.store.update_one(kind.collection, {"_id": doc["_id"]}, {"$set": {"removed": True}})
