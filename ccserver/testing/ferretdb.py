"""A throw-away FerretDB server for tests.

FerretDB (https://www.ferretdb.com) speaks the MongoDB wire protocol over SQLite, so tests of
the MongoDB backend run against a real server without MongoDB itself (which cannot be
installed here).  :class:`FerretDB` starts the binary on a free loopback port with its own
data directory, and can be stopped and started again on the same directory and port, to
simulate a database outage.

The methods block (for at most ``start_timeout`` / ``stop_timeout`` seconds); they are meant
for fixtures and for the short moments a test takes the database away.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ENV_VAR = "CCSERVER_FERRETDB"


class FerretDBError(Exception):
    """The FerretDB binary is missing, or the server did not come up in time."""


def find_binary() -> str:
    """The FerretDB executable: ``$CCSERVER_FERRETDB``, else ``ferretdb`` on ``PATH``."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise FerretDBError(f"{ENV_VAR}={explicit}: not an executable file")
        return explicit
    found = shutil.which("ferretdb")
    if not found:
        raise FerretDBError(
            f"FerretDB not found: set {ENV_VAR} to the ferretdb binary or put `ferretdb` on PATH "
            "(e.g. `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`)"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class FerretDB:
    """One FerretDB process on ``127.0.0.1:<port>`` with the SQLite handler."""

    host = "127.0.0.1"

    def __init__(
        self,
        binary: str | None = None,
        data_dir: str | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.binary = binary or find_binary()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="ccserver-ferretdb-"))
        self.port = port or free_port(self.host)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "ferretdb.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.running:
            return
        (self.data_dir / "sqlite").mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir / 'sqlite'}/",
            f"--state-dir={self.data_dir}",
            f"--listen-addr={self.host}:{self.port}",
            "--telemetry=disable",
            "--debug-addr=-",  # no metrics/pprof listener, so instances never clash on 8088
            "--log-level=WARN",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FerretDBError(f"FerretDB exited with {self.process.returncode} at start; log: {self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise FerretDBError(
            f"FerretDB did not accept connections on {self.host}:{self.port} within "
            f"{self.start_timeout} s; log: {self._log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the process is still there after ``stop_timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self.stop_timeout)

    def cleanup(self) -> None:
        """Stop, and remove the data directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> FerretDB:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace").strip()
        except OSError:
            return "(no log)"
