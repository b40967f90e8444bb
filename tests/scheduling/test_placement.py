"""Every placement rule of cc-protocol.md §8.2, one at a time, then all together as properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccserver.scheduling.placement import (
    BINPACK,
    SPREAD,
    DataSource,
    LiveDataContainer,
    NewDataContainer,
    NodeCapacity,
    Plan,
    WaitingTask,
    input_key,
    place,
)


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"connector_type": "http", "connector_access": {"url": f"https://example.org/{name}", **extra}}


A, B, C, D = spec("a"), spec("b"), spec("c"), spec("d")


def task(task_id: str, ram: int, *files: dict[str, Any], no_cache: bool = False) -> WaitingTask:
    return WaitingTask(task_id, ram, tuple(files), no_cache)


def run(
    tasks: list[WaitingTask],
    nodes: list[NodeCapacity],
    live: list[LiveDataContainer] = (),  # type: ignore[assignment]
    *,
    dc_ram: int = 100,
    strategy: str = SPREAD,
    colocate: bool = False,
) -> Plan:
    return place(tasks, nodes, live, data_container_ram=dc_ram, strategy=strategy, colocate=colocate)


def reserved(plan: Plan) -> dict[str, int]:
    return {n.name: n.reserved_ram for n in plan.nodes}


def app_nodes(plan: Plan) -> dict[str, str]:
    return {p.task_id: p.node for p in plan.placements}


# --- input keys ------------------------------------------------------------------------------


def test_input_key_ignores_key_order_but_not_values() -> None:
    one = {"connector_type": "http", "connector_access": {"url": "u", "method": "GET"}}
    two = {"connector_access": {"method": "GET", "url": "u"}, "connector_type": "http"}
    assert input_key(one) == input_key(two)
    assert input_key(one) != input_key({**one, "connector_type": "ssh"})
    assert input_key(spec("a")) != input_key(spec("a", auth={"username": "x"}))


# --- spread and binpack ----------------------------------------------------------------------


NODES = [NodeCapacity("n1", 1000, 0), NodeCapacity("n2", 1000, 600), NodeCapacity("n3", 1000, 300)]


def test_spread_takes_the_node_with_the_most_free_ram() -> None:
    plan = run([task("t", 300)], NODES, strategy=SPREAD)
    assert app_nodes(plan) == {"t": "n1"}


def test_binpack_takes_the_node_with_the_least_free_ram_that_fits() -> None:
    assert app_nodes(run([task("t", 300)], NODES, strategy=BINPACK)) == {"t": "n2"}  # 400 free
    assert app_nodes(run([task("t", 401)], NODES, strategy=BINPACK)) == {"t": "n3"}  # 700 free
    assert app_nodes(run([task("t", 701)], NODES, strategy=BINPACK)) == {"t": "n1"}
    assert app_nodes(run([task("t", 400)], NODES, strategy=BINPACK)) == {"t": "n2"}  # exact fit


def test_ties_are_broken_by_name_as_in_0_10() -> None:
    nodes = [NodeCapacity("b", 1000), NodeCapacity("a", 1000), NodeCapacity("c", 1000)]
    assert app_nodes(run([task("t", 1)], nodes, strategy=SPREAD)) == {"t": "c"}
    assert app_nodes(run([task("t", 1)], nodes, strategy=BINPACK)) == {"t": "a"}


def test_reserved_ram_is_updated_as_containers_are_placed() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 900)]
    plan = run([task(f"t{i}", 300) for i in range(5)], nodes, strategy=SPREAD)
    # free: n1 1000, n2 900 -> n1 (700) -> n2 (600) -> n1 (400) -> n2 (300) -> n1 (100)
    assert [p.node for p in plan.placements] == ["n1", "n2", "n1", "n2", "n1"]
    assert reserved(plan) == {"n1": 900, "n2": 600}
    assert plan.blocked_task_id is None

    plan = run([task(f"t{i}", 300) for i in range(5)], nodes, strategy=BINPACK)
    assert [p.node for p in plan.placements] == ["n2", "n2", "n2", "n1", "n1"]
    assert reserved(plan) == {"n1": 600, "n2": 900}


def test_nodes_in_the_plan_keep_their_order_and_totals() -> None:
    plan = run([task("t", 100)], NODES)
    assert [(n.name, n.total_ram) for n in plan.nodes] == [("n1", 1000), ("n2", 1000), ("n3", 1000)]
    assert reserved(plan) == {"n1": 100, "n2": 600, "n3": 300}
    assert plan.nodes[0].free_ram == 900


def test_unknown_strategy_and_duplicate_nodes_are_errors() -> None:
    with pytest.raises(ValueError, match="strategy"):
        run([task("t", 1)], NODES, strategy="random")
    with pytest.raises(ValueError, match="unique"):
        run([task("t", 1)], [NodeCapacity("n", 10), NodeCapacity("n", 10)])


# --- largest first ---------------------------------------------------------------------------


def test_new_containers_are_placed_largest_first_spread() -> None:
    nodes = [NodeCapacity("n1", 600), NodeCapacity("n2", 550)]
    plan = run([task("t", 100, A)], nodes, dc_ram=500, strategy=SPREAD)
    # the data container (500) first takes n1, then the application container the roomier n2
    assert plan.new_data_containers == (NewDataContainer("n1", (A,), 500, "t"),)
    assert app_nodes(plan) == {"t": "n2"}


def test_new_containers_are_placed_largest_first_binpack() -> None:
    nodes = [NodeCapacity("n1", 500), NodeCapacity("n2", 1000)]
    plan = run([task("t", 100, A)], nodes, dc_ram=500, strategy=BINPACK)
    assert plan.new_data_containers[0].node == "n1"
    assert app_nodes(plan) == {"t": "n2"}
    # the larger application container goes first when it is the larger one
    plan = run([task("t", 500, A)], nodes, dc_ram=100, strategy=BINPACK)
    assert app_nodes(plan) == {"t": "n1"}
    assert plan.new_data_containers[0].node == "n2"


def test_largest_first_lets_a_task_fit_that_smallest_first_would_not() -> None:
    nodes = [NodeCapacity("big", 500), NodeCapacity("small", 100)]
    plan = run([task("t", 100, A)], nodes, dc_ram=500, strategy=SPREAD)
    assert plan.blocked_task_id is None
    assert app_nodes(plan) == {"t": "small"}
    assert plan.new_data_containers[0].node == "big"


# --- roll back and stop ----------------------------------------------------------------------


def test_a_task_that_does_not_fit_stops_the_round_and_keeps_fifo_order() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    plan = run([task("t1", 600), task("t2", 600), task("t3", 100)], nodes)
    assert app_nodes(plan) == {"t1": "n1"}
    assert plan.blocked_task_id == "t2"
    assert plan.too_large == ()
    assert reserved(plan) == {"n1": 600}  # t3 would have fitted, but is not placed around t2


def test_a_partly_placed_task_is_rolled_back() -> None:
    # t2's data container (largest first) fits on n2, its application container nowhere
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 300)]
    plan = run([task("t1", 900), task("t2", 200, B), task("t3", 1)], nodes, dc_ram=250)
    assert app_nodes(plan) == {"t1": "n1"}
    assert plan.blocked_task_id == "t2"
    assert plan.new_data_containers == ()
    assert reserved(plan) == {"n1": 900, "n2": 0}


def test_a_rolled_back_data_container_is_not_reused_later() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 300)]
    plan = run([task("t1", 900), task("t2", 200, B), task("t3", 1, B)], nodes, dc_ram=250)
    assert plan.blocked_task_id == "t2"
    assert [p.task_id for p in plan.placements] == ["t1"]


def test_colocated_task_that_does_not_fit_stops_the_round() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 1000)]
    plan = run([task("t1", 800, A), task("t2", 850, B), task("t3", 10)], nodes, dc_ram=100, colocate=True)
    # t1 takes n2 (a tie, broken by name); t2 needs 950 on one node: n1; t3 fits n2 (100 free)
    assert app_nodes(plan) == {"t1": "n2", "t2": "n1", "t3": "n2"}
    plan = run([task("t1", 800, A), task("t2", 900, B), task("t3", 10)], nodes, dc_ram=150, colocate=True)
    # t2 needs 1050 > 1000: too large.  t3 then fits.
    assert plan.too_large == ("t2",)
    assert app_nodes(plan) == {"t1": "n2", "t3": "n1"}
    plan = run(
        [task("t1", 800, A), task("t2", 800, B), task("t3", 800, C), task("t4", 10)],
        nodes,
        dc_ram=150,
        colocate=True,
    )
    assert app_nodes(plan) == {"t1": "n2", "t2": "n1"}
    assert plan.blocked_task_id == "t3"
    assert reserved(plan) == {"n1": 950, "n2": 950}


# --- too large -------------------------------------------------------------------------------


def test_too_large_fails_at_once_and_does_not_stop_the_round() -> None:
    nodes = [NodeCapacity("n1", 1000, 900), NodeCapacity("n2", 500)]
    plan = run([task("big", 1001), task("ok", 400), task("big2", 2000)], nodes)
    assert plan.too_large == ("big", "big2")
    assert app_nodes(plan) == {"ok": "n2"}
    assert plan.blocked_task_id is None


def test_too_large_is_judged_on_empty_nodes_not_on_free_ram() -> None:
    nodes = [NodeCapacity("n1", 1000, 1000)]
    plan = run([task("t", 1000)], nodes)
    assert plan.too_large == ()
    assert plan.blocked_task_id == "t"


def test_too_large_with_colocate_counts_application_and_data_container_together() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 1000)]
    tasks = [task("t", 950, A)]
    assert run(tasks, nodes, dc_ram=100, colocate=True).too_large == ("t",)
    plan = run(tasks, nodes, dc_ram=100, colocate=False)  # each fits a node on its own
    assert plan.too_large == ()
    assert {app_nodes(plan)["t"], plan.new_data_containers[0].node} == {"n1", "n2"}


def test_too_large_counts_no_data_container_for_no_cache_or_no_input_files() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    tasks = [task("nc", 950, A, no_cache=True), task("none", 950)]
    plan = run(tasks, nodes, dc_ram=100, colocate=True)
    assert plan.too_large == ()
    assert [p.task_id for p in plan.placements] == ["nc"]
    assert plan.blocked_task_id == "none"


def test_too_large_without_colocate_when_the_data_container_fits_no_node() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    live = [LiveDataContainer("dc", "n1", (A,))]
    plan = run([task("t1", 10, B), task("t2", 10, A), task("t3", 10)], nodes, live, dc_ram=2000)
    assert plan.too_large == ("t1",)  # needs a new data container that can never fit
    assert app_nodes(plan) == {"t2": "n1", "t3": "n1"}  # t2's file is cached already


def test_too_large_tasks_after_the_stop_are_still_reported() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    plan = run([task("t1", 900), task("t2", 900), task("t3", 5000), task("t4", 1)], nodes)
    assert plan.blocked_task_id == "t2"
    assert plan.too_large == ("t3",)
    assert [p.task_id for p in plan.placements] == ["t1"]


def test_no_healthy_node_decides_nothing() -> None:
    plan = run([task("t1", 1), task("t2", 1)], [])
    assert plan == Plan((), (), (), "t1", ())
    assert run([], []).blocked_task_id is None


def test_no_tasks() -> None:
    plan = run([], NODES)
    assert plan.placements == () and plan.blocked_task_id is None
    assert reserved(plan) == {"n1": 0, "n2": 600, "n3": 300}


# --- data container reuse --------------------------------------------------------------------


def test_a_live_data_container_with_an_identical_spec_is_reused() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 1000)]
    live = [LiveDataContainer("dc1", "n2", (C, A))]
    reordered = {"connector_access": {"url": "https://example.org/a"}, "connector_type": "http"}
    plan = run([task("t", 100, reordered)], nodes, live)
    assert plan.new_data_containers == ()
    assert plan.placements[0].data_sources == (DataSource(1, container_id="dc1"),)


def test_remaining_input_files_go_into_one_new_data_container_in_order() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    live = [LiveDataContainer("dc1", "n1", (B,))]
    plan = run([task("t", 100, A, B, C, A, D)], nodes, live)
    assert plan.new_data_containers == (NewDataContainer("n1", (A, C, D), 100, "t"),)
    assert plan.placements[0].data_sources == (
        DataSource(0, new_index=0),
        DataSource(0, container_id="dc1"),
        DataSource(1, new_index=0),
        DataSource(0, new_index=0),  # the same file twice is cached once
        DataSource(2, new_index=0),
    )
    assert reserved(plan) == {"n1": 200}


def test_a_batch_sharing_one_input_gets_one_data_container() -> None:
    nodes = [NodeCapacity(f"n{i}", 20_000) for i in range(4)]
    for colocate in (False, True):
        plan = run([task(f"t{i}", 100, A) for i in range(100)], nodes, colocate=colocate)
        assert len(plan.placements) == 100
        assert plan.new_data_containers == (NewDataContainer(plan.new_data_containers[0].node, (A,), 100, "t0"),)
        assert {p.data_sources for p in plan.placements} == {(DataSource(0, new_index=0),)}


def test_data_containers_of_this_round_are_reused_file_by_file() -> None:
    nodes = [NodeCapacity("n1", 10_000)]
    plan = run([task("t1", 100, A, B), task("t2", 100, B, C), task("t3", 100, C, A)], nodes)
    assert [dc.input_files for dc in plan.new_data_containers] == [(A, B), (C,)]
    sources = [p.data_sources for p in plan.placements]
    assert sources == [
        (DataSource(0, new_index=0), DataSource(1, new_index=0)),
        (DataSource(1, new_index=0), DataSource(0, new_index=1)),
        (DataSource(0, new_index=1), DataSource(0, new_index=0)),
    ]


def test_the_first_of_several_matching_containers_is_reused() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 1000)]
    live = [LiveDataContainer("dc1", "n1", (A,)), LiveDataContainer("dc2", "n2", (A,))]
    plan = run([task("t", 100, A)], nodes, live)
    assert plan.placements[0].data_sources == (DataSource(0, container_id="dc1"),)


def test_no_cache_and_no_input_files_get_no_data_containers() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    live = [LiveDataContainer("dc1", "n1", (A,))]
    plan = run([task("nc", 100, A, B, no_cache=True), task("none", 100)], nodes, live)
    assert [p.data_sources for p in plan.placements] == [(), ()]
    assert plan.new_data_containers == ()
    assert reserved(plan) == {"n1": 200}


def test_a_no_cache_task_does_not_feed_reuse() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    plan = run([task("nc", 100, A, no_cache=True), task("t", 100, A)], nodes)
    assert len(plan.new_data_containers) == 1 and plan.new_data_containers[0].task_id == "t"


def test_data_containers_on_nodes_not_given_are_not_reused() -> None:
    nodes = [NodeCapacity("n1", 1000)]
    live = [LiveDataContainer("dead-one", "dead", (A,))]
    for colocate in (False, True):
        plan = run([task("t", 100, A)], nodes, live, colocate=colocate)
        assert plan.placements[0].data_sources == (DataSource(0, new_index=0),)


# --- colocate --------------------------------------------------------------------------------


def test_without_colocate_the_application_container_goes_anywhere() -> None:
    nodes = [NodeCapacity("n1", 1000, 800), NodeCapacity("n2", 1000)]
    live = [LiveDataContainer("dc1", "n1", (A,))]
    plan = run([task("t", 100, A)], nodes, live, colocate=False)
    assert app_nodes(plan) == {"t": "n2"}
    assert plan.placements[0].data_sources == (DataSource(0, container_id="dc1"),)


def test_with_colocate_a_node_holding_the_files_is_preferred() -> None:
    nodes = [NodeCapacity("n1", 1000, 800), NodeCapacity("n2", 1000)]
    live = [LiveDataContainer("dc1", "n1", (A,))]
    plan = run([task("t", 100, A)], nodes, live, colocate=True, strategy=SPREAD)
    assert app_nodes(plan) == {"t": "n1"}
    assert plan.placements[0].data_sources == (DataSource(0, container_id="dc1"),)
    assert plan.new_data_containers == ()
    assert reserved(plan) == {"n1": 900, "n2": 0}


def test_with_colocate_a_full_node_is_not_used_and_its_containers_not_reused() -> None:
    nodes = [NodeCapacity("n1", 1000, 950), NodeCapacity("n2", 1000)]
    live = [LiveDataContainer("dc1", "n1", (A,))]
    plan = run([task("t", 100, A)], nodes, live, colocate=True)
    assert app_nodes(plan) == {"t": "n2"}
    assert plan.new_data_containers == (NewDataContainer("n2", (A,), 100, "t"),)
    assert plan.placements[0].data_sources == (DataSource(0, new_index=0),)


def test_with_colocate_more_reuse_wins_then_the_strategy() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 1000, 100), NodeCapacity("n3", 1000, 200)]
    live = [LiveDataContainer("dc2", "n2", (A,)), LiveDataContainer("dc3", "n3", (A, B))]
    plan = run([task("t", 100, A, B)], nodes, live, colocate=True, strategy=SPREAD)
    assert app_nodes(plan) == {"t": "n3"}  # both files there, though n1 and n2 are emptier
    assert plan.new_data_containers == ()
    # partial reuse on n2 beats an empty n1; the rest goes into a new container on n2
    plan = run([task("t", 100, A, C)], nodes, live, colocate=True, strategy=SPREAD)
    assert app_nodes(plan) == {"t": "n2"}
    assert plan.new_data_containers == (NewDataContainer("n2", (C,), 100, "t"),)
    assert plan.placements[0].data_sources == (DataSource(0, container_id="dc2"), DataSource(0, new_index=0))
    # among nodes with equal reuse, spread takes the emptiest, binpack the fullest
    live = [LiveDataContainer("x2", "n2", (A,)), LiveDataContainer("x3", "n3", (A,))]
    assert app_nodes(run([task("t", 100, A)], nodes, live, colocate=True, strategy=SPREAD)) == {"t": "n2"}
    assert app_nodes(run([task("t", 100, A)], nodes, live, colocate=True, strategy=BINPACK)) == {"t": "n3"}


def test_with_colocate_full_reuse_needs_room_for_the_application_container_only() -> None:
    nodes = [NodeCapacity("n1", 1000, 850)]
    live = [LiveDataContainer("dc1", "n1", (A,))]
    plan = run([task("t1", 150, A), task("t2", 1, B)], nodes, live, colocate=True)
    assert app_nodes(plan) == {"t1": "n1"}
    assert plan.blocked_task_id == "t2"  # needs 1 + 100 for its own data container


def test_with_colocate_new_data_containers_are_reused_only_on_their_node() -> None:
    nodes = [NodeCapacity("n1", 1000), NodeCapacity("n2", 1000)]
    plan = run([task(f"t{i}", 300, A) for i in range(6)], nodes, colocate=True, strategy=SPREAD)
    # t0 makes a data container on n2 (400, a tie broken by name); t1, t2 reuse it (1000);
    # t3 needs n1 and a new one there
    assert [p.node for p in plan.placements] == ["n2", "n2", "n2", "n1", "n1", "n1"]
    assert [dc.node for dc in plan.new_data_containers] == ["n2", "n1"]
    assert [p.data_sources[0].new_index for p in plan.placements] == [0, 0, 0, 1, 1, 1]
    assert reserved(plan) == {"n1": 1000, "n2": 1000}


# --- properties ------------------------------------------------------------------------------

POOL = [spec(name) for name in "abcde"]


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    n_nodes = draw(st.integers(0, 5))
    nodes = []
    for i in range(n_nodes):
        total = draw(st.integers(0, 4000))
        nodes.append(NodeCapacity(f"n{i}", total, draw(st.integers(0, total))))
    files = st.lists(st.sampled_from(POOL), max_size=4).map(tuple)
    tasks = [
        WaitingTask(f"t{i}", draw(st.integers(1, 3000)), draw(files), draw(st.booleans()))
        for i in range(draw(st.integers(0, 25)))
    ]
    live = []
    if nodes:
        for i in range(draw(st.integers(0, 4))):
            node = draw(st.sampled_from(nodes)).name
            live.append(LiveDataContainer(f"dc{i}", node, draw(st.lists(st.sampled_from(POOL), min_size=1).map(tuple))))
    return {
        "tasks": tasks,
        "nodes": nodes,
        "live": live,
        "dc_ram": draw(st.integers(0, 2000)),
        "strategy": draw(st.sampled_from([SPREAD, BINPACK])),
        "colocate": draw(st.booleans()),
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_placement_properties(s: dict[str, Any]) -> None:
    tasks, nodes, live = s["tasks"], s["nodes"], s["live"]
    plan = place(tasks, nodes, live, data_container_ram=s["dc_ram"], strategy=s["strategy"], colocate=s["colocate"])
    if not nodes:
        assert plan.placements == () and plan.too_large == ()
        return
    by_id = {t.task_id: t for t in tasks}
    live_by_id = {dc.container_id: dc for dc in live}
    healthy = {n.name for n in nodes}

    # nothing over-committed; the plan's reserved RAM is the old plus what was placed
    added = dict.fromkeys(healthy, 0)
    for p in plan.placements:
        added[p.node] += p.container_ram
    for dc in plan.new_data_containers:
        added[dc.node] += dc.container_ram
    for before, after in zip(nodes, plan.nodes, strict=True):
        assert after.reserved_ram == before.reserved_ram + added[before.name]
        assert after.reserved_ram <= after.total_ram

    # FIFO prefix: placed tasks are a prefix of the tasks that are not too large
    too_large = set(plan.too_large)
    candidates = [t.task_id for t in tasks if t.task_id not in too_large]
    placed = [p.task_id for p in plan.placements]
    assert placed == candidates[: len(placed)]
    assert plan.blocked_task_id == (candidates[len(placed)] if len(placed) < len(candidates) else None)
    assert list(plan.too_large) == [t.task_id for t in tasks if t.task_id in too_large]

    # too large exactly when the task cannot fit the largest node even empty (colocate is exact)
    max_total = max(n.total_ram for n in nodes)
    for t in tasks:
        cached = bool(t.input_files) and not t.no_cache
        if s["colocate"]:
            assert (t.task_id in too_large) == (t.container_ram + (s["dc_ram"] if cached else 0) > max_total)
        elif t.container_ram > max_total:
            assert t.task_id in too_large

    # every input file is served by a container caching exactly that file
    referenced = set()
    for p in plan.placements:
        t = by_id[p.task_id]
        if not t.input_files or t.no_cache:
            assert p.data_sources == ()
            continue
        assert len(p.data_sources) == len(t.input_files)
        for f, source in zip(t.input_files, p.data_sources, strict=True):
            assert (source.container_id is None) != (source.new_index is None)
            if source.is_new:
                referenced.add(source.new_index)
                holder = plan.new_data_containers[source.new_index]
                dc_node, cached_files = holder.node, holder.input_files
            else:
                holder_live = live_by_id[source.container_id]
                dc_node, cached_files = holder_live.node, holder_live.input_files
            assert input_key(cached_files[source.file_index]) == input_key(f)
            assert dc_node in healthy
            if s["colocate"]:
                assert dc_node == p.node

    # every new data container is used, caches each file once, and one task made it
    assert referenced == set(range(len(plan.new_data_containers)))
    for dc in plan.new_data_containers:
        keys = [input_key(f) for f in dc.input_files]
        assert len(keys) == len(set(keys))
        assert dc.container_ram == s["dc_ram"]

    # without colocate no file is cached twice when it could have been reused
    if not s["colocate"]:
        seen = {input_key(f) for dc in live if dc.node in healthy for f in dc.input_files}
        for dc in plan.new_data_containers:
            keys = {input_key(f) for f in dc.input_files}
            assert not keys & seen
            seen |= keys


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_placement_is_deterministic(s: dict[str, Any]) -> None:
    args = (s["tasks"], s["nodes"], s["live"])
    kwargs = {"data_container_ram": s["dc_ram"], "strategy": s["strategy"], "colocate": s["colocate"]}
    assert place(*args, **kwargs) == place(*args, **kwargs)
