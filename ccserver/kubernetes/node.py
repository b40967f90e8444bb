"""One Kubernetes cluster seen as one ccserver node: capacity, Jobs, their pods' ends.

The interface the cluster service (:mod:`ccserver.cluster.service`) uses; see
docs/kubernetes.rst for what maps to what.  Every call goes through
:class:`ccserver.kubernetes.api.KubeAPI` (the reactor, a deadline per call, no thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

from twisted.logger import Logger

from ccserver.cluster.docker_ops import KIND_LABEL, ContainerGone, cut_marker, last_bytes
from ccserver.config import KubeClusterConfig
from ccserver.identity import DAEMON_LABEL
from ccserver.kubernetes.api import KubeAPI
from ccserver.kubernetes.capacity import capacity
from ccserver.kubernetes.credentials import Credentials, CredentialsError, read_credentials
from ccserver.kubernetes.errors import KubeAPIError, KubeConflict, KubeUnavailable
from ccserver.kubernetes.jobs import (
    APP,
    JOB_NAME_LABEL,
    build_job,
    job_exit_code,
    job_status,
    pod_container,
    pod_end,
)
from ccserver.kubernetes.watch import PodTracker, PodWatch
from ccserver.livelogs.engine_http import BodyStream
from ccserver.metrics import Metrics

__all__ = ["KubeConflict", "KubeEvents", "KubeNode", "KubeUnavailable"]

log = Logger(namespace="ccserver.kubernetes")

#: the server-side timeout of one watch request (it is reopened from its resourceVersion)
WATCH_TIMEOUT_SECONDS = 300

#: the finalizer the job controller puts on a Job's pods until it counted them
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"


class _Tail:
    """The last ``limit`` bytes of a streamed log, cut as :func:`docker_ops.last_bytes` cuts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.lines = 0

    def add(self, data: bytes) -> None:
        self.lines += data.count(b"\n")
        self.kept += data
        if len(self.kept) > self.limit + 1:
            # one byte more than kept: last_bytes then sees (and marks) the cut
            del self.kept[: len(self.kept) - self.limit - 1]

    def text(self) -> tuple[str, bool]:
        text, cut = last_bytes([bytes(self.kept)], self.limit)
        return text, cut or self.lines >= self.limit


class KubeEvents(Protocol):
    """What hears about a cluster's pods (the cluster service)."""

    def container_running(self, node: str, name: str) -> None:
        """The pod of container ``name`` runs it (its output can be followed now)."""
        ...

    def container_died(self, node: str, name: str, code: int, owner: str | None) -> None: ...

    def container_stuck(self, node: str, name: str, reason: str) -> None: ...

    def watch_broken(self, node: str, error: BaseException) -> None: ...


class KubeNode:
    """A cluster's API, as the operations ccserver needs of a node.

    The cluster's files (CA, certificate, key, token, kubeconfig) are read once, here: they
    are small, and this is built at start-up.  When one cannot be used, every call raises
    :class:`KubeUnavailable` with the message naming the setting, so that the node is dead
    with that description.
    """

    def __init__(
        self,
        config: KubeClusterConfig,
        reactor: Any,
        events: KubeEvents,
        metrics: Metrics | None = None,
        agent: Any = None,
        *,
        pull_policy: str = "if-not-present",
        credentials: Credentials | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.callback_base = config.callback_url.rstrip("/")
        self.reactor = reactor
        self.events = events
        self.metrics = metrics if metrics is not None else Metrics()
        self.pull_policy = pull_policy
        self.problem: str | None = None
        self.api: KubeAPI | None = None
        if credentials is None:
            try:
                credentials = read_credentials(config)
            except CredentialsError as e:
                self.problem = str(e)
        if credentials is not None:
            try:
                self.api = KubeAPI(config, reactor, credentials, agent=agent, metrics=self.metrics)
            except Exception as e:  # a PEM that OpenSSL refuses although it parsed
                self.problem = f"kubernetes.clusters.{config.name}: the TLS settings cannot be used: {e}"
        self._watch: PodWatch | None = None
        self._tracker: PodTracker | None = None
        ns = quote(config.namespace, safe="")
        self._jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
        self._pods = f"/api/v1/namespaces/{ns}/pods"

    def _api(self) -> KubeAPI:
        if self.api is None:
            raise KubeUnavailable(self.problem or f"kubernetes.clusters.{self.name}: no API client")
        return self.api

    def _job(self, name: str) -> str:
        return f"{self._jobs}/{quote(name, safe='')}"

    # --- the node ----------------------------------------------------------------------

    async def info(self) -> tuple[int, int]:
        """(allocatable RAM in MB, whole CPUs) of the Ready, schedulable nodes our pods may
        use; the health check."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in self.config.node_selector)}
        answer = await self._api().call("list_nodes", "GET", "/api/v1/nodes", query if query["labelSelector"] else None)
        try:
            return capacity(answer.get("items") or (), self.config)
        except (AttributeError, TypeError, ValueError) as e:
            raise KubeUnavailable(
                f"the API server at {self._api().credentials.server} sent a node list not understood: {e}"
            ) from None

    async def create(
        self, name: str, image: str, command: str, ram_mb: int, kind: str, daemon: str, cpus: float | None
    ) -> None:
        """A suspended Job for the container ``name``; :class:`KubeConflict` when it exists."""
        body = build_job(
            self.config,
            name=name,
            image=image,
            command=command,
            ram_mb=ram_mb,
            kind=kind,
            daemon=daemon,
            cpus=cpus,
            pull_policy=self.pull_policy,
        )
        await self.create_job(body)

    async def start(self, name: str) -> None:
        """Resume the suspended Job (its pod is made now); :class:`ContainerGone` if absent."""
        try:
            await self._api().call(
                "start_job",
                "PATCH",
                self._job(name),
                body={"spec": {"suspend": False}},
                content_type="application/merge-patch+json",
            )
        except KubeAPIError as e:
            if e.status == 404:
                raise ContainerGone(name) from None
            raise

    async def remove(self, name: str, daemon: str) -> bool:
        """Delete the Job and its pods if they are this daemon's; False when the Job was gone
        or is another daemon's (that one is left alone).  Pods of ours left by a Job that is
        gone (deleted by its TTL, or by a removal the API did not finish) go too."""
        api = self._api()
        gone = False
        try:
            job = await api.call("get_job", "GET", self._job(name))
        except KubeAPIError as e:
            if e.status != 404:
                raise
            gone = True
        if not gone:
            metadata = job.get("metadata") or {}
            if (metadata.get("labels") or {}).get(DAEMON_LABEL) != daemon:
                log.warn("Job {name} on {node} is not this daemon's: left alone", name=name, node=self.name)
                return False
            options = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "propagationPolicy": "Background",
                # the Job we checked, not one of that name made since
                "preconditions": {"uid": metadata.get("uid")},
            }
            try:
                await api.call("delete_job", "DELETE", self._job(name), body=options)
            except KubeAPIError as e:
                if e.status not in (404, 409):
                    raise
                gone = True
        # the pods at once (background propagation leaves them to the garbage collector);
        # one that ended runs nothing, so it goes without a grace period: its deletion needs
        # no word from the kubelet
        selector = f"{JOB_NAME_LABEL}={name},{DAEMON_LABEL}={daemon}"
        pods = await api.call("list_pods", "GET", self._pods, {"labelSelector": selector})
        for pod in pods.get("items") or ():
            pod_name = (pod.get("metadata") or {}).get("name")
            if not pod_name:
                continue
            path = f"{self._pods}/{quote(pod_name, safe='')}"
            finalizers = (pod.get("metadata") or {}).get("finalizers") or []
            if TRACKING_FINALIZER in finalizers:
                # the Job is gone: nothing will count this pod any more, and its Job's
                # tracking finalizer would keep it (the job controller drops it only when
                # it still sees the Job, e.g. not after an API server restart)
                index = finalizers.index(TRACKING_FINALIZER)
                patch = [
                    {"op": "test", "path": f"/metadata/finalizers/{index}", "value": TRACKING_FINALIZER},
                    {"op": "remove", "path": f"/metadata/finalizers/{index}"},
                ]
                try:
                    await api.call("release_pod", "PATCH", path, body=patch, content_type="application/json-patch+json")
                except KubeAPIError as e:
                    if e.status not in (404, 409, 422):  # gone, or changed since: the next removal
                        raise
            body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
            if pod_end(pod) is not None or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                body["gracePeriodSeconds"] = 0
            try:
                await api.call("delete_pod", "DELETE", path, body=body)
            except KubeAPIError as e:
                if e.status != 404:
                    raise
        return not gone

    async def state(self, name: str) -> tuple[str, int]:
        """("created" | "running" | "exited", exit code); :class:`ContainerGone` if absent."""
        api = self._api()
        try:
            job = await api.call("get_job", "GET", self._job(name))
        except KubeAPIError as e:
            if e.status == 404:
                raise ContainerGone(name) from None
            raise
        status = job_status(job)
        if status == "created":
            return status, 0
        # the pod ends before the Job controller marks the Job finished: the pod says first
        for pod in await self._pods_of(name):
            code = pod_end(pod)
            if code is not None:
                return "exited", code
        return status, job_exit_code(job) if status == "exited" else 0

    async def ours(self, daemon: str) -> dict[str, tuple[str, str, bool]]:
        """name → (kind, status as in :meth:`state`, False) of this daemon's Jobs."""
        api = self._api()
        selector = {"labelSelector": f"{DAEMON_LABEL}={daemon}"}
        answer = await api.call("list_jobs", "GET", self._jobs, selector)
        # a pod ends before the Job controller marks its Job finished: the pods say first
        pods = await api.call("list_pods", "GET", self._pods, selector)
        ended = {pod_container(p) for p in pods.get("items") or () if pod_end(p) is not None}
        found = {}
        for job in answer.get("items") or ():
            metadata = job.get("metadata") or {}
            labels = metadata.get("labels") or {}
            name = metadata.get("name")
            if name and labels.get(DAEMON_LABEL) == daemon:
                status = job_status(job)
                if status == "running" and name in ended:
                    status = "exited"
                found[name] = (labels.get(KIND_LABEL, ""), status, False)
        # pods whose Job is gone (its TTL, a removal cut short): listed as ended, so that the
        # reconciliation removes them
        for pod in pods.get("items") or ():
            labels = (pod.get("metadata") or {}).get("labels") or {}
            name = pod_container(pod)
            if name and name not in found and labels.get(DAEMON_LABEL) == daemon:
                found[name] = (labels.get(KIND_LABEL, ""), "exited", False)
        return found

    async def logs_tail(self, name: str, limit: int, container: str = APP) -> str:
        """The last ``limit`` bytes of the output of ``container`` (default: the one
        container of a 0.10 task's pod) of the Job's newest pod (``""`` without one), led by
        the cut marker of :func:`ccserver.cluster.docker_ops.cut_marker` when cut."""
        newest = await self.newest_pod(name)
        if newest is None:
            return ""
        pod = (newest.get("metadata") or {}).get("name", "")
        # each line is at least one byte: the last ``limit`` lines hold the last ``limit``
        # bytes; they are streamed, and only the last ``limit`` bytes of them are held
        # (no limitBytes: the server would cut the end, not the beginning)
        query = {"container": container, "tailLines": str(limit)}
        path = f"{self._pods}/{quote(pod, safe='')}/log"
        tail = _Tail(limit)
        try:
            await self._api().read_stream("pod_log", path, query, tail.add)
        except KubeAPIError as e:
            if e.status in (400, 404):  # no such pod (any more), or its container never started
                return ""
            raise
        text, cut = tail.text()
        return (cut_marker(limit) + text) if cut else text

    async def follow_logs(
        self, name: str, on_data: Callable[[bytes], None], since_ns: int | None, tail_lines: int | None
    ) -> BodyStream | None:
        """The output of the container's (newest) pod as it comes, each line led by its time
        (``timestamps=true``: the form of an engine's TTY log stream), from ``since_ns`` (the
        API takes whole seconds: the caller drops what it had) or its last ``tail_lines``
        lines; the API server ends the stream when the container ends.  None: no pod, or its
        container is not started."""
        pods = await self._pods_of(name)
        if not pods:
            return None
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        pod = (pods[-1].get("metadata") or {}).get("name", "")
        query: dict[str, Any] = {"container": APP, "follow": "true", "timestamps": "true"}
        if since_ns:
            query["sinceTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since_ns // 1_000_000_000))
        elif tail_lines is not None:
            query["tailLines"] = str(tail_lines)
        try:
            return await self._api().open_stream(f"{self._pods}/{quote(pod, safe='')}/log", query, on_data)
        except KubeAPIError as e:
            if e.status in (400, 404):  # no such pod (any more), or its container not started
                return None
            raise

    async def newest_pod(self, name: str) -> dict[str, Any] | None:
        """The newest pod of the Job ``name`` (None: it has none)."""
        pods = await self._pods_of(name)
        if not pods:
            return None
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        return pods[-1]

    async def create_job(self, body: dict[str, Any]) -> None:
        """A Job as built by the caller (a TES attempt's); :class:`KubeConflict` when it exists."""
        name = str((body.get("metadata") or {}).get("name") or "")
        try:
            await self._api().call("create_job", "POST", self._jobs, body=body)
        except KubeAPIError as e:
            if e.status == 409:
                raise KubeConflict(name) from None
            raise

    async def jobs_labelled(self, selector: str) -> list[str]:
        """The names of the Jobs that ``selector`` (a label selector) matches."""
        answer = await self._api().call("list_jobs", "GET", self._jobs, {"labelSelector": selector})
        return [str(j["metadata"]["name"]) for j in answer.get("items") or () if (j.get("metadata") or {}).get("name")]

    async def _pods_of(self, name: str) -> list[dict[str, Any]]:
        answer = await self._api().call("list_pods", "GET", self._pods, {"labelSelector": f"{JOB_NAME_LABEL}={name}"})
        return list(answer.get("items") or ())

    # --- the watch ---------------------------------------------------------------------

    def watch(self, daemon: str) -> None:
        """Follow this daemon's pods (ended → ``container_died``, stuck → the Job deleted
        then ``container_stuck``); a watch that cannot be resumed reports ``watch_broken``
        and stops (call again to restart)."""
        self.stop_watch()
        if self.api is None:
            self.events.watch_broken(self.name, KubeUnavailable(self.problem or "no API client"))
            return

        async def delete(name: str) -> bool:
            return await self.remove(name, daemon)

        tracker = PodTracker(self.name, self.events, self.reactor, self.config.pending_timeout_seconds, delete)
        self._tracker = tracker
        self._watch = PodWatch(
            self.api,
            self.reactor,
            self.config.namespace,
            f"{DAEMON_LABEL}={daemon}",
            tracker.pod,
            lambda error: self.events.watch_broken(self.name, error),
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
        )
        self._watch.start()

    def stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._tracker is not None:
            self._tracker.stop()
            self._tracker = None

    async def close(self) -> None:
        """Stop the watch and close the persistent connections."""
        self.stop_watch()
        if self.api is not None:
            await self.api.close()

    async def ensure_image(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: the kubelet pulls, per the Job's imagePullPolicy."""
        return None
