"""The container callback protocol (cc-protocol.md §7): what a worker tells us, what we answer.

A callback is accepted only with the container's own key (compared in constant time) and only
in order: the n-th callback has ``callback_type`` n and reports success.  Anything else fails
the container, and through it the task (which may then be retried).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bson import ObjectId
from twisted.logger import Logger

from ccserver import states
from ccserver.documents import mask_secrets
from ccserver.errors import CallbackRefused, WrongCallbackKey
from ccserver.kinds import DATA, DEFAULT_KINDS, Kinds
from ccserver.lifecycle import Lifecycle
from ccserver.metrics import Metrics
from ccserver.storage.base import Store
from ccserver.vault import Vault, digests

log = Logger(namespace="ccserver.callbacks")

#: the field of a recorded callback that says when it was received (not part of what was sent)
RECEIVED_AT = "received_at"


class Clock(Protocol):
    def seconds(self) -> float: ...


class Callbacks:
    def __init__(
        self,
        store: Store,
        lifecycle: Lifecycle,
        data_container_address: Callable[[dict[str, Any]], Awaitable[str]],
        wake: Callable[[], None],
        vault: Vault,
        kinds: Kinds = DEFAULT_KINDS,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``clock`` stamps each recorded callback with when it was received
        (``received_at``, epoch seconds; none without a clock)."""
        self.store = store
        #: counts callbacks by container kind, type and outcome
        self.metrics = metrics if metrics is not None else Metrics()
        self.vault = vault
        self.lifecycle = lifecycle
        self.data_container_address = data_container_address
        self.wake = wake
        #: the container kinds (see ccserver.kinds)
        self.kinds = kinds
        self.clock = clock
        #: the answers of each kind's callbacks, by kind name (a kind without one is refused)
        self.answers: dict[str, Callable[[dict[str, Any], int], Awaitable[dict[str, Any]]]] = {
            "application": self._application,
            "data": self._data,
        }

    async def handle(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """:meth:`_handle`, counted (by kind, type and whether it was accepted)."""
        try:
            answer = await self._handle(collection, body)
        except (CallbackRefused, WrongCallbackKey):
            self.metrics.callback(collection, body.get("callback_type"), accepted=False)
            raise
        self.metrics.callback(collection, body.get("callback_type"), accepted=True)
        return answer

    async def _handle(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """Check, record and act on one callback; the answer body, or a :class:`~ccserver.errors.DomainError`.

        The callback is stored before it is acted on.  When the answer was lost (the daemon
        was killed, the database went away half-way: the worker saw an error and sends the
        same callback again), the repeated callback is acted on again: every action is a
        compare-and-set change, so what was already done is not done twice."""
        kind = self.kinds.of(collection)
        if kind is None or kind.name not in self.answers:
            raise CallbackRefused(f"no callbacks are accepted for {collection}")
        container = await self._authenticated(collection, body)
        _id = container["_id"]
        received = container.get("callbacks", [])
        expected = len(received)
        # recorded masked: container documents hold no secrets (see ccserver.vault)
        record = mask_secrets({k: v for k, v in body.items() if k != "callback_key"})
        repeated = bool(received) and body["callback_type"] == expected - 1 and _same(received[-1], record)
        if self.clock is not None:
            record[RECEIVED_AT] = self.clock.seconds()
        if states.is_end(container["state"]):
            # An ended container is owed nothing: a repeat of its last callback (its answer
            # was lost) is acknowledged, with no content; anything else is refused.
            if repeated:
                return {}
            raise CallbackRefused(f"container {_id} is {states.name(container['state'])}; no more callbacks accepted")
        problem = _problem(body, expected - 1 if repeated else expected)
        task_id = container[kind.task_field][0] if kind.task_field and container.get(kind.task_field) else None
        if problem:
            if not repeated:
                await self.store.update_one(collection, {"_id": _id}, {"$push": {"callbacks": record}})
            await self.lifecycle.container_failed(
                collection, _id, problem, body["content"].get("exception"), task_id=task_id
            )
            raise CallbackRefused(f"container {_id} failed: {problem}")
        if kind.success_callbacks == body["callback_type"] + 1:
            # its last callback: recorded in the write that ends it, its task's end follows
            push = None if repeated else {"callbacks": record}
            if (
                not await self.lifecycle.container_succeeded(
                    collection, _id, f"Results sent (callback {body['callback_type']}).", task_id=task_id, push=push
                )
                and push
            ):
                await self.store.update_one(collection, {"_id": _id}, {"$push": push})  # it ended meanwhile
            return {}
        if not repeated:
            await self.store.update_one(collection, {"_id": _id}, {"$push": {"callbacks": record}})
        return await self.answers[kind.name](container, body["callback_type"])

    async def _authenticated(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """The container the callback is for, if it carries that container's key.  Keys are
        derived from the daemon's secret and never stored, so nothing read from the database
        (a masked ``**********`` included) can authenticate a callback."""
        container = await self.store.find_one(collection, {"_id": body["container_id"]})
        if container is None or not self.vault.callback_key_matches(
            collection, container["_id"], body.get("callback_key")
        ):
            raise WrongCallbackKey("unknown container or wrong callback key")
        return container

    async def _application(self, container: dict[str, Any], callback_type: int) -> dict[str, Any]:
        if callback_type == 0:
            task = await self.store.find_one("tasks", {"_id": container["task_id"][0]})
            if task is None:
                raise CallbackRefused("the task of this container is gone")
            task = await self.vault.reveal(task)
            description = task.get("application_container_description") or {}
            return {
                "task_id": str(task["_id"]),
                "input_files": await self._input_files(task, container),
                "result_files": task.get("result_files", []),
                "parameters": description.get("parameters"),
                # where the task schema (and 0.10) has them: inside the application container description
                "sandbox": description.get("sandbox"),
                "tracing": description.get("tracing"),
            }
        return {}  # callback 3 ends it (see handle)

    async def _input_files(self, task: dict[str, Any], container: dict[str, Any]) -> list[Any]:
        inputs = task.get("input_files", [])
        if task.get("no_cache") or not container.get("data_container_ids"):
            return inputs
        rewritten = []
        cache: dict[ObjectId, tuple[list[Any], str]] = {}
        for spec_digest, dc_id in zip(digests(task), container["data_container_ids"], strict=False):
            if dc_id not in cache:
                dc = await self.store.find_one(DATA.documents, {"_id": dc_id})
                if dc is None:
                    raise CallbackRefused(f"data container {dc_id} is gone")
                cache[dc_id] = (digests(dc), await self.data_container_address(dc))
            held, address = cache[dc_id]
            if spec_digest not in held:
                raise CallbackRefused(f"data container {dc_id} does not hold an input of this task")
            key = self.vault.input_file_key(dc_id, held.index(spec_digest))
            rewritten.append({"connector_type": "http", "connector_access": {"url": f"http://{address}/{key}"}})
        return rewritten

    async def _data(self, container: dict[str, Any], callback_type: int) -> dict[str, Any]:
        if callback_type == 0:
            revealed = await self.vault.reveal(container)
            inputs = revealed.get("input_files") or []
            keys = [self.vault.input_file_key(container["_id"], i) for i in range(len(inputs))]
            return {"input_files": inputs, "input_file_keys": keys}
        if callback_type == 1:
            if await self.lifecycle.transition(
                DATA.documents,
                container["_id"],
                states.PROCESSING,
                "Input files available in data container.",
                from_states=(states.CREATED, states.WAITING),
            ):
                self.wake()
        return {}


def _problem(body: dict[str, Any], expected: int) -> str | None:
    """Why the callback ``body``, the ``expected``-th of its container, fails the container."""
    content = body["content"]
    if body["callback_type"] != expected:
        return f"callback out of order: expected callback_type {expected}, got {body['callback_type']}"
    if content["state"] == states.FAILED:
        return f"the container reported a failure: {content.get('description', '')}".rstrip(": ")
    if content["state"] != states.SUCCESS:
        return f"callback with invalid state {content['state']}"
    return None


def results_sent(container: dict[str, Any], callbacks: int = 4) -> bool:
    """Did this container report all its ``callbacks`` (an application container's four)
    with success?  Then its results were sent, whatever became of the answer to the last one
    or of the process."""
    received = container.get("callbacks") or []
    if len(received) < callbacks:
        return False
    return all(
        c.get("callback_type") == i and (c.get("content") or {}).get("state") == states.SUCCESS
        for i, c in enumerate(received[:callbacks])
    )


def _same(stored: dict[str, Any], record: dict[str, Any]) -> bool:
    """Is ``record`` the callback already stored (ids compared as text; when it was
    received is not part of it)?"""
    return {k: str(v) for k, v in stored.items() if k != RECEIVED_AT} == {
        k: str(v) for k, v in record.items() if k != RECEIVED_AT
    }
