"""Putting the store back in order after a crash (``kill -9``, power loss) or a database outage.

The daemon writes one document at a time, so a crash can leave a step half done.  The
scheduler runs :meth:`Recovery.startup` once, in its first round, before it places anything;
the same checks (but for submissions) run again in every full round, limited to what is
older than :data:`GRACE_SECONDS` so they never race with a step that is under way.  What the
checks mend, and why each choice is safe (see also ``docs/resilience.rst``):

Submissions (:mod:`ccserver.tasks` writes the group first, then all its tasks, and answers
only after both).  A live group with fewer stored tasks than its ``tasks_count`` belongs to
a request that got no answer: the group, its tasks and their application containers are
removed, so an unanswered submission is either fully stored or not at all.  A task whose
group does not exist is removed likewise.  Only groups and tasks created before this process
started are judged (a submission being written now is not interrupted).

Placements (:meth:`Scheduler._write_placement` writes data containers, the application
container, then moves the task and its group to processing).  A waiting task with a live
application container is completed (moved to processing): the placement was decided with
that container counted, and removing it instead would only redo the same work.  A task with
several live application containers keeps the most advanced one (then the oldest) and the
others are cancelled, so a task never has two live application containers (the scheduler
never creates one for a task that is not waiting, and a task waits only when its container
ended).  A processing task without a live application container follows its latest one:
success if that succeeded (a success recorded on the container but not on the task), else
the failure is counted as a trial, as if the container had just failed.

Callbacks.  A live application container whose four callbacks were all recorded with success
sent its results: it succeeds (the crash hit between recording the callback and acting on
it).  A data container whose callback 1 was recorded becomes processing.

Ends.  A live group whose tasks have all ended is ended; its ended tasks whose secrets are
still holding secrets first get what follows an end (notifications, deleting them).  A waiting group with
a task past waiting becomes processing.  Containers are masked in the same write that ends
them, so they are never left unmasked.

Everything that involves Docker (containers that finished, vanished or are left over while
the daemon was down) is the scheduler's ``reconcile``, which runs for each node once it is
known to be healthy, before anything is launched there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from twisted.logger import Logger

from ccserver import states, tasks
from ccserver.callbacks import results_sent
from ccserver.documents import mask_secrets, masking_update
from ccserver.kinds import APPLICATION
from ccserver.kinds import DATA as DATA_KIND
from ccserver.lifecycle import Lifecycle
from ccserver.storage.base import Store

log = Logger(namespace="ccserver.recovery")

APP = APPLICATION.documents
DATA = DATA_KIND.documents
LIVE = {"$in": list(states.LIVE_STATES)}
#: the periodic checks leave alone what changed less than this many seconds ago: a step
#: under way (a callback, a container's end) finishes within milliseconds, or fails
GRACE_SECONDS = 60.0
#: with more live tasks than this, the pass over them runs in ``Recovery.run``
GROUP_PASS_INLINE = 2000
#: which live application container of a task is kept when there are several
_RANK = {states.PROCESSING: 0, states.WAITING: 1, states.CREATED: 2}


@dataclass
class Report:
    """What one pass mended, for the log."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, what: str, n: int = 1) -> None:
        if n:
            self.counts[what] += n

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __str__(self) -> str:
        return ", ".join(f"{what}: {n}" for what, n in sorted(self.counts.items())) or "nothing to mend"


def _ended_at(doc: dict[str, Any]) -> float:
    transitions = doc.get("transitions") or []
    return float(transitions[-1].get("timestamp", 0.0)) if transitions else float(doc.get("created_at", 0.0))


class Recovery:
    def __init__(self, store: Store, lifecycle: Lifecycle, clock: Any, run: Any = None) -> None:
        """``run`` (a thread pool's ``run``) takes the pure passes over every live task off the
        reactor thread: with tens of thousands waiting, one pass takes a noticeable while."""
        self.store = store
        self.lifecycle = lifecycle
        self.clock = clock
        self.run = run

    async def startup(self, started_at: float) -> Report:
        """The checks once, before the first round: everything written before ``started_at``
        was written by an earlier process, which is gone."""
        report = Report()
        await self.mask_containers(report)
        live_tasks = await self._live_tasks()
        if await self.submissions(started_at, report, live_tasks):
            live_tasks = await self._live_tasks()
        await self.store_pass(started_at, report, live_tasks=live_tasks)
        return report

    async def mask_containers(self, report: Report) -> None:
        """Container documents hold no secrets (data containers' inputs are in the vault,
        callbacks are recorded masked), so their end is one compare-and-set write that reads
        nothing.  A live one written by a ccserver before the vault may still hold some: it
        is masked here, once."""
        for collection in self.lifecycle.kinds.collections():
            for doc in await self.store.find(collection, {"state": LIVE}):
                update = masking_update(doc)
                if update:
                    await self.store.update_one(collection, {"_id": doc["_id"]}, update)
                    report.add("container documents masked")

    async def _live_tasks(self) -> list[dict[str, Any]]:
        return await self.store.find(
            "tasks", {"state": LIVE}, projection={"task_group_id": 1, "created_at": 1, "state": 1}
        )

    async def periodic(self, groups: bool = True) -> Report:
        """The checks of a full round, for what has been in a half-done state for a while."""
        report = Report()
        await self.store_pass(self.clock.seconds() - GRACE_SECONDS, report, groups)
        return report

    # --- submissions --------------------------------------------------------------------

    async def submissions(self, cutoff: float, report: Report, live_tasks: list[dict[str, Any]]) -> bool:
        """Remove interrupted submissions; True if there were any."""
        groups = await self.store.find(
            "task_groups", {"state": LIVE}, projection={"tasks_count": 1, "task_ids": 1, "created_at": 1}
        )
        groups = [g for g in groups if g.get("created_at", 0.0) < cutoff]
        live_per_group = Counter(t["task_group_id"][0] for t in live_tasks if t.get("task_group_id"))
        incomplete: list[ObjectId] = []
        for g in groups:
            expected = int(g.get("tasks_count", len(g.get("task_ids") or [])))
            if live_per_group[g["_id"]] >= expected:
                continue
            stored = await self.store.count("tasks", {"task_group_id": g["_id"]})
            if stored < expected:
                incomplete.append(g["_id"])
        known = {g["_id"] for g in groups}
        referenced = {
            t["task_group_id"][0]
            for t in live_tasks
            if t.get("task_group_id") and t.get("created_at", 0.0) < cutoff and t["task_group_id"][0] not in known
        }
        if referenced:
            found = await self.store.find("task_groups", {"_id": {"$in": list(referenced)}}, projection={"_id": 1})
            orphans = referenced - {g["_id"] for g in found}
        else:
            orphans = set()
        doomed = incomplete + sorted(orphans)
        if not doomed:
            return False
        task_ids = [
            t["_id"] for t in await self.store.find("tasks", {"task_group_id": {"$in": doomed}}, projection={"_id": 1})
        ]
        if task_ids:
            # their containers' Docker containers, if any, are removed by reconcile as unknown
            await self.store.delete_many(APP, {"task_id": {"$in": task_ids}})
        await tasks.remove_submissions(self.store, doomed)
        log.warn(
            "removed {n} submission(s) interrupted before they were answered ({t} task(s))",
            n=len(doomed),
            t=len(task_ids),
        )
        report.add("unanswered submissions removed", len(doomed))
        return True

    # --- the store's own consistency ------------------------------------------------------

    async def store_pass(
        self, cutoff: float, report: Report, groups: bool = True, live_tasks: list[dict[str, Any]] | None = None
    ) -> None:
        """``groups=False`` leaves ending groups alone (while tasks are being finished in
        the background, e.g. after a large cancel)."""
        await self._containers(cutoff, report)
        await self._data_containers(report)
        await self._groups(cutoff, report, groups, live_tasks)

    async def _containers(self, cutoff: float, report: Report) -> None:
        apps = await self.store.find(
            APP, {"state": LIVE}, projection={"task_id": 1, "state": 1, "created_at": 1, "callbacks": 1}
        )
        by_task: dict[ObjectId, list[dict[str, Any]]] = {}
        for app in apps:
            if results_sent(app):
                if await self.lifecycle.application_succeeded(app["_id"], "Results sent (callback 3, recovered)."):
                    report.add("successes completed")
                continue
            by_task.setdefault(app["task_id"][0], []).append(app)
        for task_id, live in by_task.items():
            if len(live) > 1:
                live.sort(key=lambda a: (_RANK.get(a["state"], 3), a.get("created_at", 0.0)))
                for extra in live[1:]:
                    log.error(
                        "task {task} had more than one live application container; cancelling {app}",
                        task=str(task_id),
                        app=str(extra["_id"]),
                    )
                    if await self.lifecycle.transition(
                        APP,
                        extra["_id"],
                        states.CANCELLED,
                        "Another application container of its task is live.",
                        caused_by={"task_id": task_id},
                    ):
                        report.add("duplicate application containers cancelled")
        # waiting tasks with a live application container: an interrupted placement
        if by_task:
            waiting = await self.store.find(
                "tasks", {"_id": {"$in": list(by_task)}, "state": states.WAITING}, projection={"task_group_id": 1}
            )
            for task in waiting:
                await self.lifecycle.task_processing(
                    task["_id"], task["task_group_id"][0], {"application_container_id": by_task[task["_id"]][0]["_id"]}
                )
                report.add("placements completed")
        # processing tasks without a live application container
        processing = await self.store.find("tasks", {"state": states.PROCESSING}, projection={"_id": 1})
        orphans = [t["_id"] for t in processing if t["_id"] not in by_task]
        for task_id in orphans:
            latest = await self.store.find(
                APP,
                {"task_id": task_id},
                sort=[("created_at", -1)],
                limit=1,
                projection={"state": 1, "transitions": 1, "created_at": 1},
            )
            if latest and _ended_at(latest[0]) >= cutoff:
                continue  # ended a moment ago: whoever ended it finishes the task
            if latest and latest[0]["state"] == states.SUCCESS:
                if await self.lifecycle.task_succeeded(task_id, latest[0]["_id"]):
                    report.add("successes completed")
            elif latest and states.is_end(latest[0]["state"]):
                description = (latest[0].get("transitions") or [{}])[-1].get("description") or "container ended"
                if await self.lifecycle.task_failed(
                    task_id,
                    description,
                    {"application_container_id": latest[0]["_id"]},
                    from_states=(states.PROCESSING,),
                ):
                    report.add("failures completed")
            elif not latest:
                if await self.lifecycle.transition(
                    "tasks",
                    task_id,
                    states.WAITING,
                    "Task waiting again: it had no application container.",
                    from_states=(states.PROCESSING,),
                ):
                    report.add("tasks waiting again")

    async def _data_containers(self, report: Report) -> None:
        for dc in await self.store.find(
            DATA, {"state": {"$in": [states.CREATED, states.WAITING]}}, projection={"callbacks": 1}
        ):
            received = dc.get("callbacks") or []
            if len(received) >= 2 and all(
                c.get("callback_type") == i and (c.get("content") or {}).get("state") == states.SUCCESS
                for i, c in enumerate(received[:2])
            ):
                if await self.lifecycle.transition(
                    DATA,
                    dc["_id"],
                    states.PROCESSING,
                    "Input files available in data container (recovered).",
                    from_states=(states.CREATED, states.WAITING),
                ):
                    report.add("data containers made processing")
                    self.lifecycle.wake()

    async def _groups(
        self, cutoff: float, report: Report, groups_too: bool, live_tasks: list[dict[str, Any]] | None
    ) -> None:
        groups = await self.store.find("task_groups", {"state": LIVE}, projection={"state": 1, "created_at": 1})
        if not groups:
            return
        if live_tasks is None or report:  # what was mended may have changed their states
            live_tasks = await self._live_tasks()
        if self.run is not None and len(live_tasks) > GROUP_PASS_INLINE:
            busy, started = await self.run(_group_activity, live_tasks)
        else:
            busy, started = _group_activity(live_tasks)
        del live_tasks
        for g in groups:
            if g["_id"] in busy:
                if g["state"] != states.PROCESSING and g["_id"] in started:
                    if await self.lifecycle.transition(
                        "task_groups",
                        g["_id"],
                        states.PROCESSING,
                        "Task group processing.",
                        from_states=(states.WAITING, states.CREATED),
                    ):
                        report.add("groups made processing")
                continue
            if not groups_too or g.get("created_at", 0.0) >= cutoff:
                continue
            # every task ended: finish those whose end was interrupted, then the group
            ended = await self.store.find("tasks", {"task_group_id": g["_id"]})
            if any(_ended_at(task) >= cutoff for task in ended):
                continue  # a task ended a moment ago: what follows its end may be under way
            kept = await self.lifecycle.vault.kept([task["_id"] for task in ended])
            for task in ended:
                if states.is_end(task["state"]) and (task["_id"] in kept or mask_secrets(task) != task):
                    await self.lifecycle.task_ended(task["_id"], update_group=False)
                    report.add("task ends completed")
            await self.lifecycle.update_group(g["_id"])
            report.add("groups ended")


def _group_activity(live_tasks: list[dict[str, Any]]) -> tuple[set[ObjectId], set[ObjectId]]:
    """The groups with a live task, and those with a task past waiting."""
    busy: set[ObjectId] = set()
    started: set[ObjectId] = set()
    for t in live_tasks:
        for gid in t.get("task_group_id") or []:
            busy.add(gid)
            if t["state"] != states.WAITING:
                started.add(gid)
    return busy, started
