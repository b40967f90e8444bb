"""Benchmark of one placement round (ccserver.scheduling.placement.place) on simulated clusters.

Run from the repository root:  .venv/bin/python bench/placement.py [--repeat N]

The target (design card): 10,000 waiting tasks onto 100 nodes in well under 1 s, and a cost that
grows about linearly with tasks x log(nodes).  Nodes are large enough for every task to be
placed, so the whole queue is decided (a full cluster would stop the round early and flatter the
figures).  Tasks have mixed RAM; a quarter of them share one of 50 inputs, the rest have one or
two inputs of their own, and one in ten is no_cache.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from ccserver.scheduling.placement import (  # noqa: E402
    BINPACK,
    SPREAD,
    LiveDataContainer,
    NodeCapacity,
    WaitingTask,
    place,
)

DATA_RAM = 512
TARGET_SECONDS = 1.0


def http(url: str, **access: str) -> dict:
    return {"connector_type": "http", "connector_access": {"url": url, **access}}


def make_tasks(count: int, rng: random.Random) -> list[WaitingTask]:
    shared = [http(f"https://data.example/shared/{i}") for i in range(50)]
    tasks = []
    for i in range(count):
        ram = rng.choice((256, 512, 1024, 2048, 4096))
        roll = rng.random()
        if roll < 0.25:
            files: tuple = (rng.choice(shared),)
        else:
            own = rng.randint(1, 2)
            files = tuple(http(f"https://data.example/t{i}/f{j}", method="GET") for j in range(own))
        tasks.append(WaitingTask(f"{i:024x}", ram, files, no_cache=roll > 0.9))
    return tasks


def make_nodes(count: int, tasks: list[WaitingTask]) -> list[NodeCapacity]:
    need = sum(t.container_ram + DATA_RAM for t in tasks)
    per_node = need // count + 64 * 1024  # room for everything, with uneven spread
    return [NodeCapacity(f"node-{i:04d}", per_node, (i * 7919) % 4096) for i in range(count)]


def make_live(nodes: list[NodeCapacity], rng: random.Random) -> list[LiveDataContainer]:
    live = []
    for i in range(200):  # some data containers of earlier rounds, a few serving shared inputs
        url = f"https://data.example/shared/{i}" if i < 10 else f"https://data.example/old/{i}"
        live.append(LiveDataContainer(f"dc{i:022x}", rng.choice(nodes).name, (http(url),)))
    return live


def one_round(n_tasks: int, n_nodes: int, strategy: str, colocate: bool, repeat: int) -> tuple[float, int, int]:
    """Best wall time of ``repeat`` rounds (ms), placed tasks, new data containers."""
    rng = random.Random(n_tasks * 1000 + n_nodes)
    tasks = make_tasks(n_tasks, rng)
    nodes = make_nodes(n_nodes, tasks)
    live = make_live(nodes, rng)
    best = float("inf")
    plan = None
    for _ in range(repeat):
        start = time.perf_counter()
        plan = place(tasks, nodes, live, data_container_ram=DATA_RAM, strategy=strategy, colocate=colocate)
        best = min(best, time.perf_counter() - start)
    assert plan is not None and plan.blocked_task_id is None and not plan.too_large
    return best * 1000, len(plan.placements), len(plan.new_data_containers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds per figure; the best is shown")
    args = parser.parse_args()
    ok = True

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"placement: one round, best of {args.repeat} (ms); {os.cpu_count()} CPUs, load average {load:.2f}")
    print()
    print("target: 10,000 tasks onto 100 nodes")
    for strategy in (SPREAD, BINPACK):
        for colocate in (True, False):
            ms, placed, new_dcs = one_round(10_000, 100, strategy, colocate, args.repeat)
            passed = ms / 1000 < TARGET_SECONDS
            ok &= passed
            net = "colocate (no net)" if colocate else "overlay net"
            print(
                f"  {strategy:7} {net:17} {ms:8.1f} ms  placed {placed}, new data containers {new_dcs}"
                f"  -> {'< 1 s: OK' if passed else '>= 1 s: FAIL'}"
            )

    print()
    print("growth with tasks (100 nodes, spread, colocate)")
    previous = None
    for n_tasks in (1_000, 2_000, 5_000, 10_000, 20_000):
        ms, _, _ = one_round(n_tasks, 100, SPREAD, True, args.repeat)
        ratio = f"x{ms / previous[1]:.2f} for x{n_tasks / previous[0]:.1f} tasks" if previous else ""
        print(f"  {n_tasks:6} tasks {ms:8.1f} ms  {ms * 1000 / n_tasks:6.1f} us/task  {ratio}")
        previous = (n_tasks, ms)

    print()
    print("growth with nodes (10,000 tasks, spread and binpack, colocate)")
    for strategy in (SPREAD, BINPACK):
        previous = None
        for n_nodes in (10, 100, 1_000):
            ms, _, _ = one_round(10_000, n_nodes, strategy, True, args.repeat)
            ratio = f"x{ms / previous[1]:.2f} for x{n_nodes / previous[0]:.0f} nodes" if previous else ""
            print(f"  {strategy:7} {n_nodes:5} nodes {ms:8.1f} ms  {ratio}")
            previous = (n_nodes, ms)

    print()
    print("result:", "OK (< 1 s)" if ok else "FAIL (>= 1 s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
