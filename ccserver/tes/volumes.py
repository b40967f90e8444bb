"""Which Docker volumes a TES task's attempt gets, and where they are mounted (pure).

The rule: one volume per entry of the task's ``volumes`` list, mounted at that path; then one
volume per distinct directory that holds an input or output and is not inside a declared
volume (nor inside another such directory): the parent directory of a FILE's path, the path
itself for a DIRECTORY, the directory above the first wildcard of a wildcard output,
and the parent directory of each executor's ``stdin``, ``stdout`` and ``stderr`` file.
Every executor of the attempt mounts all of them, so a file written by one executor, an
input staged in, and an output collected at the end are at the same place for all.
A path at the root (``/in.txt``) would need a volume on ``/``, which Docker cannot mount:
such a task is refused (:class:`VolumeError`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any


class VolumeError(ValueError):
    """The task's paths cannot be mapped to volumes; the message names the path."""


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _directory_of(item: Mapping[str, Any], where: str) -> str:
    path = item.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise VolumeError(f"{where}: an absolute path is required")
    path = posixpath.normpath(path)
    parts = path.split("/")
    wild = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), None)
    if wild is not None:  # a wildcard output: the directory above the first wildcard
        return "/".join(parts[:wild]) or "/"
    return path if item.get("type") == "DIRECTORY" else posixpath.dirname(path)


def mount_points(
    volumes: Iterable[str] | None,
    inputs: Iterable[Mapping[str, Any]] | None,
    outputs: Iterable[Mapping[str, Any]] | None,
    executors: Iterable[Mapping[str, Any]] | None = None,
) -> list[str]:
    """The mount paths of the attempt's volumes, declared ones first, in a stable order."""
    declared: list[str] = []
    for index, path in enumerate(volumes or ()):
        if not isinstance(path, str) or not path.startswith("/"):
            raise VolumeError(f"volumes[{index}]: an absolute path is required")
        path = posixpath.normpath(path)
        if path == "/":
            raise VolumeError(f"volumes[{index}]: a volume cannot be mounted at /")
        if not any(_inside(path, d) for d in declared):
            declared.append(path)
    places: list[tuple[Mapping[str, Any], str]] = []
    for kind, items in (("inputs", inputs), ("outputs", outputs)):
        places += [(item, f"{kind}[{index}].path") for index, item in enumerate(items or ())]
    for index, executor in enumerate(executors or ()):
        for stream in ("stdin", "stdout", "stderr"):
            if executor.get(stream):
                places.append(({"path": executor[stream], "type": "FILE"}, f"executors[{index}].{stream}"))
    candidates: list[str] = []
    for item, where in places:
        directory = _directory_of(item, where)
        if any(_inside(directory, d) for d in declared):
            continue
        if directory == "/":
            raise VolumeError(f"{where}: {item.get('path')!r} is at the root; put it in a directory (e.g. /data)")
        candidates.append(directory)
    derived: list[str] = []
    for directory in sorted(set(candidates), key=lambda d: (d.count("/"), d)):
        if not any(_inside(directory, d) for d in derived):
            derived.append(directory)
    return declared + derived
