"""QUEUED TES tasks in the scheduler's round (the pure part, :func:`rounds.decide_now`)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from ccserver.config import from_dict
from ccserver.scheduling.rounds import decide_now

CONFIG = from_dict({}, "<test>")


def legacy(created: float, ram: int = 100) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "created_at": created,
        "application_container_description": {"image": "i", "container_ram": ram},
        "input_files": [],
    }


def tes(created: float, ram_mb: int = 100, cpus: float = 1.0) -> dict[str, Any]:
    return {"_id": ObjectId(), "created_at": created, "ram_mb": ram_mb, "cpus": cpus}


def test_tes_and_legacy_tasks_are_placed_in_one_fifo_order() -> None:
    a, b, c = legacy(1.0), tes(2.0), legacy(3.0)
    decisions = decide_now(CONFIG, [("n", 10_000)], [a, c], [], [], [b], {"n": 8})
    assert [p.task["_id"] for p in decisions.placed] == [a["_id"], c["_id"]]
    assert decisions.tes_placed == [(b, "n")]


def test_live_tes_tasks_and_legacy_containers_hold_cpus_and_ram() -> None:
    live = [
        {"cluster_node": "n", "container_ram": 100, "cpus": 1.0},  # a 0.10 application container
        {"cluster_node": "n", "container_ram": 500, "cpus": 2.5},  # a TES attempt
    ]
    blocked, later = tes(1.0, cpus=1.0), legacy(2.0)
    decisions = decide_now(CONFIG, [("n", 10_000)], [later], live, [], [blocked], {"n": 4})
    # 4 - 3.5 CPUs free: the TES task waits, and the round stops there (FIFO)
    assert decisions.tes_placed == [] and decisions.placed == []
    fits = tes(1.0, ram_mb=9_400, cpus=0.5)
    decisions = decide_now(CONFIG, [("n", 10_000)], [], live, [], [fits], {"n": 4})
    assert decisions.tes_placed == [(fits, "n")]
    too_much_ram = tes(1.0, ram_mb=9_401, cpus=0.5)
    assert decide_now(CONFIG, [("n", 10_000)], [], live, [], [too_much_ram], {"n": 4}).tes_placed == []


def test_a_tes_task_larger_than_every_node_is_reported_with_its_needs() -> None:
    huge = tes(1.0, ram_mb=100, cpus=16)
    decisions = decide_now(CONFIG, [("n", 10_000), ("m", 20_000)], [], [], [], [huge], {"n": 4, "m": 8})
    ((task_id, why),) = decisions.tes_too_large
    assert task_id == huge["_id"]
    assert "16 CPUs" in why and "largest node: 20000 MB, 8 CPUs" in why
    assert decisions.too_large == []
