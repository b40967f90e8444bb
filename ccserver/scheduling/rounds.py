"""The inputs of one placement round, read from the store and the cluster, and its decisions
turned back into the documents' terms.  The decision itself is :func:`placement.place`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from twisted.internet.defer import Deferred

from ccserver import states
from ccserver.cluster.service import Cluster
from ccserver.config import Config
from ccserver.kinds import DATA, DEFAULT_KINDS, Kinds
from ccserver.scheduling import placement
from ccserver.storage.base import Store
from ccserver.tes import states as tes_states
from ccserver.vault import digests as digests_of

#: the fields of a QUEUED TES task that a round reads
#: ``engine_only``: see :func:`ccserver.tes.submission.needs_engine`
TES_PLACEMENT_FIELDS = {"created_at": 1, "ram_mb": 1, "cpus": 1, "engine_only": 1}
#: the (caches, runs TES tasks, is a Docker engine) of a node that does all
ALL_TRAITS = (True, True, True)


def engine_only(task: dict[str, Any]) -> bool:
    """The task runs on Docker engines only (one stored before the flag existed too)."""
    return bool(task.get("engine_only", True))


@dataclass(frozen=True)
class NewData:
    id: ObjectId
    node: str
    #: the digests of the input specs it holds (see :func:`ccserver.vault.digests`)
    input_files: list[Any]


@dataclass
class Placed:
    task: dict[str, Any]
    node: str
    data_container_ids: list[ObjectId] = field(default_factory=list)
    new_data_containers: list[NewData] = field(default_factory=list)


@dataclass
class Decisions:
    too_large: list[tuple[ObjectId, str]] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)
    #: TES tasks (their documents) placed on a node, in FIFO order
    tes_placed: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    #: TES tasks that fit no node even when empty, with the reason
    tes_too_large: list[tuple[ObjectId, str]] = field(default_factory=list)


#: runs a pure function somewhere (a thread pool) and fires with its result
Runner = Callable[..., "Deferred[Any]"]


async def decide(
    config: Config, store: Store, cluster: Cluster, run: Runner | None = None, kinds: Kinds = DEFAULT_KINDS
) -> Decisions:
    """Read the round's inputs, then decide, with ``run`` (a thread pool's ``run``) when given:
    with thousands of waiting tasks, building the inputs and placing them takes long enough to
    hold up every other answer if done on the reactor thread.

    At most ``server.scheduling_round_tasks`` waiting tasks are read, the oldest first, so a
    round's cost is bounded however long the queue is and the order stays first in, first out.
    The RAM of the live containers of every kind in ``kinds`` is reserved on their nodes."""
    healthy = cluster.capacities()
    if not healthy:
        return Decisions()
    window = config.server.scheduling_round_tasks
    tasks = await store.find("tasks", {"state": states.WAITING}, sort=[("created_at", 1)], limit=window)
    # only what placement needs: a round is asked for at every task's end, and the whole
    # queue's documents (executors, inputs, logs) would be read each time; the runner reads
    # the whole document of each task it claims
    tes_tasks = await store.find(
        tes_states.COLLECTION,
        {"state": tes_states.QUEUED},
        projection=TES_PLACEMENT_FIELDS,
        sort=[("created_at", 1)],
        limit=window,
    )
    if not tasks and not tes_tasks:
        return Decisions()
    live = {"state": {"$in": list(states.LIVE_STATES)}}
    containers = []
    for collection in kinds.collections():
        found = await store.find(collection, live, projection={"cluster_node": 1, "container_ram": 1})
        if kinds[collection].task_field is not None:  # a task's own program: it counts CPUs
            for c in found:
                c["cpus"] = config.tes.legacy_container_cpus
        containers += found
    # the attempts under way hold their RAM and CPUs on their node
    for t in await store.find(
        tes_states.COLLECTION,
        {"state": {"$in": list(tes_states.LIVE)}},
        projection={"node": 1, "ram_mb": 1, "cpus": 1},
    ):
        if t.get("node"):
            containers.append(
                {"cluster_node": t["node"], "container_ram": t.get("ram_mb", 0), "cpus": t.get("cpus", 0)}
            )
    dcs = await store.find(
        DATA.documents, live, projection={"cluster_node": 1, "input_files": 1, "input_file_digests": 1}
    )
    cpus = cluster.cpu_totals()
    traits = cluster.traits()
    if run is None:
        return decide_now(config, healthy, tasks, containers, dcs, tes_tasks, cpus, traits)
    return await run(decide_now, config, healthy, tasks, containers, dcs, tes_tasks, cpus, traits)


def decide_now(
    config: Config,
    healthy: list[tuple[str, int]],
    tasks: list[dict[str, Any]],
    containers: list[dict[str, Any]],
    dcs: list[dict[str, Any]],
    tes_tasks: list[dict[str, Any]] | None = None,
    cpus: dict[str, int | None] | None = None,
    traits: dict[str, tuple[bool, bool, bool]] | None = None,
) -> Decisions:
    """The pure part of a round: no store, no Docker, no reactor (it may run in a thread).

    ``tes_tasks`` (QUEUED TES task documents) join the 0.10 waiting tasks in one FIFO order
    by ``created_at``, as tasks without input files that need ``ram_mb`` and ``cpus``;
    ``containers`` are the live reservations (``cluster_node``, ``container_ram``, ``cpus``);
    ``cpus`` the nodes' CPU counts; ``traits`` (caches, runs TES tasks, is a Docker
    engine) of the nodes that do not do all three (Kubernetes clusters; see :class:`placement.NodeCapacity`)."""
    reserved: dict[str, int] = {}
    reserved_cpus: dict[str, float] = {}
    for c in containers:
        node = c.get("cluster_node", "")
        reserved[node] = reserved.get(node, 0) + c.get("container_ram", 0)
        reserved_cpus[node] = reserved_cpus.get(node, 0.0) + float(c.get("cpus", 0) or 0)
    cpus = cpus or {}
    traits = traits or {}
    by_id = {str(t["_id"]): t for t in tasks}
    tes_by_id = {str(t["_id"]): t for t in tes_tasks or ()}
    # with tes.legacy_cpu_placement a 0.10 task needs the CPUs its container counts as: a node
    # runs at most its CPUs / legacy_container_cpus of them at once
    legacy_cpus = config.tes.legacy_container_cpus if config.tes.legacy_cpu_placement else 0.0
    waiting = [
        (
            t.get("created_at", 0.0),
            placement.WaitingTask(
                task_id=str(t["_id"]),
                container_ram=int(t["application_container_description"]["container_ram"]),
                # identical specs are compared by keyed digests: the stored specs are masked
                input_files=tuple(digests_of(t)),
                no_cache=bool(t.get("no_cache")),
                cpus=legacy_cpus,
            ),
        )
        for t in tasks
    ] + [
        (
            t.get("created_at", 0.0),
            placement.WaitingTask(
                task_id=str(t["_id"]),
                container_ram=int(t["ram_mb"]),
                cpus=float(t["cpus"]),
                tes=True,
                engine_only=engine_only(t),
            ),
        )
        for t in tes_tasks or ()
    ]
    waiting.sort(key=lambda pair: pair[0])  # stable: equal times keep the 0.10 tasks first
    plan = placement.place(
        [w for _, w in waiting],
        [
            placement.NodeCapacity(
                name,
                total,
                reserved.get(name, 0),
                cpus.get(name),
                reserved_cpus.get(name, 0.0),
                *traits.get(name, ALL_TRAITS),
            )
            for name, total in healthy
        ],
        [placement.LiveDataContainer(str(d["_id"]), d["cluster_node"], tuple(digests_of(d))) for d in dcs],
        data_container_ram=config.defaults.data_container.container_ram,
        strategy=config.defaults.container_allocation,
        colocate=config.docker.net is None,
    )
    largest = max(total for _, total in healthy)
    decisions = Decisions()
    for task_id in plan.too_large:
        if task_id in tes_by_id:
            t = tes_by_id[task_id]
            only_engines = engine_only(t)
            runs_tes = [
                (name, total)
                for name, total in healthy
                if traits.get(name, ALL_TRAITS)[1] and (traits.get(name, ALL_TRAITS)[2] or not only_engines)
            ]
            tes_largest = max((total for _, total in runs_tes), default=0)
            known = [c for c in (cpus.get(name) for name, _ in runs_tes) if c is not None]
            decisions.tes_too_large.append(
                (
                    ObjectId(task_id),
                    f"Task too large for the cluster: it needs {t['ram_mb']} MB of RAM and {t['cpus']:g} CPUs; "
                    f"no node has that much even when empty (largest node: {tes_largest} MB"
                    + (f", {max(known)} CPUs)." if known else ")."),
                )
            )
            continue
        ram = int(by_id[task_id]["application_container_description"]["container_ram"])
        known_cpus = [c for c in (cpus.get(name) for name, _ in healthy) if c is not None]
        if legacy_cpus and ram <= largest and known_cpus and legacy_cpus > max(known_cpus):
            why = (
                f"Task too large for the cluster: it needs {legacy_cpus:g} CPUs (tes.legacy_container_cpus); "
                f"no node has that many (largest node: {max(known_cpus)} CPUs)."
            )
        else:
            why = (
                f"Task too large for the cluster: no node has enough RAM even when empty (largest node: {largest} MB)."
            )
        decisions.too_large.append((ObjectId(task_id), why))
    new_ids = [ObjectId() for _ in plan.new_data_containers]
    owned: dict[str, list[NewData]] = {}
    for index, new in enumerate(plan.new_data_containers):
        owned.setdefault(new.task_id, []).append(NewData(new_ids[index], new.node, list(new.input_files)))
    for p in plan.placements:
        if p.task_id in tes_by_id:
            decisions.tes_placed.append((tes_by_id[p.task_id], p.node))
            continue
        placed = Placed(task=by_id[p.task_id], node=p.node)
        for source in p.data_sources:
            if source.new_index is not None:
                placed.data_container_ids.append(new_ids[source.new_index])
            else:
                placed.data_container_ids.append(ObjectId(source.container_id))
        placed.new_data_containers = owned.get(p.task_id, [])
        decisions.placed.append(placed)
    return decisions
