"""Submitting and cancelling tasks: the domain behind ``POST /tasks`` and ``POST /tasks/cancel``.

Both work in bulk: a batch of 10,000 tasks is two ``insert_many`` calls (and concurrent
submissions share them, see :class:`Submitter`), a cancel of many tasks is one ``find`` per
250 tasks here (who may cancel what) and the life cycle's bulk writes
(:meth:`ccserver.lifecycle.Lifecycle.cancel_tasks`), so the API's speed does not depend on how
clients group their work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bson import ObjectId
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccserver import states
from ccserver.document_checks import check_storable
from ccserver.errors import UnknownTask
from ccserver.storage.base import Document, Store
from ccserver.vault import SECRETS, Vault

log = Logger(namespace="ccserver.tasks")


class Clock(Protocol):
    def seconds(self) -> float: ...


class Timer(Clock, Protocol):
    """What a :class:`Submitter` needs of its clock (the reactor, or a test's ``Clock``)."""

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall: ...


class Principal(Protocol):
    """Who asks: ``ccserver.auth.guard.User`` satisfies this."""

    @property
    def username(self) -> str: ...
    @property
    def is_admin(self) -> bool: ...


def _created_then_waiting(what: str, now: float) -> list[dict[str, Any]]:
    return [
        states.transition(states.CREATED, f"{what} created.", now),
        states.transition(states.WAITING, f"{what} waiting.", now),
    ]


@dataclass
class Submission:
    """The documents of one ``POST /tasks`` and the answer it gets once they are stored."""

    group: Document
    tasks: list[Document]
    batch: bool
    #: the tasks' secrets, kept apart from them (see :mod:`ccserver.vault`)
    secrets: list[Document]

    @property
    def answer(self) -> dict[str, Any]:
        if self.batch:
            return {"task_group_id": self.group["_id"], "tasks": [{"_id": t["_id"]} for t in self.tasks]}
        return {"_id": self.tasks[0]["_id"]}


def prepare(user: Principal, body: dict[str, Any], now: float, vault: Vault) -> Submission:
    """The task group and task documents (both created → waiting) for an already validated
    body: one task, or ``{"tasks": [...]}``.  The body's dicts become the documents (no copy:
    the parsed body belongs to this request); their secrets are masked in them and kept apart."""
    batch = "tasks" in body
    submitted: list[dict[str, Any]] = body["tasks"] if batch else [body]
    for i, task in enumerate(submitted):
        check_storable(task, f"tasks[{i}]" if batch else "")
    group_id = ObjectId()
    task_ids = [ObjectId() for _ in submitted]
    kept: list[Document] = []
    group: Document = {
        "_id": group_id,
        "state": states.WAITING,
        "created_at": now,
        "transitions": _created_then_waiting("Task group", now),
        "username": user.username,
        "task_ids": task_ids,
        "tasks_count": len(submitted),
    }
    for task_id, task in zip(task_ids, submitted, strict=True):
        task["_id"] = task_id
        task["username"] = user.username
        task["state"] = states.WAITING
        task["created_at"] = now
        task["transitions"] = _created_then_waiting("Task", now)
        task["trials"] = 0
        task["task_group_id"] = [group_id]
        secret = vault.conceal(task)
        if secret is not None:
            secret["task_group_id"] = [group_id]
            kept.append(secret)
    return Submission(group, submitted, batch, kept)


async def store_submissions(store: Store, submissions: Sequence[Submission]) -> None:
    """Insert the groups, then the tasks, of ``submissions``: one ``insert_many`` each.

    Groups go in first: a scheduler never sees a task whose group is missing.  The answer is
    sent only after both writes, so a submission that got an answer is complete.  A write that
    fails raises; what it may have stored is the caller's to remove (see
    :meth:`Submitter._store`).  What a crash interrupts is found at the next start by
    :mod:`ccserver.scheduling.recovery`: a group whose stored tasks are fewer than its
    ``tasks_count`` never got an answer, and goes with its tasks."""
    groups = [s.group for s in submissions]
    tasks = [t for s in submissions for t in s.tasks]
    secrets = [k for s in submissions for k in s.secrets]
    if secrets:  # before the tasks: no task is ever without its secrets
        await store.insert_many(SECRETS, secrets)
    await store.insert_many("task_groups", groups)
    await store.insert_many("tasks", tasks)


async def remove_submissions(store: Store, group_ids: list[ObjectId]) -> None:
    """Remove unanswered submissions (raises on failure)."""
    await store.delete_many("tasks", {"task_group_id": {"$in": group_ids}})
    await store.delete_many("task_groups", {"_id": {"$in": group_ids}})
    await store.delete_many(SECRETS, {"task_group_id": {"$in": group_ids}})


class Submitter:
    """``submit`` with group commit: submissions that arrive while a write is under way are
    stored together by the next write, with one ``insert_many`` per collection.

    Under load this turns 32 concurrent single-task requests into two store calls instead
    of 64, which is what lets the embedded store keep up; a lone request is written at once,
    so nothing waits for a timer.  If a combined write fails, each submission of it is
    retried on its own, so one bad request cannot fail its neighbours.

    What a failed write may have stored (on MongoDB an ``insert_many`` that fails part-way
    keeps the documents before the failure, and a timed-out one may still complete) is removed
    before the error is answered.  If even that fails (the database went away), the groups are
    kept in :attr:`leftovers` and their removal is retried every :attr:`RETRY_SECONDS` on the
    clock until it succeeds."""

    #: a combined write holds at most about this many tasks (one submission may exceed it)
    MAX_TASKS_PER_WRITE = 20_000
    #: how long after a failed removal of unanswered submissions it is tried again
    RETRY_SECONDS = 10.0

    def __init__(self, store: Store, clock: Timer, vault: Vault) -> None:
        self.store = store
        self.clock = clock
        self.vault = vault
        self._queue: list[tuple[Submission, Deferred[dict[str, Any]]]] = []
        self._writing = False
        #: ids of task groups whose failed submission could not be removed yet
        self.leftovers: set[ObjectId] = set()
        self._retry: IDelayedCall | None = None

    def submit(self, user: Principal, body: dict[str, Any]) -> Deferred[dict[str, Any]]:
        try:
            submission = prepare(user, body, self.clock.seconds(), self.vault)
        except Exception:
            return fail()
        return self.enqueue(submission)

    def enqueue(self, submission: Submission) -> Deferred[dict[str, Any]]:
        """Store a submission already :func:`prepare` d (perhaps in another thread: a large
        batch's documents are built off the reactor); fire with its answer."""
        d: Deferred[dict[str, Any]] = Deferred()
        self._queue.append((submission, d))
        if not self._writing:
            Deferred.fromCoroutine(self._write_all())
        return d

    def _take(self) -> list[tuple[Submission, Deferred[dict[str, Any]]]]:
        count, taken = 0, 0
        for submission, _ in self._queue:
            if taken and count + len(submission.tasks) > self.MAX_TASKS_PER_WRITE:
                break
            count += len(submission.tasks)
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _write_all(self) -> None:
        self._writing = True
        try:
            while self._queue:
                await self._write(self._take())
        finally:
            self._writing = False

    async def _store(self, submissions: Sequence[Submission]) -> None:
        """:func:`store_submissions`, and on failure the removal of what it may have stored."""
        try:
            await store_submissions(self.store, submissions)
        except Exception:
            await self._remove([s.group["_id"] for s in submissions])
            raise

    async def _remove(self, group_ids: list[ObjectId]) -> bool:
        """Remove the tasks, then the groups, of submissions that got no answer; on failure
        keep them for a retry."""
        try:
            await remove_submissions(self.store, group_ids)
        except Exception as e:
            self.leftovers.update(group_ids)
            log.warn(
                "could not remove {n} unanswered task group(s) yet ({error}); will retry",
                n=len(group_ids),
                error=str(e) or e.__class__.__name__,
            )
            if self._retry is None or not self._retry.active():
                self._retry = self.clock.callLater(self.RETRY_SECONDS, self._retry_removal)
            return False
        self.leftovers.difference_update(group_ids)
        return True

    def _retry_removal(self) -> None:
        self._retry = None
        Deferred.fromCoroutine(self.remove_leftovers())

    async def remove_leftovers(self) -> int:
        """Retry the removal of unanswered submissions that failed; the number removed."""
        if not self.leftovers:
            return 0
        ids = list(self.leftovers)
        if not await self._remove(ids):
            return 0
        log.info("removed {n} unanswered task group(s)", n=len(ids))
        return len(ids)

    def stop(self) -> None:
        """Give up the pending retry (the daemon stops; the next start's recovery finds what
        is left)."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    async def _write(self, batch: list[tuple[Submission, Deferred[dict[str, Any]]]]) -> None:
        try:
            await self._store([s for s, _ in batch])
        except Exception:
            if len(batch) == 1:
                _fire(batch[0][1], Failure())
                return
            for submission, d in batch:
                try:
                    await self._store([submission])
                except Exception:
                    _fire(d, Failure())
                else:
                    _fire(d, submission.answer)
            return
        for submission, d in batch:
            _fire(d, submission.answer)


def _fire(d: Deferred[Any], result: Any) -> None:
    """Deliver ``result`` unless the request has gone (Klein cancels the route's Deferred
    when the client disconnects; the documents are stored anyway)."""
    if d.called:
        return
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


class Canceller(Protocol):
    """What cancels: :meth:`ccserver.lifecycle.Lifecycle.cancel_tasks`."""

    async def cancel_tasks(self, ids: list[ObjectId], description: str) -> dict[ObjectId, int]: ...


async def cancel(store: Store, user: Principal, ids: list[ObjectId], lifecycle: Canceller) -> list[dict[str, Any]]:
    """Cancel the tasks ``ids`` (all or none) and their live containers; fire with
    ``{"_id", "state"}`` per requested id, in request order.

    This checks who may cancel what; the cancel itself (its writes, what follows the ends,
    the groups) is the life cycle's.  A standard user may name only its own tasks: a foreign
    id is answered exactly like an unknown one, so the answer does not reveal which ids exist."""
    wanted = list(dict.fromkeys(ids))
    scope: dict[str, Any] = {"_id": {"$in": wanted}}
    if not user.is_admin:
        scope["username"] = user.username
    known: dict[ObjectId, int] = {}
    for chunk in _chunks(wanted):
        scope["_id"] = {"$in": chunk}
        found = await store.find("tasks", scope, projection={"_id": 1, "state": 1})
        known.update({doc["_id"]: doc["state"] for doc in found})
    for task_id in wanted:
        if task_id not in known:
            raise UnknownTask(f"task not found: {task_id}")
    live = [i for i in wanted if known[i] in states.LIVE_STATES]
    if live:
        known.update(await lifecycle.cancel_tasks(live, f"Task cancelled by {user.username}."))
    return [{"_id": task_id, "state": known[task_id]} for task_id in ids]


#: ids per store call of the ownership check of a cancel: a filter's ``$in`` list is searched
#: linearly per document by the embedded store's matcher, so very long lists cost quadratic time
CANCEL_CHUNK = 250


def _chunks(ids: list[ObjectId]) -> list[list[ObjectId]]:
    return [ids[i : i + CANCEL_CHUNK] for i in range(0, len(ids), CANCEL_CHUNK)]
