"""One attempt of a TES task on one node, as an operation of its own (never awaited by a
scheduling round).

INITIALIZING: the executors' images (pulled per ``docker.pull_policy`` by the launcher's own
shared pulls), the task's volumes (:mod:`ccserver.tes.volumes`), the first executor's
container (created, not started) and the inputs staged into it.  RUNNING: each executor in
order is created, started and waited for; its end comes from the engine's event stream
(:meth:`TesRunner.container_died`), with an inspection every :data:`POLL_SECONDS` as a safety
net that also refreshes the log tails of the running executor.  Then the outputs are staged out
of the last executor's container, and the task is COMPLETE.  Whatever happens, its containers
and volumes are removed at the end.

How an attempt ends:

* an executor exits non-zero (and has no ``ignore_error``): EXECUTOR_ERROR, not retried;
* staging fails, the engine refuses, the node dies, a state's time limit passes:
  SYSTEM_ERROR of this attempt, retried (back to QUEUED) within ``max_task_trials``;
* the task was set CANCELING: its containers and volumes go, then CANCELED.

``stdin``/``stdout``/``stderr`` are done with the engine's own facilities, not a ``sh -c``
wrapper, so that images without a shell work: stdin is the attached input stream fed from the
file (read with the archive API), and stdout/stderr are the container's logs copied into the
file once the executor ended (with the archive API, spooled through a temporary file).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.logger import Logger

from ccserver.cluster import docker_ops
from ccserver.scheduling.messages import first_line
from ccserver.tes import docker_tes, records
from ccserver.tes import states as tes_states
from ccserver.tes.stager import Stager
from ccserver.tes.submission import mask_url
from ccserver.tes.volumes import mount_points

if TYPE_CHECKING:
    from ccserver.tes.runner import TesRunner

log = Logger(namespace="ccserver.tes")

#: seconds between inspections of a running executor (the event stream is the fast path)
POLL_SECONDS = 5.0
#: a staging call's deadline when the INITIALIZING state has no time limit
STAGING_SECONDS = 3600.0
#: an executor killed by a signal (exit code above 128) is checked this long after it ended:
#: an engine that shuts down stops its containers that way before it goes away
SIGNAL_CHECK_SECONDS = 5.0


class SystemFailure(Exception):
    """The attempt failed for a reason that is not the user's: retried."""


class Cancelled(Exception):
    """The task is CANCELING."""


class CannotRun(Exception):
    """The engine could not run the executor's command (not found, not executable): the
    user's error, as a shell's exit codes 127 and 126 say."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


#: what the engine answers when an executor's command cannot be run, and its shell exit code
CANNOT_RUN = (("executable file not found", 127), ("no such file or directory", 127), ("permission denied", 126))


class Attempt:
    def __init__(
        self,
        runner: TesRunner,
        doc: dict[str, Any],
        node: str,
        slot: DeferredSemaphore,
        ensure_image: Callable[[str, str, Any], Awaitable[None]],
        stager: Stager,
        resume: dict[str, Any] | None = None,
    ) -> None:
        """``doc`` is the task document as claimed (state INITIALIZING) or, with ``resume``,
        as found RUNNING after a restart; ``resume`` is its ``attempt`` record (the executor
        under way, and its container, still on the engine)."""
        self.runner = runner
        self.doc = doc
        self.task_id: ObjectId = doc["_id"]
        self.id = str(doc["_id"])
        self.node = node
        self.slot = slot
        self.ensure_image = ensure_image
        self.stager = stager
        self.resume = resume
        #: the attempt's number (its label): the task's trials when it was claimed
        self.number = int(doc.get("trials") or 1)
        #: the index of its TaskLog in ``logs``
        self.log_index = max(0, len(doc.get("logs") or []) - 1)
        self.cancelled = False
        self.failure: str | None = None
        self.exits: dict[str, int] = {}
        #: a Docker call of this attempt failed (its node is being checked)
        self.docker_failed = False
        self._signal: Deferred[None] | None = None
        self.containers: list[str] = []
        self.volumes: list[str] = []
        #: the containers and volumes this process asked the engine to create (removed by
        #: name at the end, without listing the engine's; a resumed attempt's are swept by label)
        self.made: list[str] = []
        self.made_volumes: list[str] = []
        self.started = runner.clock.seconds()
        self.state = tes_states.RUNNING if resume else tes_states.INITIALIZING
        #: the node, in the reasons of failed calls
        self.where = f"Docker on node {node}"

    # --- what the runner tells it --------------------------------------------------------

    def poke(self) -> None:
        signal, self._signal = self._signal, None
        if signal is not None and not signal.called:
            signal.callback(None)

    def cancel(self) -> None:
        self.cancelled = True
        self.poke()

    def fail(self, why: str) -> None:
        self.failure = why
        self.poke()

    def container_died(self, name: str, code: int) -> None:
        self.exits[name] = code
        self.poke()

    # --- the flow ------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the runner pokes (an end, a cancel, a failure)."""
        signal: Deferred[None] = Deferred()
        self._signal = signal
        timer = self.runner.clock.callLater(seconds, self.poke)
        try:
            await signal
        finally:
            if timer.active():
                timer.cancel()

    async def _to_running(self, set_: dict[str, Any] | None = None) -> None:
        """INITIALIZING → RUNNING (one compare-and-set, with ``set_``); :class:`Cancelled`
        when the task is not INITIALIZING any more (the only other writer: a cancel)."""
        if not await records.move(
            self.runner.store,
            self.task_id,
            (tes_states.INITIALIZING,),
            tes_states.RUNNING,
            "Inputs staged; executors run.",
            self.runner.clock.seconds(),
            set_=set_,
        ):
            raise Cancelled()
        self.state = tes_states.RUNNING
        self.started = self.runner.clock.seconds()

    def _check(self) -> None:
        if self.cancelled:
            raise Cancelled()
        if self.failure:
            raise SystemFailure(self.failure)
        limit = (
            self.runner.config.tes.initializing_timeout_seconds
            if self.state == tes_states.INITIALIZING
            else self.runner.config.tes.running_timeout_seconds
        )
        if limit and self.runner.clock.seconds() - self.started > limit:
            raise SystemFailure(f"the attempt stayed {self.state} longer than {limit:g} s")

    async def _call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        try:
            return await self.runner.cluster.call(self.node, fn, *args, timeout=timeout)
        except Exception as e:
            raise self._failure(e) from None

    def _failure(self, e: Exception) -> Exception:
        """What a failed call to the node means for the attempt."""
        if isinstance(e, docker_ops.ContainerGone):
            return SystemFailure(f"container {e} vanished from Docker")
        if isinstance(e, (SystemFailure, Cancelled)):
            return e
        if self.cancelled:
            return Cancelled()
        self.runner.cluster.report_error(self.node, e)
        self.docker_failed = True
        return SystemFailure(f"{self.where}: {first_line(e)}")

    async def run(self) -> None:
        """Run the attempt to its end and record it; never raises (failures are recorded)."""
        outcome, why = tes_states.SYSTEM_ERROR, ""
        task: dict[str, Any] = self.doc
        try:
            task = await self.runner.vault.reveal(self.doc, by_value=True)
            outcome, why = await self._run(task)
        except Cancelled:
            outcome, why = tes_states.CANCELED, "Cancelled."
        except SystemFailure as e:
            outcome, why = tes_states.SYSTEM_ERROR, str(e)
        except Exception as e:
            log.failure("TES attempt {id} failed", id=self.id)
            outcome, why = tes_states.SYSTEM_ERROR, f"internal error: {first_line(e)}"
        if self.runner.stopping:
            return  # left as it is: the next start resumes or retries it
        if outcome == tes_states.SYSTEM_ERROR and self.docker_failed:
            await self._node_checked()
        await self._remove_all()
        await self.runner.attempt_ended(self, outcome, why, task)

    async def _node_checked(self) -> None:
        """Wait (bounded) for the check of the node whose Docker call failed, so that the retry
        is placed knowing whether the node is dead: otherwise the next round could put it back
        on the same failing node at once."""
        settled: Deferred[None] = Deferred()

        def relay(result: Any) -> Any:  # the check is shared: its result passes on untouched
            if not settled.called:
                settled.callback(None)
            return result

        self.runner.cluster.check(self.node, inspect=False).addBoth(relay)
        seconds = 2 * self.runner.config.docker.api_timeout + 5
        timer = self.runner.clock.callLater(seconds, relay, None)
        try:
            await settled
        finally:
            if timer.active():
                timer.cancel()

    async def _run(self, task: dict[str, Any]) -> tuple[str, str]:
        executors = list(task.get("executors") or [])
        if not executors:
            return tes_states.SYSTEM_ERROR, "the task has no executors"
        try:
            paths = mount_points(task.get("volumes"), task.get("inputs"), task.get("outputs"), executors)
        except ValueError as e:
            return tes_states.SYSTEM_ERROR, str(e)
        daemon = await self.runner.identity.get()
        labels = docker_tes.labels(daemon, self.id, self.number)
        mounts = [(docker_tes.volume_name(self.id, self.number, i), p) for i, p in enumerate(paths)]
        self.volumes = [v for v, _ in mounts]
        self.containers = [docker_tes.container_name(self.id, self.number, i) for i in range(len(executors))]
        first = 0
        if self.resume is None:
            for image in dict.fromkeys(str(e.get("image")) for e in executors):
                self._check()
                try:
                    await self.ensure_image(self.node, image, None)
                except Exception as e:
                    raise SystemFailure(f"image {image}: {first_line(e)}") from None
            await self._with_slot(self._create_volumes, mounts, labels)
            await self._with_slot(self._create, 0, executors[0], mounts, labels, task)
            self._check()
            lines = await self._stage_in(task)
            if lines:
                await self._system_log(lines)
            self._check()
            # the write that makes it RUNNING also records executor 0 (see _record)
            await self._to_running(self._attempt_record(0))
        else:
            first = int(self.resume.get("executor", 0))
        for index in range(first, len(executors)):
            executor = executors[index]
            name = self.containers[index]
            resumed = self.resume is not None and index == first
            if not resumed:
                if index > 0:
                    await self._with_slot(self._create, index, executor, mounts, labels, task)
                self._check()
                if index > 0:
                    await self._record(index)
                try:
                    await self._with_slot(self._start, name, executor)
                except CannotRun as e:
                    await self._executor_log(index, name, final=True, code=e.code, error=str(e))
                    if not executor.get("ignore_error"):
                        return tes_states.EXECUTOR_ERROR, f"executors[{index}] could not run: {e}"
                    continue
            code = await self._wait(name, index, resumed)
            await self._executor_log(index, name, final=True, code=code)
            if code > 128:
                await self._engine_still_there(index, code)
            await self._redirect(name, executor)
            if code != 0 and not executor.get("ignore_error"):
                return tes_states.EXECUTOR_ERROR, f"executors[{index}] exited with code {code}"
        self._check()
        outputs, lines = await self._stage_out(task, self.containers[-1])
        if lines:
            await self._system_log(lines)
        if outputs:  # the TaskLog was made with an empty list
            await self.runner.store.update_one(
                records.C, {"_id": self.task_id}, {"$set": {f"logs.{self.log_index}.outputs": outputs}}
            )
        return tes_states.COMPLETE, "Every executor ended; outputs staged out."

    async def _with_slot(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Creates and starts are bounded per node (``docker.launches_per_node``), shared
        with nothing else: a burst of TES tasks does not queue the removals behind it."""
        await self.slot.acquire()
        try:
            self._check()
            return await fn(*args)
        finally:
            self.slot.release()

    async def _create_volumes(self, mounts: list[tuple[str, str]], labels: dict[str, str]) -> None:
        for volume, _ in mounts:
            self.made_volumes.append(volume)
            await self._call(docker_tes.create_volume, volume, labels)

    async def _create(
        self,
        index: int,
        executor: dict[str, Any],
        mounts: list[tuple[str, str]],
        labels: dict[str, str],
        task: dict[str, Any],
    ) -> None:
        command = executor.get("command")
        if not isinstance(command, list) or not command:
            raise SystemFailure(f"executors[{index}].command: a non-empty list is required")
        env = {str(k): str(v) for k, v in (executor.get("env") or {}).items()}
        self.made.append(self.containers[index])
        await self._call(
            docker_tes.create_executor,
            self.containers[index],
            str(executor["image"]),
            [str(part) for part in command],
            executor.get("workdir"),
            env,
            mounts,
            int(task.get("ram_mb") or 1024),
            float(task.get("cpus") or 1.0),
            labels,
            self.runner.config.docker.net,
            bool(executor.get("stdin")),
        )

    async def _start(self, name: str, executor: dict[str, Any]) -> None:
        try:
            if executor.get("stdin"):
                await self.runner.cluster.call(self.node, docker_tes.start_with_stdin, name, str(executor["stdin"]))
            else:
                await self.runner.cluster.call(self.node, docker_tes.start, name)
        except Exception as e:
            text = str(e).lower()
            if "runtime create failed" in text:
                for sign, code in CANNOT_RUN:
                    if sign in text:
                        raise CannotRun(first_line(e), code) from None
            raise self._failure(e) from None

    def _deadline(self) -> tuple[float, float]:
        """(monotonic deadline, seconds) of a staging call: what is left of the state's limit."""
        limit = (
            self.runner.config.tes.initializing_timeout_seconds
            if self.state == tes_states.INITIALIZING
            else self.runner.config.tes.running_timeout_seconds
        )
        left = limit - (self.runner.clock.seconds() - self.started) if limit else STAGING_SECONDS
        left = max(1.0, left)
        return time.monotonic() + left, left + 5.0

    async def _stage_in(self, task: dict[str, Any]) -> list[str]:
        if not task.get("inputs"):
            return []  # nothing to stage: no call on the Docker pool
        deadline, seconds = self._deadline()
        try:
            return list(
                await self.runner.cluster.call(
                    self.node,
                    self.stager.stage_in,
                    self.containers[0],
                    list(task.get("inputs") or []),
                    deadline,
                    timeout=seconds,
                )
            )
        except Exception as e:
            raise SystemFailure(f"staging in: {first_line(e)}") from None

    async def _stage_out(self, task: dict[str, Any], container: str) -> tuple[list[dict[str, Any]], list[str]]:
        if not task.get("outputs"):
            return [], []
        deadline, seconds = self._deadline()
        try:
            outputs, lines = await self.runner.cluster.call(
                self.node,
                self.stager.stage_out,
                container,
                list(task.get("outputs") or []),
                deadline,
                timeout=seconds,
            )
        except Exception as e:
            raise SystemFailure(f"staging out: {first_line(e)}") from None
        # the stager names the outputs by their real URLs: the task log shows them masked,
        # like the task's own ``outputs`` (a password in a URL is a secret)
        return [{**o, "url": mask_url(str(o.get("url") or ""))} for o in outputs], list(lines)

    async def _wait(self, name: str, index: int, resumed: bool) -> int:
        """The executor's exit code, from its die event or an inspection."""
        if not resumed:
            if name in self.exits:  # its die event came first: the final log follows at once
                return self.exits[name]
            # just started: its start time, not yet its tails (the next look reads them)
            await self._executor_log(index, name, final=False, tails=False)
        else:  # it may have ended while no daemon watched
            found = await self._call(docker_tes.state, name)
            if found.get("Status") in ("exited", "dead"):
                return int(found.get("ExitCode") or 0)
        while True:
            if name in self.exits:
                return self.exits[name]
            self._check()
            await self._pause(POLL_SECONDS)
            if name in self.exits:
                return self.exits[name]
            self._check()
            found = await self._call(docker_tes.state, name)
            if found.get("Status") in ("exited", "dead"):
                return int(found.get("ExitCode") or 0)
            await self._executor_log(index, name, final=False)

    async def _engine_still_there(self, index: int, code: int) -> None:
        """An executor killed by a signal (143: SIGTERM, 137: SIGKILL) is the user's failure
        only if its engine still answers a moment later: a ``dockerd`` that is stopped kills
        its containers first, and its open connections (the event stream, the pool's) still
        report that exit before it goes away.  A node found dead meanwhile, or an engine that
        does not answer, makes it a system failure (retried)."""
        await self._pause(SIGNAL_CHECK_SECONDS)
        self._check()
        try:
            await self.runner.cluster.call(self.node, docker_tes.ping, timeout=SIGNAL_CHECK_SECONDS * 2)
        except Exception as e:
            if self.cancelled:
                raise Cancelled() from None
            self.runner.cluster.report_error(self.node, e)
            raise SystemFailure(
                f"node {self.node} stopped answering when executors[{index}] was killed "
                f"(exit code {code}): {first_line(e)}"
            ) from None
        self._check()

    async def _executor_log(
        self,
        index: int,
        name: str,
        final: bool,
        code: int | None = None,
        error: str | None = None,
        tails: bool = True,
    ) -> None:
        """The ExecutorLog of ``executors[index]``: times, tails (unless not ``tails``), exit
        code (while it runs too); ``error``: why the engine could not run it (its stderr then)."""
        found = await self._call(docker_tes.state, name)
        stdout, stderr = "", ""
        if tails:
            stdout, stderr = await self._call(docker_tes.output_tails, name, self.runner.config.tes.log_tail_bytes)
        if error is not None:
            now = records.rfc3339(self.runner.clock.seconds())
            stderr = error
            entry_times: tuple[str | None, str | None] = (now, now)
        else:
            entry_times = (
                docker_tes.docker_time(found.get("StartedAt")),
                docker_tes.docker_time(found.get("FinishedAt")) if final else None,
            )
        entry = {
            "start_time": entry_times[0],
            "end_time": entry_times[1],
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": code if final else None,
        }
        await self.runner.store.update_one(
            records.C, {"_id": self.task_id}, {"$set": {f"logs.{self.log_index}.logs.{index}": entry}}
        )

    async def _redirect(self, name: str, executor: dict[str, Any]) -> None:
        for stream in ("stdout", "stderr"):
            path = executor.get(stream)
            if path:
                await self._call(docker_tes.copy_output_to_file, name, stream, str(path))

    def _attempt_record(self, index: int) -> dict[str, Any]:
        return {"attempt": {"number": self.number, "executor": index, "container": self.containers[index]}}

    async def _record(self, index: int) -> None:
        """Which executor runs (so that a restarted daemon can resume waiting on it); the
        first one's record is written with the move to RUNNING."""
        await self.runner.store.update_one(records.C, {"_id": self.task_id}, {"$set": self._attempt_record(index)})

    async def _system_log(self, lines: list[str]) -> None:
        await self.runner.store.update_one(
            records.C, {"_id": self.task_id}, {"$push": {f"logs.{self.log_index}.system_logs": {"$each": lines}}}
        )

    async def _remove_all(self) -> None:
        """Every container and volume of the task on this node goes (by label: also what an
        interrupted create left).  On a dead node this fails; the node is swept when it is
        back (:meth:`TesRunner.node_healthy`), so it is not even asked while the node is dead."""
        node = self.runner.cluster.nodes.get(self.node)
        if node is None or node.healthy is False:
            return
        try:
            if self.resume is None and (self.made or self.made_volumes or self.containers):
                # this process made all there is of this attempt: removed by name
                await self.runner.cluster.call(self.node, docker_tes.remove_named, self.made, self.made_volumes)
            else:
                daemon = await self.runner.identity.get()
                await self.runner.cluster.call(self.node, docker_tes.remove_task_leftovers, daemon, self.id)
        except Exception as e:
            log.warn(
                "could not remove the containers and volumes of TES task {id} on {node}: {error}",
                id=self.id,
                node=self.node,
                error=first_line(e),
            )
