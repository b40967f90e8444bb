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
from ccserver.documents import mask_secrets, masking_update
from ccserver.storage.base import StorageError, Store
from ccserver.vault import Vault

log = Logger(namespace="ccserver.lifecycle")

CONTAINER_COLLECTIONS = ("application_containers", "data_containers")


class Lifecycle:
    def __init__(
        self,
        store: Store,
        clock: Any,
        max_task_trials: int,
        vault: Vault,
        notify_task: Callable[[dict[str, Any]], Any] = lambda task: None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.clock = clock
        self.max_task_trials = max_task_trials
        self.notify_task = notify_task
        self.wake = wake
        #: group id → "look once more" for the group checks under way (see update_group)
        self._group_checks: dict[ObjectId, bool] = {}

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
    ) -> bool:
        """Move a live document to ``state``; False if it was not in ``from_states``.

        A container that ends has what it still holds of secrets (documents stored before the
        vault) masked in the same write, and the vault's copy of its input specs deleted.  An
        ended task's secrets are deleted by :meth:`task_ended`, after its notifications took
        the secrets they need (their own auth passwords)."""
        record = states.transition(state, description, self.clock.seconds(), exception, caused_by)
        changes: dict[str, Any] = {"state": state, **(extra or {})}
        if state == states.CREATED:
            changes["created_at"] = record["timestamp"]
        if states.is_end(state) and collection in CONTAINER_COLLECTIONS:
            doc = await self.store.find_one(collection, {"_id": _id})
            if doc is None or doc.get("state") not in from_states:
                return False
            changes = {**masking_update(doc).get("$set", {}), **changes}
        matched = await self.store.update_one(
            collection,
            {"_id": _id, "state": {"$in": list(from_states)}},
            {"$set": changes, "$push": {"transitions": record}},
        )
        if matched and states.is_end(state) and collection == "data_containers":
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
        self, collection: str, _id: ObjectId, description: str, exception: str | None = None
    ) -> bool:
        if not await self.transition(collection, _id, states.FAILED, description, exception):
            return False
        log.info("{kind} {id} failed: {why}", kind=collection[:-1].replace("_", " "), id=str(_id), why=description)
        if collection == "application_containers":
            container = await self.store.find_one(collection, {"_id": _id}, {"task_id": 1})
            if container:
                await self.task_failed(container["task_id"][0], description, {"application_container_id": _id})
        else:
            dependants = await self.store.find(
                "application_containers",
                {"data_container_ids": _id, "state": {"$in": list(states.LIVE_STATES)}},
                projection={"_id": 1},
            )
            for app in dependants:
                await self.container_failed(
                    "application_containers", app["_id"], f"data container failed: {description}"
                )
        self.wake()
        return True

    async def application_succeeded(self, _id: ObjectId, description: str) -> bool:
        """The container sent its results: it and its task succeed.  Both are compare-and-set
        changes, so a repeated callback or a recovery that races with it records nothing twice."""
        if not await self.transition("application_containers", _id, states.SUCCESS, description):
            return False
        container = await self.store.find_one("application_containers", {"_id": _id}, {"task_id": 1})
        if container:
            await self.task_succeeded(container["task_id"][0], _id)
        self.wake()
        return True

    async def task_succeeded(self, task_id: ObjectId, app_id: ObjectId) -> bool:
        """The task of a successful application container succeeds (unless it already ended)."""
        if not await self.transition(
            "tasks", task_id, states.SUCCESS, "Task succeeded.", caused_by={"application_container_id": app_id}
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
        spent.  False when the task was not in ``from_states``."""
        task = await self.store.find_one("tasks", {"_id": task_id}, {"trials": 1, "state": 1})
        if not task or task["state"] not in from_states:
            return False
        trials = int(task.get("trials", 0)) + 1
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
            )
            self.wake()
            return moved
        why = f"Task failed (trial {trials} of {self.max_task_trials}): {description}"
        if await self.transition(
            "tasks", task_id, states.FAILED, why, caused_by=caused_by, extra={"trials": trials}, from_states=from_states
        ):
            await self.task_ended(task_id)
            return True
        return False

    async def task_failed_at_once(self, task_id: ObjectId, description: str) -> None:
        """A failure no retry can mend (e.g. too large for the cluster)."""
        if await self.transition("tasks", task_id, states.FAILED, description):
            await self.task_ended(task_id)

    async def task_cancelled(self, task_id: ObjectId, description: str = "Task cancelled.") -> bool:
        if not await self.transition("tasks", task_id, states.CANCELLED, description):
            return False
        apps = await self.store.find(
            "application_containers",
            {"task_id": task_id, "state": {"$in": list(states.LIVE_STATES)}},
            projection={"_id": 1},
        )
        for app in apps:
            await self.transition(
                "application_containers",
                app["_id"],
                states.CANCELLED,
                f"Application container cancelled: {description}",
                caused_by={"task_id": task_id},
            )
        await self.task_ended(task_id)
        self.wake()
        return True

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
        """Notify one ended task, given its stored document, then delete its secrets."""
        task_id = task["_id"]
        if task.get("notifications"):
            revealed = await self.vault.reveal(task)
            try:
                sent = self.notify_task(revealed)
            except Exception as e:  # notifications never break the life cycle
                log.error("notification of task {id} could not be sent: {error}", id=str(task_id), error=str(e))
            else:
                if isinstance(sent, Deferred):
                    sent.addCallback(self._record_notifications, task_id)
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

    async def task_processing(self, task_id: ObjectId, group_id: ObjectId, caused_by: dict[str, Any]) -> None:
        await self.transition(
            "tasks",
            task_id,
            states.PROCESSING,
            "Task processing.",
            caused_by=caused_by,
            from_states=(states.WAITING,),
        )
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
        group = await self.store.find_one("task_groups", {"_id": group_id}, {"state": 1})
        if not group or states.is_end(group["state"]):
            return
        live = await self.store.find_one(
            "tasks", {"task_group_id": group_id, "state": {"$in": list(states.LIVE_STATES)}}, {"_id": 1}
        )
        if live:
            return
        succeeded = await self.store.find_one("tasks", {"task_group_id": group_id, "state": states.SUCCESS}, {"_id": 1})
        if succeeded:
            await self.transition("task_groups", group_id, states.SUCCESS, "All tasks of the group ended.")
        else:
            await self.transition(
                "task_groups", group_id, states.FAILED, "All tasks of the group failed or were cancelled."
            )
