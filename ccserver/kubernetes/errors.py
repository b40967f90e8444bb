"""What can go wrong with a cluster, as exceptions of the domain (the web layer never sees
them: the cluster service turns them into node health and container transitions)."""

from __future__ import annotations


class KubeUnavailable(Exception):
    """The API server cannot be used; the message names the setting when it is a TLS or
    credentials problem (``kubernetes.clusters.NAME.ca_file: ...``)."""


class KubeAPIError(KubeUnavailable):
    """The API server answered with an error status (``status``; ``reason`` is the Status
    object's, such as ``NotFound``, ``AlreadyExists``, ``Expired``)."""

    def __init__(self, message: str, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeConflict(Exception):
    """A Job of that name exists already."""
