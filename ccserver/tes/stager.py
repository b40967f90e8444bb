"""The staging step an attempt calls: :class:`ArchiveStager` (the full staging of
``ccserver/tes/staging.py``), and :class:`ContentStager`, a small one for tests of the runner
that need no storage.

A :class:`Stager`'s methods are BLOCKING (they run on the Docker pool, through
:meth:`Cluster.call`), take the engine's client and a created container that mounts the
task's volumes, and raise :class:`StagingFailed` with a message naming the input or output.
"""

from __future__ import annotations

from typing import Any, Protocol

import docker

from ccserver.config import StorageConfig
from ccserver.tes import docker_tes, staging


class StagingFailed(Exception):
    """Staging in or out failed; the message names the input or output."""


class Stager(Protocol):
    def stage_in(
        self, client: docker.DockerClient, container: str, inputs: list[dict[str, Any]], deadline: float
    ) -> list[str]:
        """Put the inputs into ``container``; system log lines."""
        ...

    def stage_out(
        self, client: docker.DockerClient, container: str, outputs: list[dict[str, Any]], deadline: float
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Collect the outputs from ``container``: the OutputFileLog list, system log lines."""
        ...


class ContentStager:
    """Inline ``content`` inputs only (written with the engine's archive API); no outputs."""

    def stage_in(
        self, client: docker.DockerClient, container: str, inputs: list[dict[str, Any]], deadline: float
    ) -> list[str]:
        lines = []
        for index, item in enumerate(inputs):
            if item.get("content") is None:
                raise StagingFailed(
                    f"inputs[{index}] ({item.get('url') or item.get('path')}): only content inputs can be staged here"
                )
            data = str(item["content"]).encode("utf-8")
            docker_tes.put_file(client, container, item["path"], data)
            lines.append(f"inputs[{index}]: {len(data)} bytes of content written to {item['path']}")
        return lines

    def stage_out(
        self, client: docker.DockerClient, container: str, outputs: list[dict[str, Any]], deadline: float
    ) -> tuple[list[dict[str, Any]], list[str]]:
        if outputs:
            raise StagingFailed(f"outputs[0] ({outputs[0].get('url')}): outputs cannot be staged out here")
        return [], []


class ArchiveStager:
    """The full staging of :mod:`ccserver.tes.staging`: every input and output scheme the
    ``[tes.storage]`` configuration allows, streamed through the engine's archive API."""

    def __init__(self, storage: StorageConfig) -> None:
        self.storage = storage

    def stage_in(
        self, client: docker.DockerClient, container: str, inputs: list[dict[str, Any]], deadline: float
    ) -> list[str]:
        try:
            return staging.stage_in(client, container, inputs, self.storage, deadline)
        except staging.StagingError as e:
            raise StagingFailed(str(e)) from None

    def stage_out(
        self, client: docker.DockerClient, container: str, outputs: list[dict[str, Any]], deadline: float
    ) -> tuple[list[dict[str, Any]], list[str]]:
        try:
            return staging.stage_out(client, container, outputs, self.storage, deadline)
        except staging.StagingError as e:
            raise StagingFailed(str(e)) from None
