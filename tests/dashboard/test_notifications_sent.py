"""What became of a task's notifications is noted on the task (``notifications_sent``), for
its dashboard page; on both storage backends."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from ccserver import states
from ccserver.lifecycle import Lifecycle
from ccserver.notifications import Delivery
from ccserver.vault import Vault
from tests.lifecycle.test_lifecycle import KEY, app_container, seed


@pytest_twisted.ensureDeferred
async def test_deliveries_are_recorded_on_the_task_when_they_are_done(store: Any) -> None:
    clock = Clock()
    clock.advance(1000)
    pending: list[Deferred[list[Delivery]]] = []

    def notify(task: dict[str, Any]) -> Deferred[list[Delivery]]:
        pending.append(Deferred())
        return pending[-1]

    life = Lifecycle(store, clock, max_task_trials=3, vault=Vault(store, KEY), notify_task=notify)
    _, (task_id,) = await seed(store, clock)
    notifications = [{"connector_access": {"url": "https://u:pw@a.example/n?k=1"}}, {"connector_access": {"url": "x"}}]
    await store.update_one("tasks", {"_id": task_id}, {"$set": {"notifications": notifications}})
    assert await life.application_succeeded(await app_container(store, task_id), "done")
    assert len(pending) == 1
    assert "notifications_sent" not in (await store.find_one("tasks", {"_id": task_id}))
    clock.advance(5)
    pending[0].callback([Delivery("https://a.example/n", True, 200, 1), Delivery("x", False, None, 3, "not a URL")])
    for _ in range(100):  # the write is not awaited by anyone: wait for it, bounded
        task = await store.find_one("tasks", {"_id": task_id})
        if task.get("notifications_sent"):
            break
    assert task["state"] == states.SUCCESS
    assert task["notifications_sent"] == [
        {"url": "https://a.example/n", "delivered": True, "status": 200, "attempts": 1, "error": None,
         "timestamp": 1005.0},
        {"url": "x", "delivered": False, "status": None, "attempts": 3, "error": "not a URL", "timestamp": 1005.0},
    ]  # fmt: skip
