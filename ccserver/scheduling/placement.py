"""Placement: which waiting tasks run in this round, on which node, served by which data containers.

This is a pure function of its inputs (no Docker, no database, no reactor), so that every rule
of cc-protocol.md §8.2 can be tested exhaustively and the whole round can be benchmarked on
simulated clusters (``bench/placement.py``).  The scheduler service applies the resulting
:class:`Plan`: it creates the documents, reserves the RAM and talks to Docker.

The rules, in the order the code applies them:

* Tasks are taken first-in first-out, in the order given (the caller sorts by ``created_at``).
* A task whose containers cannot fit the cluster even when it is empty is *too large*: it fails
  at once.  With ``colocate`` (no overlay network) its application container and a data
  container must fit together on one node; without, each must fit some node on its own.
  Too-large tasks are reported even past the point where the round stopped, so that their users
  learn at once.
* Unless ``no_cache``, each input file is served by a live data container that already caches an
  identical input file spec (compared by :func:`input_key`); data containers created earlier in
  the same round count as live, so a batch sharing one input gets one data container.  The
  remaining input files of the task go into ONE new data container.
* With ``colocate``, an application container reaches its data containers by their IP on one
  engine's local bridge, so they must share its node: only data containers on the chosen node
  are reused.  The node that lets the task reuse the most input files is preferred (fewer
  downloads, and with every file cached no new data container at all); among equals, and when
  no node helps, the strategy decides.
* New containers are placed largest first.  ``spread`` takes the node with the most free RAM,
  ``binpack`` the node with the least free RAM that still fits (ties broken by name as in 0.10).
* If any container of a task does not fit, that task's reservations are rolled back and the
  round stops there: later tasks are not placed around it, so the queue keeps its order and a
  large task is not starved by a stream of small ones.

* CPU: a task that needs CPUs (``cpus``, TES tasks) goes only to a node whose free CPUs
  (``total_cpus - reserved_cpus``) cover them; a node whose CPU count is unknown
  (``total_cpus`` ``None``) is not limited.  A task needing more CPUs than the largest node
  has is too large.  0.10 tasks need no CPUs here (``cpus`` 0): they are placed by RAM only,
  as in 0.10, and count in ``reserved_cpus`` through their callers.  With a CPU need, the
  strategy's choice among the nodes that fit the RAM is the first that also fits the CPUs
  (a scan from the strategy's end of the sorted list).

* Nodes that do not cache, or do not run TES tasks (a Kubernetes cluster, see
  docs/kubernetes.rst): ``NodeCapacity.caches`` False means no data container is ever placed
  there, and a task placed there runs with ``no_cache`` semantics (no data sources: its
  application container fetches its inputs itself); ``runs_tes`` False keeps TES tasks
  (``WaitingTask.tes``) off it; ``engine`` False (a cluster) keeps off it the TES tasks that
  need a Docker engine (``WaitingTask.engine_only``: stdin/stdout/stderr files,
  ``ignore_error``).  A task is too large only when it fits none of the nodes it
  may use (a task with input files fits a non-caching node by its own RAM alone).  A task
  with input files that could go either way goes where the strategy says, comparing the
  caching node it would use with the best non-caching one, unless a caching node already
  holds one of its files (reuse comes first, as above).  A TES task with no healthy node
  that runs TES tasks keeps waiting without holding up the queue (it is not too large: such
  a node may come back).

Cost: about O(tasks x log(nodes)) plus the input files.  Free RAM is kept in one sorted list,
searched with :mod:`bisect` (spread reads its end, binpack bisects to the smallest fit); moving a
node after a reservation is a delete and an insort in that list (a memmove of at most a few
thousand pointers).  Reusable data containers are indexed by input key, so a lookup does not
scan containers.  With ``colocate`` the nodes considered for reuse are only those holding one of
the task's input files.
"""

from __future__ import annotations

import json
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any

SPREAD = "spread"
BINPACK = "binpack"
STRATEGIES = (SPREAD, BINPACK)


# one encoder for all keys: json.dumps with options would build a new one per call
_KEY_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def input_key(spec: Any) -> str:
    """A canonical text for an input file spec: equal specs give equal keys whatever their key order.

    Used to decide that two tasks ask for the identical file, so one data container can serve both.
    """
    return _KEY_ENCODER.encode(spec)


@dataclass(frozen=True)
class WaitingTask:
    """A waiting task as placement sees it; ``input_files`` are the task's specs, in order."""

    task_id: str
    container_ram: int
    input_files: tuple[Any, ...] = ()
    no_cache: bool = False
    #: CPU cores the task reserves on its node (0: none, as for 0.10 tasks)
    cpus: float = 0.0
    #: a TES task: placed only on nodes that run them (``NodeCapacity.runs_tes``)
    tes: bool = False
    #: a TES task that needs what only a Docker engine does (``NodeCapacity.engine``):
    #: stdin, stdout or stderr files, or an executor with ``ignore_error``
    engine_only: bool = False


@dataclass(frozen=True)
class NodeCapacity:
    """A healthy node; ``reserved_ram`` sums the RAM of the live containers already placed there."""

    name: str
    total_ram: int
    reserved_ram: int = 0
    #: None: not known (the node's CPUs do not limit placement)
    total_cpus: float | None = None
    reserved_cpus: float = 0.0
    #: data containers may be placed here (False: tasks placed here run with no_cache semantics)
    caches: bool = True
    #: TES tasks may be placed here
    runs_tes: bool = True
    #: a Docker engine, which runs every TES task; False (a cluster): only TES tasks
    #: without ``WaitingTask.engine_only``
    engine: bool = True

    @property
    def free_ram(self) -> int:
        return self.total_ram - self.reserved_ram


@dataclass(frozen=True)
class LiveDataContainer:
    """A live (created, waiting or processing) data container that may serve more tasks."""

    container_id: str
    node: str
    input_files: tuple[Any, ...]


@dataclass(frozen=True)
class DataSource:
    """The data container that serves one input file of a placed task.

    Exactly one of ``container_id`` (an existing container, reused) and ``new_index`` (an index
    into :attr:`Plan.new_data_containers`) is set.  ``file_index`` is the position of the file
    in that container's ``input_files``; it selects the ``input_file_key`` of the URL the
    application container is given.
    """

    file_index: int
    container_id: str | None = None
    new_index: int | None = None

    @property
    def is_new(self) -> bool:
        return self.new_index is not None


@dataclass(frozen=True)
class NewDataContainer:
    """A data container to create; ``task_id`` is the task whose files it first caches (its owner)."""

    node: str
    input_files: tuple[Any, ...]
    container_ram: int
    task_id: str


@dataclass(frozen=True)
class TaskPlacement:
    """Where a task's application container goes and which data container serves each input file.

    ``data_sources`` has one entry per input file, or none with ``no_cache`` or no input files.
    """

    task_id: str
    node: str
    container_ram: int
    data_sources: tuple[DataSource, ...]


@dataclass(frozen=True)
class Plan:
    """The decisions of one round.

    ``placements`` are in FIFO order.  ``blocked_task_id`` is the first task that did not fit
    (the round stopped there; it and all later tasks stay waiting), or ``None`` when every task
    that is not too large was placed.  ``nodes`` are the inputs with ``reserved_ram`` raised by
    everything placed.
    """

    placements: tuple[TaskPlacement, ...]
    new_data_containers: tuple[NewDataContainer, ...]
    too_large: tuple[str, ...]
    blocked_task_id: str | None
    nodes: tuple[NodeCapacity, ...]


#: the names a choice is limited to (None: every node)
_Allowed = AbstractSet[str] | None


class _FreeRam:
    """Free RAM per node, kept sorted by (free, name) so each choice is a bisect, not a scan."""

    __slots__ = ("free", "_sorted", "cpus", "caches", "runs_tes", "engine_tes")

    def __init__(self, nodes: Sequence[NodeCapacity]) -> None:
        self.free = {n.name: n.total_ram - n.reserved_ram for n in nodes}
        if len(self.free) != len(nodes):
            raise ValueError("node names must be unique")
        self._sorted = sorted((free, name) for name, free in self.free.items())
        #: free CPUs of the nodes whose CPU count is known
        self.cpus = {n.name: n.total_cpus - n.reserved_cpus for n in nodes if n.total_cpus is not None}
        self.caches = {n.name for n in nodes if n.caches}
        self.runs_tes = {n.name for n in nodes if n.runs_tes}
        self.engine_tes = {n.name for n in nodes if n.runs_tes and n.engine}

    def allowed_for(self, task: WaitingTask) -> set[str] | None:
        """The nodes ``task`` may use (None: every node)."""
        if not task.tes:
            return None
        return self.engine_tes if task.engine_only else self.runs_tes

    def fits_cpus(self, name: str, cpus: float) -> bool:
        return cpus <= 0 or name not in self.cpus or self.cpus[name] >= cpus - 1e-9

    def pick(self, need: int, spread: bool, cpus: float = 0.0, allowed: _Allowed = None) -> str | None:
        """The strategy's node among those with ``need`` MB free (and ``cpus``), limited to
        the names in ``allowed`` when given."""
        entries = self._sorted
        if allowed is None and cpus <= 0:
            if spread:
                free, name = entries[-1]
                return name if free >= need else None
            i = bisect_left(entries, (need,))  # (need,) sorts before every (need, name)
            return entries[i][1] if i < len(entries) else None
        if spread:
            for free, name in reversed(entries):
                if free < need:
                    return None
                if (allowed is None or name in allowed) and self.fits_cpus(name, cpus):
                    return name
            return None
        for _, name in entries[bisect_left(entries, (need,)) :]:
            if (allowed is None or name in allowed) and self.fits_cpus(name, cpus):
                return name
        return None

    def take(self, name: str, ram: int, cpus: float = 0.0) -> None:
        """Reserve ``ram`` (and ``cpus``) on ``name`` (a negative amount gives it back)."""
        if cpus and name in self.cpus:
            self.cpus[name] -= cpus
        old = self.free[name]
        entries = self._sorted
        del entries[bisect_left(entries, (old, name))]
        new = old - ram
        self.free[name] = new
        insort(entries, (new, name))


# key -> node -> the first data container on that node that caches the file (insertion ordered)
_Index = dict[str, dict[str, DataSource]]


def _index_live(data_containers: Iterable[LiveDataContainer], healthy: dict[str, int]) -> _Index:
    index: _Index = {}
    for dc in data_containers:
        if dc.node not in healthy:
            continue  # on a dead or unknown node: an application container could not reach it
        for pos, spec in enumerate(dc.input_files):
            index.setdefault(input_key(spec), {}).setdefault(dc.node, DataSource(pos, container_id=dc.container_id))
    return index


def place(
    tasks: Iterable[WaitingTask],
    nodes: Sequence[NodeCapacity],
    data_containers: Iterable[LiveDataContainer],
    *,
    data_container_ram: int,
    strategy: str,
    colocate: bool,
) -> Plan:
    """Decide one scheduling round (see the module docstring for the rules).

    ``tasks`` must be in FIFO order; ``nodes`` are the healthy nodes only.  With no healthy node
    nothing is decided (every task keeps waiting; none is called too large for an absent cluster).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown container allocation strategy {strategy!r}")
    tasks = list(tasks)
    if not nodes:
        return Plan((), (), (), tasks[0].task_id if tasks else None, ())
    spread = strategy == SPREAD
    free = _FreeRam(nodes)
    caching = {n.name: n.total_ram for n in nodes if n.caches}
    index = _index_live(data_containers, caching)
    everywhere = all(n.caches and n.runs_tes and n.engine for n in nodes)
    # the largest RAM and CPU count of the nodes a task may use, by (its group, caches: None
    # for both); groups: 0.10 tasks, TES tasks, TES tasks for engines only
    largest = {
        (group, caches): _largest([n for n in nodes if _serves(n, group) and caches in (None, n.caches)])
        for group in (_ANY, _TES, _ENGINE_TES)
        for caches in (None, True, False)
    }
    dc_ram = data_container_ram

    placements: list[TaskPlacement] = []
    new_dcs: list[NewDataContainer] = []
    too_large: list[str] = []
    blocked: str | None = None

    for task in tasks:
        app_ram = task.container_ram
        cached = bool(task.input_files) and not task.no_cache
        keys = [input_key(spec) for spec in task.input_files] if cached else []
        if task.tes and not free.allowed_for(task):
            continue  # no node that runs this TES task is healthy: it waits, holding up nobody
        group = _group(task)
        max_ram, max_cpus = largest[(group, None)]
        if task.cpus > max_cpus + 1e-9:
            too_large.append(task.task_id)
            continue
        if not cached:
            fits = app_ram <= max_ram
        else:
            plain_ram, _ = largest[(group, False)]
            cache_ram, _ = largest[(group, True)]
            if colocate:
                fits = app_ram + dc_ram <= cache_ram
            else:
                fits = app_ram <= cache_ram and (dc_ram <= cache_ram or all(k in index for k in keys))
            fits = fits or app_ram <= plain_ram
        if not fits:
            too_large.append(task.task_id)
            continue
        if blocked is not None:
            continue  # the round has stopped; only too-large tasks are still decided

        allowed = None if everywhere else free.allowed_for(task)
        if everywhere or not keys:
            decided = _decide(task, keys, index, free, spread, dc_ram, colocate, allowed)
        else:
            decided = _either(task, keys, index, free, spread, dc_ram, colocate)
        if decided is None:
            blocked = task.task_id
            continue
        app_node, sources, dc_node = decided
        if dc_node is not None:
            first: dict[str, int] = {}  # key -> index of its first file in the task, in task order
            for i, source in enumerate(sources):
                if source is None:
                    first.setdefault(keys[i], i)
            new_index = len(new_dcs)
            new_dcs.append(
                NewDataContainer(dc_node, tuple(task.input_files[i] for i in first.values()), dc_ram, task.task_id)
            )
            position = {key: pos for pos, key in enumerate(first)}
            for i, source in enumerate(sources):
                if source is None:
                    sources[i] = fresh = DataSource(position[keys[i]], new_index=new_index)
                    index.setdefault(keys[i], {}).setdefault(dc_node, fresh)
        # ignore: the loop above replaced every None in sources
        placements.append(TaskPlacement(task.task_id, app_node, app_ram, tuple(sources)))  # type: ignore[arg-type]

    after = tuple(
        replace(
            n,
            reserved_ram=n.total_ram - free.free[n.name],
            reserved_cpus=n.total_cpus - free.cpus[n.name] if n.total_cpus is not None else n.reserved_cpus,
        )
        for n in nodes
    )
    return Plan(tuple(placements), tuple(new_dcs), tuple(too_large), blocked, after)


_ANY, _TES, _ENGINE_TES = 0, 1, 2


def _group(task: WaitingTask) -> int:
    if not task.tes:
        return _ANY
    return _ENGINE_TES if task.engine_only else _TES


def _serves(node: NodeCapacity, group: int) -> bool:
    return group == _ANY or (node.runs_tes and (group == _TES or node.engine))


def _largest(nodes: Sequence[NodeCapacity]) -> tuple[float, float]:
    """The largest RAM and CPU count among ``nodes`` (a node whose CPUs are unknown takes any
    task; no node: nothing fits)."""
    if not nodes:
        return -1, -1
    known = [n.total_cpus for n in nodes if n.total_cpus is not None]
    return max(n.total_ram for n in nodes), max(known) if len(known) == len(nodes) else float("inf")


# A decision for one task: the application container's node, one source per input file (None:
# served by the task's new data container) and the new data container's node (None: no new one).
_Decided = tuple[str, list[DataSource | None], str | None]


def _decide(
    task: WaitingTask,
    keys: list[str],
    index: _Index,
    free: _FreeRam,
    spread: bool,
    dc_ram: int,
    colocate: bool,
    allowed: _Allowed,
) -> _Decided | None:
    if colocate:
        return _colocated(task, keys, index, free, spread, dc_ram, allowed)
    return _anywhere(task, keys, index, free, spread, dc_ram, allowed)


def _either(
    task: WaitingTask, keys: list[str], index: _Index, free: _FreeRam, spread: bool, dc_ram: int, colocate: bool
) -> _Decided | None:
    """A task with input files among caching and non-caching nodes: its best caching
    placement (with data containers) against its application container alone on the best
    non-caching node (no data sources), the strategy choosing unless a file is reused."""
    allowed = free.allowed_for(task)
    if allowed is None:
        allowed = set(free.free)
    plain_nodes = allowed - free.caches
    plain = free.pick(task.container_ram, spread, task.cpus, plain_nodes)
    cached = _decide(task, keys, index, free, spread, dc_ram, colocate, allowed & free.caches)
    if cached is not None:
        app_node, sources, dc_node = cached
        if plain is None or any(s is not None for s in sources):
            return cached
        # compare the free RAM the two nodes had before this task
        before = free.free[app_node] + task.container_ram + (dc_ram if dc_node == app_node else 0)
        if ((before, app_node) > (free.free[plain], plain)) == spread:
            return cached
        free.take(app_node, -task.container_ram, -task.cpus)
        if dc_node is not None:
            free.take(dc_node, -dc_ram)
    if plain is None:
        return None
    free.take(plain, task.container_ram, task.cpus)
    return plain, [], None


def _anywhere(
    task: WaitingTask, keys: list[str], index: _Index, free: _FreeRam, spread: bool, dc_ram: int, allowed: _Allowed
) -> _Decided | None:
    """Overlay network: reuse any live container, place app and new data container independently."""
    sources: list[DataSource | None] = []
    for key in keys:
        on_nodes = index.get(key)
        sources.append(next(iter(on_nodes.values())) if on_nodes else None)
    app_ram = task.container_ram
    missing = None in sources
    # largest first; on a tie the application container goes first, as it is the one that computes
    units = [("app", app_ram, task.cpus)] + ([("data", dc_ram, 0.0)] if missing else [])
    units.sort(key=lambda unit: -unit[1])
    chosen: dict[str, str] = {}
    for what, ram, cpus in units:
        node = free.pick(ram, spread, cpus, allowed)
        if node is None:
            for done, ram_done, cpus_done in units:
                if done in chosen:
                    free.take(chosen[done], -ram_done, -cpus_done)
            return None
        free.take(node, ram, cpus)
        chosen[what] = node
    return chosen["app"], sources, chosen.get("data")


def _colocated(
    task: WaitingTask, keys: list[str], index: _Index, free: _FreeRam, spread: bool, dc_ram: int, allowed: _Allowed
) -> _Decided | None:
    """Local bridge: the application container and all its data containers on one node."""
    app_ram = task.container_ram
    best: str | None = None
    best_hits = 0
    best_free = 0
    if keys:
        hits: dict[str, int] = {}
        for key in keys:
            for node in index.get(key, ()):
                hits[node] = hits.get(node, 0) + 1
        for node, n_hits in hits.items():
            node_free = free.free[node]
            if node_free < app_ram + (0 if n_hits == len(keys) else dc_ram) or not free.fits_cpus(node, task.cpus):
                continue
            if allowed is not None and node not in allowed:
                continue
            if (
                best is None
                or n_hits > best_hits
                or (
                    n_hits == best_hits
                    and ((node_free, node) > (best_free, best) if spread else (node_free, node) < (best_free, best))
                )
            ):
                best, best_hits, best_free = node, n_hits, node_free
    if best is None:
        best = free.pick(app_ram + (dc_ram if keys else 0), spread, task.cpus, allowed)
        if best is None:
            return None
    sources: list[DataSource | None] = [index.get(key, {}).get(best) for key in keys]
    missing = None in sources
    free.take(best, app_ram + (dc_ram if missing else 0), task.cpus)
    return best, sources, best if missing else None
