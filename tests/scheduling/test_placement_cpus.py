"""CPU placement (the pure part): TES tasks reserve CPUs, 0.10 tasks are placed by RAM only."""

from __future__ import annotations

from ccserver.scheduling.placement import NodeCapacity, Plan, WaitingTask, place


def _place(tasks: list[WaitingTask], nodes: list[NodeCapacity], strategy: str = "spread") -> Plan:
    return place(tasks, nodes, [], data_container_ram=256, strategy=strategy, colocate=True)


def test_a_task_goes_only_where_its_cpus_are_free() -> None:
    nodes = [NodeCapacity("big-ram", 8000, 0, 2, 1.5), NodeCapacity("small-ram", 2000, 0, 4, 0)]
    plan = _place([WaitingTask("t", 1000, cpus=1)], nodes)
    assert [(p.task_id, p.node) for p in plan.placements] == [("t", "small-ram")]
    after = {n.name: n for n in plan.nodes}
    assert after["small-ram"].reserved_cpus == 1
    assert after["big-ram"].reserved_cpus == 1.5


def test_binpack_also_skips_nodes_without_free_cpus() -> None:
    nodes = [NodeCapacity("a", 1000, 0, 1, 1), NodeCapacity("b", 4000, 0, 2, 0)]
    plan = _place([WaitingTask("t", 500, cpus=0.5)], nodes, "binpack")
    assert [p.node for p in plan.placements] == ["b"]


def test_cpus_reserved_within_a_round_block_the_queue_in_order() -> None:
    nodes = [NodeCapacity("n", 8000, 0, 2, 0)]
    plan = _place([WaitingTask("a", 100, cpus=1.5), WaitingTask("b", 100, cpus=1), WaitingTask("c", 100)], nodes)
    assert [p.task_id for p in plan.placements] == ["a"]
    assert plan.blocked_task_id == "b"


def test_more_cpus_than_any_node_has_is_too_large_at_once() -> None:
    nodes = [NodeCapacity("n", 8000, 0, 2, 2), NodeCapacity("m", 8000, 0, 4, 4)]
    plan = _place([WaitingTask("huge", 100, cpus=5), WaitingTask("fits-later", 100, cpus=4)], nodes)
    assert plan.too_large == ("huge",)
    assert plan.blocked_task_id == "fits-later"


def test_tasks_without_cpus_and_nodes_without_a_cpu_count_are_not_limited() -> None:
    full = [NodeCapacity("n", 8000, 0, 2, 2)]
    assert [p.task_id for p in _place([WaitingTask("legacy", 100)], full).placements] == ["legacy"]
    unknown = [NodeCapacity("n", 8000, 0, None, 0)]
    assert [p.task_id for p in _place([WaitingTask("t", 100, cpus=64)], unknown).placements] == ["t"]


def test_overlay_placement_counts_cpus_too() -> None:
    nodes = [NodeCapacity("a", 8000, 0, 1, 1), NodeCapacity("b", 1000, 0, 1, 0)]
    plan = place([WaitingTask("t", 500, cpus=1)], nodes, [], data_container_ram=256, strategy="spread", colocate=False)
    assert [p.node for p in plan.placements] == ["b"]
