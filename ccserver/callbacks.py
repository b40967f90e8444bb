"""The container callback protocol (cc-protocol.md §7): what a worker tells us, what we answer.

A callback is accepted only with the container's own key (compared in constant time) and only
in order: the n-th callback has ``callback_type`` n and reports success.  Anything else fails
the container, and through it the task (which may then be retried).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId
from twisted.logger import Logger

from ccserver import states
from ccserver.errors import CallbackRefused, WrongCallbackKey
from ccserver.lifecycle import Lifecycle
from ccserver.metrics import Metrics
from ccserver.storage.base import Store
from ccserver.vault import Vault, digests

log = Logger(namespace="ccserver.callbacks")

APPLICATION = "application_containers"
DATA = "data_containers"


class Callbacks:
    def __init__(
        self,
        store: Store,
        lifecycle: Lifecycle,
        data_container_address: Callable[[dict[str, Any]], Awaitable[str]],
        wake: Callable[[], None],
        vault: Vault,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        #: counts callbacks by container kind, type and outcome
        self.metrics = metrics if metrics is not None else Metrics()
        self.vault = vault
        self.lifecycle = lifecycle
        self.data_container_address = data_container_address
        self.wake = wake

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
        container = await self._authenticated(collection, body)
        _id = container["_id"]
        received = container.get("callbacks", [])
        expected = len(received)
        record = {k: v for k, v in body.items() if k != "callback_key"}
        repeated = bool(received) and body["callback_type"] == expected - 1 and _same(received[-1], record)
        if states.is_end(container["state"]):
            # An ended container is owed nothing: a repeat of its last callback (its answer
            # was lost) is acknowledged, with no content; anything else is refused.
            if repeated:
                return {}
            raise CallbackRefused(f"container {_id} is {states.name(container['state'])}; no more callbacks accepted")
        if repeated:
            problem = _problem(body, expected - 1)
            if problem:
                await self.lifecycle.container_failed(collection, _id, problem, body["content"].get("exception"))
                raise CallbackRefused(f"container {_id} failed: {problem}")
            return await self._answer(collection, container, body["callback_type"])
        await self.store.update_one(collection, {"_id": _id}, {"$push": {"callbacks": record}})

        problem = _problem(body, expected)
        if problem:
            await self.lifecycle.container_failed(collection, _id, problem, body["content"].get("exception"))
            raise CallbackRefused(f"container {_id} failed: {problem}")

        return await self._answer(collection, container, body["callback_type"])

    async def _answer(self, collection: str, container: dict[str, Any], callback_type: int) -> dict[str, Any]:
        if collection == APPLICATION:
            return await self._application(container, callback_type)
        return await self._data(container, callback_type)

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
        if callback_type == 3:
            await self.lifecycle.application_succeeded(container["_id"], "Results sent (callback 3).")
        return {}

    async def _input_files(self, task: dict[str, Any], container: dict[str, Any]) -> list[Any]:
        inputs = task.get("input_files", [])
        if task.get("no_cache") or not container.get("data_container_ids"):
            return inputs
        rewritten = []
        cache: dict[ObjectId, tuple[list[Any], str]] = {}
        for spec_digest, dc_id in zip(digests(task), container["data_container_ids"], strict=False):
            if dc_id not in cache:
                dc = await self.store.find_one(DATA, {"_id": dc_id})
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
                DATA,
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


def results_sent(container: dict[str, Any]) -> bool:
    """Did this application container report all four callbacks with success?  Then its
    results were sent, whatever became of the answer to the last one or of the process."""
    received = container.get("callbacks") or []
    if len(received) < 4:
        return False
    return all(
        c.get("callback_type") == i and (c.get("content") or {}).get("state") == states.SUCCESS
        for i, c in enumerate(received[:4])
    )


def _same(stored: dict[str, Any], record: dict[str, Any]) -> bool:
    """Is ``record`` the callback already stored (ids compared as text)?"""
    return {k: str(v) for k, v in stored.items()} == {k: str(v) for k, v in record.items()}
