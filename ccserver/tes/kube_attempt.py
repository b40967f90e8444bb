"""One attempt of a TES task on a Kubernetes cluster: one Job, whose pod runs the staging
steps and the executors in order (:mod:`ccserver.kubernetes.tes_jobs`), with the inputs and
outputs moved by the daemon (:mod:`ccserver.tes.kube_staging`).

INITIALIZING: the inputs are fetched into the attempt's spool (on the staging pool), then the
Job is created.  RUNNING: from when the pod's first executor has started.  The pod's end comes
from the cluster's pod watch (:meth:`TesRunner.container_died`), with a look at the pod every
:data:`~ccserver.tes.attempt.POLL_SECONDS` as a safety net that also refreshes the running
executor's log tail.  Then each executor's ExecutorLog is written from its container's status
and log, and the outputs the pod sent are uploaded.  Whatever happens, the Job, its pod and
the spool go at the end.

How an attempt ends is as on a Docker node (see :mod:`ccserver.tes.attempt`): an executor
that exits non-zero is an EXECUTOR_ERROR; a staging step that fails, a pod that cannot start
(``pending_timeout_seconds``), a dead cluster or a state's time limit are a SYSTEM_ERROR,
retried.  The logs of a pod's container hold stdout and stderr together: an ExecutorLog's
``stdout`` has both, its ``stderr`` is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bson import ObjectId
from twisted.internet.defer import DeferredSemaphore
from twisted.logger import Logger

from ccserver.identity import DAEMON_LABEL
from ccserver.kubernetes import tes_jobs
from ccserver.kubernetes.errors import KubeConflict
from ccserver.kubernetes.jobs import APP
from ccserver.scheduling.messages import first_line
from ccserver.tes import docker_tes, records
from ccserver.tes import states as tes_states
from ccserver.tes.attempt import POLL_SECONDS, Attempt, SystemFailure
from ccserver.tes.kube_staging import QUEUE_SECONDS, SpoolClient, StagingExchange, piece_bytes
from ccserver.tes.output_archive import archive_path
from ccserver.tes.stager import Stager
from ccserver.tes.submission import mask_url
from ccserver.tes.volumes import mount_points

if TYPE_CHECKING:
    from ccserver.cluster.backend import Kube
    from ccserver.tes.kube_staging import Spool
    from ccserver.tes.runner import TesRunner

log = Logger(namespace="ccserver.tes")


def job_name(task_id: str, attempt: int) -> str:
    """The Job of an attempt (a DNS label: the TES name prefix, the task id, the attempt)."""
    return f"{docker_tes.NAME_PREFIX}{task_id}-{attempt}"


class KubeAttempt(Attempt):
    def __init__(
        self,
        runner: TesRunner,
        doc: dict[str, Any],
        node: str,
        kube: Kube,
        stager: Stager,
        exchange: StagingExchange,
        pool: Any,
    ) -> None:
        """``kube``: the cluster's client; ``pool``: the staging thread pool (a
        :class:`ccserver.threads.ThreadPoolService`)."""
        super().__init__(runner, doc, node, DeferredSemaphore(1), _no_image, stager)
        self.kube = kube
        self.exchange = exchange
        self.pool = pool
        self.where = f"Kubernetes cluster {node}"
        self.job = job_name(self.id, self.number)
        self.made_job = False
        self._token: str | None = None
        #: what was last written of each executor's ExecutorLog (so unchanged ones are not rewritten)
        self._written: dict[int, tuple[Any, ...]] = {}

    # --- the flow ------------------------------------------------------------------------

    async def _kube(self, call: Any) -> Any:
        """An API call of this attempt; a failure means the cluster is checked."""
        try:
            return await call
        except Exception as e:
            raise self._failure(e) from None

    async def _run(self, task: dict[str, Any]) -> tuple[str, str]:
        executors = list(task.get("executors") or [])
        if not executors:
            return tes_states.SYSTEM_ERROR, "the task has no executors"
        for index, executor in enumerate(executors):
            command = executor.get("command")
            if not isinstance(command, list) or not command:
                return tes_states.SYSTEM_ERROR, f"executors[{index}].command: a non-empty list is required"
        inputs = list(task.get("inputs") or [])
        outputs = list(task.get("outputs") or [])
        try:
            paths = mount_points(task.get("volumes"), inputs, outputs, executors)
        except ValueError as e:
            return tes_states.SYSTEM_ERROR, str(e)
        daemon = await self.runner.identity.get()
        spool: Spool | None = None
        staging_url = None
        output_paths = [archive_path(str(o.get("path"))) for o in outputs]
        if inputs or outputs:
            self._token, spool = await self.exchange.open(output_paths)
            staging_url = f"{self.kube.callback_base}/tes-staging/{self._token}"
        if inputs:
            assert spool is not None
            lines = await self._staging("in", self.stager.stage_in, SpoolClient(spool), "", inputs)
            if lines:
                await self._system_log(list(lines))
        self._check()
        body = tes_jobs.build_tes_job(
            self.kube.config,
            name=self.job,
            labels=docker_tes.labels(daemon, self.id, self.number),
            executors=executors,
            mounts=paths,
            ram_mb=int(task.get("ram_mb") or 1024),
            cpus=float(task.get("cpus") or 1.0),
            pull_policy=self.kube.pull_policy,
            staging_url=staging_url,
            has_inputs=bool(inputs),
            output_paths=output_paths,
            piece_bytes=piece_bytes(self.runner.config.server.max_body_bytes),
        )
        self.made_job = True
        try:
            await self.kube.create_job(body)
        except KubeConflict:
            raise SystemFailure(f"Job {self.job} exists already") from None
        except Exception as e:
            raise self._failure(e) from None
        await self.runner.store.update_one(
            records.C,
            {"_id": self.task_id},
            {"$set": {"attempt": {"number": self.number, "executor": 0, "container": self.job, "job": self.job}}},
        )
        pod = await self._follow(executors, bool(outputs))
        states = tes_jobs.container_states(pod)
        await self._executor_logs(pod, executors, bool(outputs), final=True)
        if inputs:
            step = (states.get(tes_jobs.STAGE_IN) or {}).get("terminated")
            if not step or step.get("exitCode") != 0:
                raise SystemFailure(f"staging in (the pod's step): {await self._step_reason(tes_jobs.STAGE_IN, pod)}")
        for index in range(len(executors)):
            name = tes_jobs.executor_container(index, len(executors), bool(outputs))
            ended = (states.get(name) or {}).get("terminated")
            if not ended:
                raise SystemFailure(f"executors[{index}] did not run: {tes_jobs.pod_failure(pod)}")
            code = int(ended.get("exitCode") or 0)
            if code != 0:
                reason = f" ({ended['reason']})" if ended.get("reason") not in (None, "Error", "Completed") else ""
                return tes_states.EXECUTOR_ERROR, f"executors[{index}] exited with code {code}{reason}"
        if outputs:
            assert spool is not None
            step = (states.get(APP) or {}).get("terminated")
            if (
                not step
                or step.get("exitCode") != 0
                or not await self.pool.run_started_within(QUEUE_SECONDS, spool.complete)
            ):
                raise SystemFailure(f"staging out (the pod's step): {await self._step_reason(APP, pod)}")
            self._check()
            sent, lines = await self._staging("out", self.stager.stage_out, SpoolClient(spool), "", outputs)
            logs = [{**o, "url": mask_url(str(o.get("url") or ""))} for o in sent]
            if lines:
                await self._system_log(list(lines))
            if logs:
                await self.runner.store.update_one(
                    records.C, {"_id": self.task_id}, {"$set": {f"logs.{self.log_index}.outputs": logs}}
                )
        return tes_states.COMPLETE, "Every executor ended; outputs staged out."

    async def _staging(self, way: str, fn: Any, *args: Any) -> Any:
        deadline, seconds = self._deadline()
        try:
            return await self.pool.run_started_within(QUEUE_SECONDS, fn, *args, deadline)
        except Exception as e:
            raise SystemFailure(f"staging {way}: {first_line(e)}") from None

    async def _step_reason(self, container: str, pod: dict[str, Any]) -> str:
        """The last line a staging step wrote (its error), or the pod's reason."""
        try:
            tail = await self.kube.logs_tail(self.job, 2000, container=container)
        except Exception:
            tail = ""
        lines = [line for line in tail.splitlines() if line.strip()]
        return lines[-1] if lines else tes_jobs.pod_failure(pod)

    async def _follow(self, executors: list[dict[str, Any]], has_outputs: bool) -> dict[str, Any]:
        """Wait for the pod's end; RUNNING once an executor started.  The pod as it ended."""
        first = tes_jobs.executor_container(0, len(executors), has_outputs)
        looked_after_end = False
        while True:
            if self.job not in self.exits or looked_after_end:
                self._check()
                await self._pause(POLL_SECONDS)
                self._check()
            looked_after_end = self.job in self.exits
            pod = await self._kube(self.kube.newest_pod(self.job))
            if pod is None:
                if self.job in self.exits:
                    raise SystemFailure(f"the pod of Job {self.job} was deleted before it ended")
                continue  # not made yet by the Job controller
            states = tes_jobs.container_states(pod)
            if self.state == tes_states.INITIALIZING and {"running", "terminated"} & set(states.get(first) or {}):
                await self._to_running()
            if tes_jobs.pod_phase(pod) in ("Succeeded", "Failed"):
                return dict(pod)
            await self._executor_logs(pod, executors, has_outputs, final=False)

    async def _executor_logs(
        self, pod: dict[str, Any], executors: list[dict[str, Any]], has_outputs: bool, final: bool
    ) -> None:
        """The ExecutorLog of every executor that started: times and exit code from its
        container's state, the tail of its log (of a running one at every look)."""
        states = tes_jobs.container_states(pod)
        limit = self.runner.config.tes.log_tail_bytes
        for index in range(len(executors)):
            name = tes_jobs.executor_container(index, len(executors), has_outputs)
            state = states.get(name) or {}
            running, ended = state.get("running"), state.get("terminated")
            if not running and not ended:
                continue
            key = (bool(ended), (ended or {}).get("exitCode"))
            if ended and self._written.get(index) == key:
                continue  # its final entry is written
            try:
                tail = await self.kube.logs_tail(self.job, limit, container=name)
            except Exception as e:
                raise self._failure(e) from None
            entry = {
                "start_time": (ended or running or {}).get("startedAt"),
                "end_time": (ended or {}).get("finishedAt"),
                "stdout": tail,
                "stderr": "",
                "exit_code": int(ended.get("exitCode") or 0) if ended else None,
            }
            await self.runner.store.update_one(
                records.C, {"_id": self.task_id}, {"$set": {f"logs.{self.log_index}.logs.{index}": entry}}
            )
            self._written[index] = key

    async def _remove_all(self) -> None:
        """The Job and its pods go (every Job of the task of this daemon when this process did
        not make it: after a restart), then the spool.  Not asked of a dead cluster: its
        Jobs are removed when it is back (:meth:`TesRunner.node_healthy`)."""
        try:
            if self.runner.cluster.health(self.node):
                daemon = await self.runner.identity.get()
                names = [self.job]
                if not self.made_job:
                    selector = f"{docker_tes.TASK_LABEL}={self.id},{DAEMON_LABEL}={daemon}"
                    names = await self.kube.jobs_labelled(selector)
                for name in names:
                    await self.kube.remove(name, daemon)
        except Exception as e:
            log.warn(
                "could not remove the Job of TES task {id} on {node}: {error}",
                id=self.id,
                node=self.node,
                error=first_line(e),
            )
        if self._token is not None:
            try:
                await self.exchange.close(self._token)
            except Exception as e:
                log.warn("could not remove the staging files of TES task {id}: {e}", id=self.id, e=first_line(e))
            self._token = None


async def _no_image(node: str, image: str, auth: Any) -> None:
    """Nothing: the kubelet pulls, per the Job's imagePullPolicy."""


def task_of(job: str) -> ObjectId | None:
    """The task id in a TES Job's name (None: not one)."""
    if not job.startswith(docker_tes.NAME_PREFIX):
        return None
    try:
        return ObjectId(job[len(docker_tes.NAME_PREFIX) :].split("-", 1)[0])
    except Exception:
        return None
