"""State changes of task groups, tasks and containers, with their consequences (cc-protocol §8).

Every change is a compare-and-set on the stored document (its state must still be live), so
a document never leaves an end state and two paths that race (a callback and a container's
death, say) cannot both win.  Consequences cascade from here: a failed application container
fails its task, which waits again until ``max_task_trials`` is spent; a failed data container
fails the application containers that depend on it; an ended task notifies and may end its
group.  Effects outside the database (removing containers, starting waiting ones) are the
scheduler's: it is woken through ``wake``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import ObjectId
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ccserver import states
from ccserver.documents import has_secret, mask_secrets
from ccserver.kinds import DEFAULT_KINDS, Kinds
from ccserver.metrics import Metrics
from ccserver.storage.base import StorageError, Store
from ccserver.vault import Vault

log = Logger(namespace="ccserver.lifecycle")

#: tasks per store call of a cancel: a filter's ``$in`` list is searched linearly per document
#: by the embedded store's matcher, so very long lists cost quadratic time
CANCEL_CHUNK = 250


class Lifecycle:
    def __init__(
        self,
        store: Store,
        clock: Any,
        max_task_trials: int,
        vault: Vault,
        notify_task: Callable[[dict[str, Any]], Any] = lambda task: None,
        wake: Callable[[], None] = lambda: None,
        kinds: Kinds = DEFAULT_KINDS,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        #: hears of ended tasks (their run times)
        self.metrics = metrics if metrics is not None else Metrics()
        self.vault = vault
        self.clock = clock
        self.max_task_trials = max_task_trials
        self.notify_task = notify_task
        self.wake = wake
        #: the container kinds: what a container's end means (see ccserver.kinds)
        self.kinds = kinds
        #: group id → "look once more" for the group checks under way (see update_group)
        self._group_checks: dict[ObjectId, bool] = {}
        #: background finishes of cancelled tasks under way (their groups are theirs to end)
        self.finishing = 0

    # --- the one primitive -------------------------------------------------------------

    async def transition(
        self,
        collection: str,
        _id: ObjectId,
        state: int,
        description: str,
        exception: str | None = None,
        caused_by: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        from_states: tuple[int, ...] = states.LIVE_STATES,
        push: dict[str, Any] | None = None,
        also: dict[str, Any] | None = None,
    ) -> bool:
        """Move a document in ``from_states`` to ``state``, in one compare-and-set write;
        False if it was not in ``from_states``.  ``extra`` is set and ``push`` pushed in the
        same write; ``also`` adds to its filter (a compare-and-set on more than the state).

        Container documents hold no secrets (see :mod:`ccserver.vault`; callbacks are
        recorded masked), so an end needs no read first; a kind whose secrets the vault keeps
        has them deleted once it ended.  An ended task's secrets are deleted by
        :meth:`task_ended`, after its notifications took the secrets they need (their own
        auth passwords)."""
        record = states.transition(state, description, self.clock.seconds(), exception, caused_by)
        changes: dict[str, Any] = {"state": state, **(extra or {})}
        if state == states.CREATED:
            changes["created_at"] = record["timestamp"]
        matched = await self.store.update_one(
            collection,
            {"_id": _id, "state": {"$in": list(from_states)}, **(also or {})},
            {"$set": changes, "$push": {"transitions": record, **(push or {})}},
        )
        if matched and states.is_end(state):
            kind = self.kinds.of(collection)
            if kind is not None and kind.keeps_secrets:
                await self.vault.forget([_id])
        return bool(matched)

    async def _mask(self, collection: str, _id: ObjectId, doc: dict[str, Any] | None = None) -> None:
        """Once a document ends, its secrets (keys containing key/password) are masked in
        the database too (cc-protocol §3)."""
        if doc is None:
            doc = await self.store.find_one(collection, {"_id": _id})
        if not doc:
            return
        masked = mask_secrets(doc)
        changes = {k: v for k, v in masked.items() if k != "_id" and doc.get(k) != v}
        if changes:
            await self.store.update_one(collection, {"_id": _id}, {"$set": changes})

    # --- containers --------------------------------------------------------------------

    async def container_failed(
        self,
        collection: str,
        _id: ObjectId,
        description: str,
        exception: str | None = None,
        task_id: ObjectId | None = None,
    ) -> bool:
        """A container failed: per its kind, so does its task's trial (``task_id`` when the
        caller knows it, else read), and so do the containers that need it."""
        kind = self.kinds[collection]
        if not await self.transition(collection, _id, states.FAILED, description, exception):
            return False
        log.info("{kind} {id} failed: {why}", kind=kind.word, id=str(_id), why=description)
        if kind.task_field is not None:
            if task_id is None:
                container = await self.store.find_one(collection, {"_id": _id}, {kind.task_field: 1})
                task_id = container[kind.task_field][0] if container else None
            if task_id is not None:
                await self.task_failed(task_id, description, {f"{kind.name}_container_id": _id})
        for needing in self.kinds.needing(kind):
            assert needing.collection is not None and needing.needs_field is not None
            dependants = await self.store.find(
                needing.collection,
                {needing.needs_field: _id, "state": {"$in": list(states.LIVE_STATES)}},
                projection={"_id": 1},
            )
            for dependant in dependants:
                await self.container_failed(needing.collection, dependant["_id"], f"{kind.word} failed: {description}")
        self.wake()
        return True

    async def container_succeeded(
        self,
        collection: str,
        _id: ObjectId,
        description: str,
        task_id: ObjectId | None = None,
        push: dict[str, Any] | None = None,
    ) -> bool:
        """The container did its work (an application container sent its results): it
        succeeds, and per its kind its task too.  Both are compare-and-set changes, so a
        repeated callback or a recovery that races with it records nothing twice.  ``push``
        (the callback that tells it) is recorded in the same write."""
        kind = self.kinds[collection]
        if not await self.transition(collection, _id, states.SUCCESS, description, push=push):
            return False
        if kind.task_field is not None:
            if task_id is None:
                container = await self.store.find_one(collection, {"_id": _id}, {kind.task_field: 1})
                task_id = container[kind.task_field][0] if container else None
            if task_id is not None:
                await self.task_succeeded(task_id, _id, kind.name)
        self.wake()
        return True

    async def application_succeeded(
        self, _id: ObjectId, description: str, task_id: ObjectId | None = None, push: dict[str, Any] | None = None
    ) -> bool:
        """:meth:`container_succeeded` for an application container."""
        return await self.container_succeeded("application_containers", _id, description, task_id, push)

    async def task_succeeded(self, task_id: ObjectId, container_id: ObjectId, kind: str = "application") -> bool:
        """The task of a successful container succeeds (unless it already ended)."""
        if not await self.transition(
            "tasks", task_id, states.SUCCESS, "Task succeeded.", caused_by={f"{kind}_container_id": container_id}
        ):
            return False
        await self.task_ended(task_id)
        return True

    # --- tasks -------------------------------------------------------------------------

    async def task_failed(
        self,
        task_id: ObjectId,
        description: str,
        caused_by: dict[str, Any] | None,
        from_states: tuple[int, ...] = states.LIVE_STATES,
    ) -> bool:
        """A trial of the task failed: it waits again, or fails once ``max_task_trials`` are
        spent.  False when the task was not in ``from_states``.

        The trials are read for the message that counts them; the write is a compare-and-set
        on the state and on the trials read, so two failures that race count two trials or
        one, never the same trial twice."""
        task = await self.store.find_one("tasks", {"_id": task_id}, {"trials": 1, "state": 1})
        if not task or task["state"] not in from_states:
            return False
        seen = {"trials": task.get("trials")}
        trials = int(task.get("trials") or 0) + 1
        if trials < self.max_task_trials:
            why = f"Task waiting again (trial {trials} of {self.max_task_trials}): {description}"
            moved = await self.transition(
                "tasks",
                task_id,
                states.WAITING,
                why,
                caused_by=caused_by,
                extra={"trials": trials},
                from_states=from_states,
                also=seen,
            )
            self.wake()
            return moved
        why = f"Task failed (trial {trials} of {self.max_task_trials}): {description}"
        if await self.transition(
            "tasks",
            task_id,
            states.FAILED,
            why,
            caused_by=caused_by,
            extra={"trials": trials},
            from_states=from_states,
            also=seen,
        ):
            await self.task_ended(task_id)
            return True
        return False

    async def task_failed_at_once(self, task_id: ObjectId, description: str) -> None:
        """A failure no retry can mend (e.g. too large for the cluster)."""
        if await self.transition("tasks", task_id, states.FAILED, description):
            await self.task_ended(task_id)

    async def task_cancelled(self, task_id: ObjectId, description: str = "Task cancelled.") -> bool:
        """Cancel one task (see :meth:`cancel_tasks`) and wait for what follows its end."""
        now = await self.cancel_tasks([task_id], description, background=False)
        return now.get(task_id) == states.CANCELLED

    async def cancel_tasks(self, ids: list[ObjectId], description: str, background: bool = True) -> dict[ObjectId, int]:
        """Cancel the live tasks of ``ids`` and their live containers (of every kind that runs
        for a task); the state of each of ``ids`` now (cancelled, or the end state it had
        reached first).

        Per :data:`CANCEL_CHUNK` tasks: one ``update_many`` for the tasks, one per kind for
        their containers, both compare-and-set on the state (a task that ended a moment ago is
        never pulled out of its end state), and a read of the states only when some task was
        not cancelled.  What follows the ends (notifications, masking, the groups' ends) runs
        in the background unless ``background`` is false; the scheduler is woken to remove
        the containers."""
        wanted = list(dict.fromkeys(ids))
        result: dict[ObjectId, int] = {}
        cancelled: list[ObjectId] = []
        now = self.clock.seconds()
        for start in range(0, len(wanted), CANCEL_CHUNK):
            chunk = wanted[start : start + CANCEL_CHUNK]
            matched = await self.store.update_many(
                "tasks",
                {"_id": {"$in": chunk}, "state": states.not_ended()},
                {
                    "$set": {"state": states.CANCELLED},
                    "$push": {"transitions": states.transition(states.CANCELLED, description, now)},
                },
            )
            if matched == len(chunk):
                result.update(dict.fromkeys(chunk, states.CANCELLED))
                ours = chunk
            else:
                # some had ended already (or ended meanwhile): their states now
                found = await self.store.find("tasks", {"_id": {"$in": chunk}}, projection={"_id": 1, "state": 1})
                result.update({doc["_id"]: doc["state"] for doc in found})
                ours = [i for i in chunk if result.get(i) == states.CANCELLED] if matched else []
            cancelled += ours
            if not ours:
                continue
            for kind in self.kinds.kept():
                if kind.task_field is None or kind.collection is None:
                    continue
                await self.store.update_many(
                    kind.collection,
                    {kind.task_field: {"$in": ours}, "state": states.not_ended()},
                    {
                        "$set": {"state": states.CANCELLED},
                        "$push": {
                            "transitions": states.transition(
                                states.CANCELLED, f"{kind.word.capitalize()} cancelled: {description}", now
                            )
                        },
                    },
                )
        if not cancelled:
            return result
        self.wake()
        finishing = self._finish_cancelled(cancelled)
        if background:
            d = Deferred.fromCoroutine(finishing)
            d.addErrback(lambda f: log.failure("finishing cancelled tasks", f))
        else:
            await finishing
        return result

    async def _finish_cancelled(self, ids: list[ObjectId]) -> None:
        """Each cancelled task first (notifications, masking), then each group once: a group
        ends only after all its cancelled tasks were finished, so a crash half-way leaves it
        live (and the recovery finishes the rest)."""
        self.finishing += 1
        try:
            groups: dict[ObjectId, None] = {}
            for start in range(0, len(ids), CANCEL_CHUNK):
                chunk = ids[start : start + CANCEL_CHUNK]
                for task in await self.store.find("tasks", {"_id": {"$in": chunk}}):
                    await self.finish_ended(task)
                    groups.update(dict.fromkeys(task.get("task_group_id") or []))
            for group_id in groups:
                await self.update_group(group_id)
        except StorageError as e:
            # the periodic recovery finishes ended tasks and ends their groups
            log.warn("cancelled tasks not all finished now: {error}", error=str(e))
        finally:
            self.finishing -= 1

    async def task_ended(self, task_id: ObjectId, update_group: bool = True) -> None:
        """What follows the end of a task: its notifications, masking its secrets, and (unless
        the caller does it once for many tasks) the end of its group."""
        task = await self.store.find_one("tasks", {"_id": task_id})
        if not task:
            return
        await self.finish_ended(task)
        if update_group:
            for group_id in task.get("task_group_id", []):
                try:
                    await self.update_group(group_id)
                except StorageError as e:
                    # the periodic reconciliation ends groups whose tasks all ended
                    log.warn("group {id} not updated now: {error}", id=str(group_id), error=str(e))

    async def finish_ended(self, task: dict[str, Any]) -> None:
        """Notify one ended task, given its stored document, then delete its secrets.

        A task without secret fields kept nothing in the vault (see :meth:`Vault.conceal`):
        it costs no vault read and no delete."""
        task_id = task["_id"]
        secret = has_secret(task)
        self.metrics.task_ended(task)
        if task.get("notifications"):
            revealed = await self.vault.reveal(task) if secret else task
            try:
                sent = self.notify_task(revealed)
            except Exception as e:  # notifications never break the life cycle
                log.error("notification of task {id} could not be sent: {error}", id=str(task_id), error=str(e))
            else:
                if isinstance(sent, Deferred):
                    sent.addCallback(self._record_notifications, task_id)
        if secret:
            await self.vault.forget([task_id])
            await self._mask("tasks", task_id, task)

    def _record_notifications(self, deliveries: Any, task_id: ObjectId) -> Any:
        """Note on the task what became of its notifications (``notifications_sent``: URL
        without user info or query, delivered, last status, attempts, error, time), for the
        dashboard; not awaited by anyone, and a failed write is only logged."""
        now = self.clock.seconds()
        records = [
            {
                "url": d.url,
                "delivered": d.delivered,
                "status": d.status,
                "attempts": d.attempts,
                "error": d.error,
                "timestamp": now,
            }
            for d in deliveries or ()
            if hasattr(d, "delivered")
        ]
        if records:
            written = self.store.update_one(
                "tasks", {"_id": task_id}, {"$push": {"notifications_sent": {"$each": records}}}
            )
            written.addErrback(
                lambda f: log.warn(
                    "notifications of task {id} not recorded: {e}", id=str(task_id), e=f.getErrorMessage()
                )
            )
        return deliveries

    async def task_processing(
        self, task_id: ObjectId, group_id: ObjectId, caused_by: dict[str, Any], group: bool = True
    ) -> None:
        """The task is placed; its group too (unless ``group`` is false: the caller knows it
        was moved already)."""
        await self.transition(
            "tasks",
            task_id,
            states.PROCESSING,
            "Task processing.",
            caused_by=caused_by,
            from_states=(states.WAITING,),
        )
        if not group:
            return
        await self.transition(
            "task_groups",
            group_id,
            states.PROCESSING,
            "Task group processing.",
            caused_by={"task_id": task_id},
            from_states=(states.WAITING, states.CREATED),
        )

    async def update_group(self, group_id: ObjectId) -> None:
        """A group ends when all its tasks ended: success if one succeeded, else failed.

        Many tasks of one group tend to end together; checks of one group are coalesced: while
        one runs, further calls only ask it to look once more, and return at once."""
        running = self._group_checks
        if group_id in running:
            running[group_id] = True  # look again when the running check is done
            return
        running[group_id] = False
        try:
            while True:
                await self._update_group_once(group_id)
                if not running[group_id]:
                    break
                running[group_id] = False
        finally:
            del running[group_id]

    async def _update_group_once(self, group_id: ObjectId) -> None:
        """At most two reads of one task each and, when every task ended, one compare-and-set
        write: a live task says the group goes on; else a task that succeeded says it ended
        with success, and none says it failed.  Neither read sorts or counts, so a task's end
        costs the same in a group of 10 tasks or of 10,000 (a sorted read decoded the whole
        group at every end).  Ended tasks do not come back, so the second read cannot miss a
        task that went live meanwhile.  An ended group is not read first: its compare-and-set
        simply matches nothing."""
        live = await self.store.find(
            "tasks",
            {"task_group_id": group_id, "state": {"$in": list(states.LIVE_STATES)}},
            projection={"_id": 1},
            limit=1,
        )
        if live:
            return
        succeeded = await self.store.find(
            "tasks", {"task_group_id": group_id, "state": states.SUCCESS}, projection={"_id": 1}, limit=1
        )
        if succeeded:
            await self.transition("task_groups", group_id, states.SUCCESS, "All tasks of the group ended.")
        else:
            await self.transition(
                "task_groups", group_id, states.FAILED, "All tasks of the group failed or were cancelled."
            )
