"""``tes.legacy_cpu_placement``: 0.10 tasks need ``tes.legacy_container_cpus`` free CPUs (the
pure part of a round, :func:`ccserver.scheduling.rounds.decide_now`)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from ccserver.config import from_dict
from ccserver.scheduling.rounds import decide_now


def legacy(created: float, ram: int = 64) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "created_at": created,
        "application_container_description": {"image": "i", "container_ram": ram},
        "input_files": [],
    }


def config(cpus: float, on: bool = True) -> Any:
    return from_dict({"tes": {"legacy_container_cpus": cpus, "legacy_cpu_placement": on}}, "<test>")


def live_app(node: str) -> dict[str, Any]:
    # as rounds.decide reads them: each live 0.10 container holds legacy_container_cpus
    return {"cluster_node": node, "container_ram": 64, "cpus": 0.25}


def test_a_node_takes_only_as_many_tasks_as_its_free_cpus_allow() -> None:
    tasks = [legacy(float(i)) for i in range(12)]
    decisions = decide_now(config(0.25), [("n", 100_000)], tasks, [], [], [], {"n": 2})
    assert [p.task["_id"] for p in decisions.placed] == [t["_id"] for t in tasks[:8]]  # FIFO, 2 / 0.25
    # three live containers hold 0.75 of the 2 CPUs
    decisions = decide_now(config(0.25), [("n", 100_000)], tasks, [live_app("n")] * 3, [], [], {"n": 2})
    assert len(decisions.placed) == 5 and decisions.too_large == []


def test_without_the_option_0_10_tasks_are_placed_by_ram_only() -> None:
    tasks = [legacy(float(i)) for i in range(12)]
    decisions = decide_now(config(0.25, on=False), [("n", 100_000)], tasks, [live_app("n")] * 8, [], [], {"n": 2})
    assert len(decisions.placed) == 12


def test_more_cpus_than_any_node_has_is_too_large_and_says_so() -> None:
    task = legacy(1.0)
    decisions = decide_now(config(4), [("n", 100_000), ("m", 100_000)], [task], [], [], [], {"n": 2, "m": 3})
    assert decisions.placed == []
    ((task_id, why),) = decisions.too_large
    assert task_id == task["_id"]
    assert "needs 4 CPUs (tes.legacy_container_cpus)" in why and "largest node: 3 CPUs" in why


def test_too_much_ram_is_still_told_as_ram() -> None:
    task = legacy(1.0, ram=200_000)
    decisions = decide_now(config(0.25), [("n", 100_000)], [task], [], [], [], {"n": 2})
    ((_, why),) = decisions.too_large
    assert "enough RAM" in why and "largest node: 100000 MB" in why
