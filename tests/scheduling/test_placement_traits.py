"""Placement on nodes that do not cache or do not run TES tasks (Kubernetes clusters): the pure part."""

from __future__ import annotations

import pytest

from ccserver.scheduling.placement import LiveDataContainer, NodeCapacity, Plan, WaitingTask, place


def _place(
    tasks: list[WaitingTask],
    nodes: list[NodeCapacity],
    strategy: str = "spread",
    colocate: bool = True,
    live: list[LiveDataContainer] | None = None,
) -> Plan:
    return place(tasks, nodes, live or [], data_container_ram=256, strategy=strategy, colocate=colocate)


def cluster(name: str, ram: int, reserved: int = 0) -> NodeCapacity:
    return NodeCapacity(name, ram, reserved, 8, 0, caches=False, runs_tes=False)


@pytest.mark.parametrize("colocate", [True, False])
def test_a_task_on_a_node_that_does_not_cache_gets_no_data_container(colocate: bool) -> None:
    plan = _place([WaitingTask("t", 1000, ("a", "b"))], [cluster("k", 8000)], colocate=colocate)
    assert [(p.task_id, p.node, p.data_sources) for p in plan.placements] == [("t", "k", ())]
    assert plan.new_data_containers == ()
    assert {n.name: n.reserved_ram for n in plan.nodes} == {"k": 1000}  # no data container's RAM


@pytest.mark.parametrize("colocate", [True, False])
def test_spread_goes_to_the_cluster_when_it_has_more_free_ram(colocate: bool) -> None:
    nodes = [NodeCapacity("docker", 4000), cluster("k", 8000)]
    plan = _place([WaitingTask("t1", 1000, ("a",)), WaitingTask("t2", 1000, ("b",))], nodes, colocate=colocate)
    assert [(p.task_id, p.node) for p in plan.placements] == [("t1", "k"), ("t2", "k")]
    # then the Docker node (4000 free) against the cluster (6000 free): still the cluster
    nodes = [NodeCapacity("docker", 4000), cluster("k", 8000, reserved=5000)]
    plan = _place([WaitingTask("t1", 1000, ("a",)), WaitingTask("t2", 1000)], nodes, colocate=colocate)
    assert [(p.task_id, p.node) for p in plan.placements] == [("t1", "docker"), ("t2", "k")]
    assert plan.placements[0].data_sources and plan.new_data_containers[0].node == "docker"


def test_binpack_takes_the_fuller_node_among_docker_and_cluster() -> None:
    nodes = [NodeCapacity("docker", 4000), cluster("k", 8000, reserved=6000)]
    plan = _place([WaitingTask("t", 1000, ("a",))], nodes, strategy="binpack")
    assert [(p.node, p.data_sources) for p in plan.placements] == [("k", ())]


def test_a_file_cached_on_a_docker_node_keeps_the_task_there() -> None:
    nodes = [NodeCapacity("docker", 2000), cluster("k", 64000)]
    live = [LiveDataContainer("dc1", "docker", ("a",))]
    plan = _place([WaitingTask("t", 1000, ("a",))], nodes, live=live)
    assert [(p.node, p.data_sources[0].container_id) for p in plan.placements] == [("docker", "dc1")]


def test_data_containers_never_go_to_a_cluster_even_with_an_overlay_network() -> None:
    # the app fits only the Docker node; its data container fits only... the Docker node too
    nodes = [NodeCapacity("docker", 1300), cluster("k", 900)]
    plan = _place([WaitingTask("t", 1000, ("a",))], nodes, colocate=False)
    assert [(p.node, len(p.data_sources)) for p in plan.placements] == [("docker", 1)]
    assert [d.node for d in plan.new_data_containers] == ["docker"]


def test_tes_tasks_never_go_to_a_node_that_does_not_run_them() -> None:
    nodes = [NodeCapacity("docker", 2000, 0, 4, 0), cluster("k", 64000)]
    plan = _place([WaitingTask("tes", 1000, cpus=1, tes=True), WaitingTask("legacy", 1000)], nodes)
    assert [(p.task_id, p.node) for p in plan.placements] == [("tes", "docker"), ("legacy", "k")]


def test_too_large_counts_only_the_nodes_a_task_may_use() -> None:
    nodes = [NodeCapacity("docker", 2000, 0, 2, 0), cluster("k", 64000)]
    plan = _place([WaitingTask("tes", 4000, cpus=1, tes=True), WaitingTask("tes-cpus", 100, cpus=4, tes=True)], nodes)
    assert plan.too_large == ("tes", "tes-cpus")  # the cluster's RAM and CPUs do not count for TES
    # a 0.10 task with inputs that only the cluster holds (no data container there) fits
    plan = _place([WaitingTask("big", 3000, ("a",)), WaitingTask("huge", 65000, ("a",))], nodes)
    assert [(p.task_id, p.node) for p in plan.placements] == [("big", "k")]
    assert plan.too_large == ("huge",)


def test_a_tes_task_with_only_clusters_healthy_waits_and_holds_up_nobody() -> None:
    plan = _place([WaitingTask("tes", 100, cpus=1, tes=True), WaitingTask("legacy", 100, ("a",))], [cluster("k", 8000)])
    assert plan.too_large == ()
    assert [(p.task_id, p.node) for p in plan.placements] == [("legacy", "k")]
    assert plan.blocked_task_id is None


def test_a_full_cluster_blocks_the_queue_like_a_full_node() -> None:
    plan = _place([WaitingTask("a", 5000), WaitingTask("b", 5000), WaitingTask("c", 10)], [cluster("k", 8000)])
    assert [p.task_id for p in plan.placements] == ["a"]
    assert plan.blocked_task_id == "b"
    assert [(n.name, n.caches, n.runs_tes) for n in plan.nodes] == [("k", False, False)]


def tes_cluster(name: str, ram: int, reserved: int = 0) -> NodeCapacity:
    """A cluster with a staging image: it runs TES tasks, but not those only engines run."""
    return NodeCapacity(name, ram, reserved, 8, 0, caches=False, runs_tes=True, engine=False)


def test_a_tes_task_goes_to_a_cluster_that_runs_them_but_engine_only_ones_stay_on_docker() -> None:
    nodes = [NodeCapacity("docker", 2000, 0, 4, 0), tes_cluster("k", 64000)]
    tasks = [
        WaitingTask("plain", 1000, cpus=1, tes=True),
        WaitingTask("stdout", 1000, cpus=1, tes=True, engine_only=True),
    ]
    plan = _place(tasks, nodes)  # spread: the cluster has more free RAM
    assert [(p.task_id, p.node) for p in plan.placements] == [("plain", "k"), ("stdout", "docker")]


def test_an_engine_only_tes_task_is_too_large_by_the_engines_alone() -> None:
    nodes = [NodeCapacity("docker", 2000, 0, 2, 0), tes_cluster("k", 64000)]
    plan = _place(
        [WaitingTask("big", 4000, cpus=1, tes=True, engine_only=True), WaitingTask("fits", 4000, cpus=1, tes=True)],
        nodes,
    )
    assert plan.too_large == ("big",)
    assert [(p.task_id, p.node) for p in plan.placements] == [("fits", "k")]


def test_an_engine_only_tes_task_with_only_a_cluster_healthy_waits() -> None:
    tasks = [WaitingTask("stdin", 100, cpus=1, tes=True, engine_only=True), WaitingTask("plain", 100, cpus=1, tes=True)]
    plan = _place(tasks, [tes_cluster("k", 8000)])
    assert plan.too_large == () and plan.blocked_task_id is None
    assert [(p.task_id, p.node) for p in plan.placements] == [("plain", "k")]


def test_engine_only_is_what_a_cluster_pod_cannot_do() -> None:
    from ccserver.scheduling.rounds import engine_only
    from ccserver.tes.submission import needs_engine

    plain = {"image": "i", "command": ["true"]}
    assert not needs_engine([plain, {**plain, "env": {"A": "1"}, "workdir": "/w"}])
    for key, value in (("stdin", "/in"), ("stdout", "/out"), ("stderr", "/err"), ("ignore_error", True)):
        assert needs_engine([plain, {**plain, key: value}]), key
    assert not needs_engine([{**plain, "ignore_error": False, "stdout": ""}])
    # a task stored before the flag: Docker engines only, as it was
    assert engine_only({}) and not engine_only({"engine_only": False}) and engine_only({"engine_only": True})
