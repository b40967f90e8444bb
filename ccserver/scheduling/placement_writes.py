"""Placement writes: a round's decisions (:func:`ccserver.scheduling.rounds.decide`) turned
into documents: new data containers, the application container, the task processing."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from ccserver import states
from ccserver.config import Config
from ccserver.kinds import APPLICATION, DATA
from ccserver.lifecycle import Lifecycle
from ccserver.scheduling import rounds
from ccserver.storage.base import Store
from ccserver.vault import Vault, digests

APP = APPLICATION.documents
DATA_CONTAINERS = DATA.documents


async def write_placement(
    placed: rounds.Placed,
    config: Config,
    store: Store,
    lifecycle: Lifecycle,
    vault: Vault,
    now: float,
    groups_processing: set[ObjectId] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Record one placement: its new data containers (their input specs kept apart, see
    :mod:`ccserver.vault`), its application container, and the task now processing; the
    (collection, document) of each new container, in the order the launcher starts them.

    ``groups_processing`` holds the groups already moved to processing by this round's
    earlier placements: their compare-and-set is not asked again."""
    dc_defaults = config.defaults.data_container
    new_data, kept = [], []
    task = placed.task
    if placed.new_data_containers:
        # a new data container holds the task's real specs (credentials included), kept
        # apart from its document like the task's own (see ccserver.vault)
        revealed = await vault.reveal(task)
        specs = dict(zip(digests(task), revealed.get("input_files") or (), strict=False))
    for new in placed.new_data_containers:
        doc = {
            "_id": new.id,
            "state": states.CREATED,
            "created_at": now,
            "transitions": [states.transition(states.CREATED, "Data container created.", now)],
            "username": task["username"],
            "input_files": [specs[digest] for digest in new.input_files],
            "callbacks": [],
            "cluster_node": new.node,
            "container_ram": dc_defaults.container_ram,
        }
        secret = vault.conceal(doc)
        doc["input_file_digests"] = list(new.input_files)
        new_data.append(doc)
        if secret:
            kept.append(secret)
    if new_data:
        await vault.keep(kept)
        await store.insert_many(DATA_CONTAINERS, new_data)
    app_id = ObjectId()
    app: dict[str, Any] = {
        "_id": app_id,
        "state": states.CREATED,
        "created_at": now,
        "transitions": [states.transition(states.CREATED, "Application container created.", now)],
        "username": task["username"],
        "task_id": [task["_id"]],
        "data_container_ids": placed.data_container_ids,
        "callbacks": [],
        "cluster_node": placed.node,
        "container_ram": task["application_container_description"]["container_ram"],
    }
    await store.insert_one(APP, app)
    group_id = task["task_group_id"][0]
    again = groups_processing is not None and group_id in groups_processing
    await lifecycle.task_processing(task["_id"], group_id, {"application_container_id": app_id}, group=not again)
    if groups_processing is not None:
        groups_processing.add(group_id)
    return [(DATA_CONTAINERS, doc) for doc in new_data] + [(APP, app)]
