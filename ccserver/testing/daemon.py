"""Run ``twistd -n ccserver`` as a real process, for tests and benchmarks.

The process logs to standard output; :class:`Daemon` collects the lines in a thread and waits
(always with a time limit) for the ones it needs, such as the listening addresses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"listening on (tcp|ssl):([0-9a-fA-F.:]+):(\d+)")


def daemon_env(home: Path, checkout: Path | None = None) -> dict[str, str]:
    """The environment of a daemon with its own HOME (so its XDG paths, data and config are
    its own), and the checkout on PYTHONPATH when running from one: an editable install does
    not put the twisted/plugins drop-in into site-packages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CCSERVER_CONFIG"))}
    env["HOME"] = str(home)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def twistd_path() -> str:
    """The ``twistd`` next to the running Python (the venv ccserver is installed in)."""
    return str(Path(sys.executable).with_name("twistd"))


class DaemonError(Exception):
    pass


#: a node that cannot be reached: it is reported dead, nothing is placed, tasks wait (for the
#: benchmarks that measure no Docker)
UNREACHABLE_NODE = "# the only node cannot be reached: nothing is placed\n[docker.nodes.none]\nbase_url = 'unix:///nonexistent/docker.sock'\n"


def write_config(
    directory: Path,
    listen: str = "tcp:0:interface=127.0.0.1",
    server: Mapping[str, Any] | None = None,
    rest: str = UNREACHABLE_NODE,
) -> Path:
    """``directory/config.toml`` for a daemon of its own: a ``[server]`` section with its
    data in ``directory/data``, listening on ``listen``, with the ``server`` keys (strings,
    numbers, booleans, lists), then ``rest`` (TOML text; by default an unreachable node)."""
    lines = ["[server]", f"data_dir = {json.dumps(str(directory / 'data'))}", f"listen = [{json.dumps(listen)}]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in (server or {}).items()]
    config = directory / "config.toml"
    config.write_text("\n".join(lines) + "\n\n" + rest)
    return config


def create_user(
    config: Path, username: str, password: str, env: Mapping[str, str] | None = None, admin: bool = False
) -> None:
    """Create a user with ``ccserver-admin`` (the one next to the running Python) for the
    daemon configured by ``config``; :class:`DaemonError` with its output if that fails."""
    command = [str(Path(sys.executable).with_name("ccserver-admin")), "--config", str(config), "create-user"]
    command += [username, "--password-stdin", *(["--admin"] if admin else [])]
    done = subprocess.run(
        command,
        input=password + "\n",
        text=True,
        env=dict(os.environ if env is None else env),
        timeout=60,
        capture_output=True,
    )
    if done.returncode != 0:
        raise DaemonError(f"ccserver-admin create-user failed ({done.returncode}): {done.stdout}{done.stderr}")


class Daemon:
    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """``preexec_fn`` runs in the child before ``twistd`` (e.g. to set resource limits)."""
        self.args = list(args)
        self.preexec_fn = preexec_fn
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()

    def start(self) -> Daemon:
        command = [twistd_path(), "-n", "--pidfile=", "ccserver", *self.args]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.cwd,
            preexec_fn=self.preexec_fn,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """The first output line matching ``pattern``; fails if the daemon exits or time runs out."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                assert self.process
                if self.process.poll() is not None and seen == len(self.lines):
                    code = self.process.returncode
                    raise DaemonError(f"daemon exited ({code}) before {regex.pattern!r}:\n{self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DaemonError(f"no {regex.pattern!r} within {timeout} s:\n{self.output}")
                self._changed.wait(min(left, 0.2))

    def listening(self, count: int = 1, timeout: float = 30.0) -> list[tuple[str, str, int]]:
        """Wait until ``count`` listeners are open; (kind, host, port) of each."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(m.group(1), m.group(2), int(m.group(3))) for m in map(LISTENING.search, self.lines) if m]
            if len(found) >= count:
                return found
            self.wait_for("listening on", timeout=max(0.1, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise DaemonError(f"fewer than {count} listeners within {timeout} s:\n{self.output}")
            with self._changed:
                self._changed.wait(0.1)

    def url(self, kind: str = "tcp", host: str | None = None) -> str:
        for k, h, port in self.listening():
            if k == kind and (host is None or h == host):
                scheme = "https" if kind == "ssl" else "http"
                return f"{scheme}://{h}:{port}"
        raise DaemonError(f"no {kind} listener:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit status (killing the process after ``timeout``)."""
        assert self.process
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise DaemonError(f"daemon did not stop within {timeout} s:\n{self.output}") from None
        return self.process.returncode

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def run(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``twistd -n ccserver ARGS`` to completion (for start-up failures)."""
    return subprocess.run(
        [twistd_path(), "-n", "--pidfile=", "ccserver", *args],
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class FileDaemon(Daemon):
    """:class:`Daemon` with its output going to a file, which a thread follows.

    With a pipe, the daemon's log writes (one or two lines per request) would wait for this
    process, whose reader thread competes for the GIL with the load generator: a measurement
    artefact.  A file never blocks the writer, as a log file or the journal would not.
    ``profile`` runs the daemon under twistd's own cProfile support (the main thread only;
    statistics written on a clean stop)."""

    def __init__(self, *args: Any, log: Path, profile: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log
        self.profile = profile
        #: set once the listeners are known: following the log during the run would cost
        #: the load generator CPU; the file is read again at the end (``output``)
        self.done_following = threading.Event()

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def start(self) -> Daemon:
        options = ["-n", "--pidfile="]
        if self.profile:
            options += [f"--profile={self.profile}", "--profiler=cprofile", "--savestats"]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [twistd_path(), *options, "ccserver", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=self.env,
                cwd=self.cwd,
            )
        threading.Thread(target=self._follow, daemon=True).start()
        return self

    def _follow(self) -> None:
        assert self.process
        with open(self.log) as f:
            partial = ""
            while True:
                chunk = f.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith("\n"):
                        with self._changed:
                            self.lines.append(partial.rstrip("\n"))
                            self._changed.notify_all()
                        partial = ""
                    continue
                if self.done_following.is_set():
                    return
                if self.process.poll() is not None:
                    rest = f.read()
                    with self._changed:
                        self.lines.extend(line for line in (partial + rest).splitlines())
                        self._changed.notify_all()
                    return
                time.sleep(0.05)
