"""A cluster's capacity as ccserver's placement sees it, from its list of nodes (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from lightkube.utils.quantity import parse_quantity

from ccserver.config import KubeClusterConfig


def _ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def usable(node: Mapping[str, Any], config: KubeClusterConfig) -> bool:
    """Whether the cluster's pods of ours may run on ``node``: Ready, schedulable, every
    NoSchedule/NoExecute taint tolerated, its labels matching ``node_selector``."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable") or not _ready(node):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in config.node_selector):
        return False
    for taint in spec.get("taints") or ():
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(taint, config.tolerations):
            return False
    return True


def capacity(nodes: Iterable[Mapping[str, Any]], config: KubeClusterConfig) -> tuple[int, int]:
    """(allocatable RAM in MB, whole CPUs) of the usable nodes, summed, each rounded down."""
    memory, cpus = Decimal(0), Decimal(0)
    for node in nodes:
        if not usable(node, config):
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        memory += parse_quantity(allocatable.get("memory", "0")) or 0
        cpus += parse_quantity(allocatable.get("cpu", "0")) or 0
    return int(memory // (1024 * 1024)), math.floor(cpus)
