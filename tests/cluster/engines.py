"""Extra Docker engines on this machine, for tests with several nodes.

An :class:`Engine` is one more ``dockerd`` next to the machine's own, with everything of its
own under one directory (socket, ``--data-root``, ``--exec-root``, pid file, log, an empty
``daemon.json`` so that ``/etc/docker/daemon.json`` does not apply) and its own Linux bridge
``ccbrN`` at ``10.199.N.1/24`` (``--bridge ccbrN --iptables=false --ip-masq=false``), with a
fixed MAC address (see :func:`_claim_bridge`).

Networking, as a test needs it:

* containers on an extra engine reach servers listening on the main bridge gateway
  (172.17.0.1): that address is local to this machine, so the packets never pass ``FORWARD``;
* containers on one extra engine reach each other (a data container from its application
  container): with ``--iptables=false`` nothing allows that traffic through the ``FORWARD``
  chain, whose policy the main engine set to ``DROP`` (``br_netfilter`` makes bridged packets
  pass it), so :meth:`Engine.start` inserts ``-i ccbrN -o ccbrN -j ACCEPT`` and
  :meth:`Engine.destroy` deletes it.

With ``tls`` the engine also listens on TCP (``tcp_hosts``, loopback addresses only) with
mutual TLS (``--tlsverify``); :func:`make_tls_files` writes a CA, a server certificate naming
chosen names and a client certificate signed by the same CA.

Every step that waits is bounded.  :meth:`Engine.kill` simulates a crash (``SIGKILL`` to
``dockerd`` only; its containerd follows it, its container shims and containers live on), and
:meth:`Engine.start` on the same directory brings the engine back with its images.
:meth:`Engine.destroy` stops the engine (``SIGTERM``, then ``SIGKILL``), then removes anything
that may have survived it (processes that name the directory, the cgroups of its containers,
mounts below the directory), the bridge, the ``FORWARD`` rule and the directory.  Engines not
destroyed by their owner are destroyed when the interpreter exits.

Needs root, ``dockerd``, ``ip``, ``iptables`` (optional) and the ``docker`` CLI.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker

#: the host name the server certificate of a TLS engine carries (next to 127.0.0.1)
ENGINE_HOSTNAME = "ccserver-engine.test"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
LOAD_TIMEOUT = 300.0
COMMAND_TIMEOUT = 30.0
RULE_COMMENT = "ccserver-test-engine"
_SUBNETS = range(100, 250)

_live: set[Engine] = set()
_lock = threading.Lock()


class EngineError(Exception):
    """An engine could not be started, loaded or cleaned up."""


# --- TLS material ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a TLS engine: its CA, its server certificate and key, and a client pair."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    names: tuple[str, ...]


def make_tls_files(directory: Path, names: Sequence[str] = ("127.0.0.1", ENGINE_HOSTNAME)) -> TLSFiles:
    """A fresh CA; a server certificate for ``names`` (IP addresses and/or host names) and a
    client certificate, both signed by it (both may be used for client and server auth)."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="ccserver test engine CA")
    server = ca.issue_cert(*names)
    client = ca.issue_cert("ccserver-client")
    files = TLSFiles(
        ca=str(directory / "ca.pem"),
        server_cert=str(directory / "server-cert.pem"),
        server_key=str(directory / "server-key.pem"),
        client_cert=str(directory / "cert.pem"),
        client_key=str(directory / "key.pem"),
        names=tuple(names),
    )
    ca.cert_pem.write_to_path(files.ca)
    server.cert_chain_pems[0].write_to_path(files.server_cert)
    server.private_key_pem.write_to_path(files.server_key)
    client.cert_chain_pems[0].write_to_path(files.client_cert)
    client.private_key_pem.write_to_path(files.client_key)
    for key in (files.server_key, files.client_key):
        os.chmod(key, 0o600)
    return files


def make_other_ca(path: Path) -> str:
    """The certificate of an unrelated CA (a client trusting it must refuse the engine)."""
    import trustme

    path.parent.mkdir(parents=True, exist_ok=True)
    trustme.CA(organization_name="an unrelated CA").cert_pem.write_to_path(str(path))
    return str(path)


# --- helpers ---------------------------------------------------------------------------------


def _run(args: Sequence[str], timeout: float = COMMAND_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EngineError(f"{' '.join(args)} did not finish within {timeout} s") from None
    except FileNotFoundError:
        raise EngineError(f"{args[0]} is not installed") from None
    if check and result.returncode != 0:
        raise EngineError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-1000:]}")
    return result


def free_port(*hosts: str) -> int:
    """A TCP port free on every one of ``hosts`` (loopback addresses) at the moment."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise EngineError(f"no TCP port free on all of {hosts}")


def _used_subnets() -> set[int]:
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    used = set()
    for word in out.split():
        if word.startswith("10.199."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2]))
    return used


def _claim_bridge() -> tuple[str, int]:
    """Create a bridge ``ccbrN`` with ``10.199.N.1/24`` for a free N (other test sessions on
    the machine may hold some)."""
    with _lock:
        used = _used_subnets()
        for n in _SUBNETS:
            if n in used:
                continue
            name = f"ccbr{n}"
            # a fixed address: a bridge with a kernel-chosen one takes the lowest address of
            # its ports, so it changes when a container goes, and the other containers' ARP
            # entries for the gateway point nowhere for up to a minute
            mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))
            if _run(["ip", "link", "add", name, "address", mac, "type", "bridge"], check=False).returncode != 0:
                continue  # taken meanwhile
            try:
                _run(["ip", "addr", "add", f"10.199.{n}.1/24", "dev", name])
                _run(["ip", "link", "set", name, "up"])
            except EngineError:
                _run(["ip", "link", "del", name], check=False)
                raise
            return name, n
    raise EngineError("no free 10.199.N.0/24 subnet for a test engine bridge")


def _forward_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pids: Iterable[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if _pid_alive(p)}
        if pending:
            time.sleep(0.05)
    return not pending


def _kill(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# --- an engine -------------------------------------------------------------------------------


class Engine:
    """One extra ``dockerd`` with all of its state below ``root``."""

    def __init__(
        self, name: str, root: Path, tls: TLSFiles | None = None, tcp_hosts: Sequence[str] = ("127.0.0.1",)
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.tls = tls
        self.tcp_hosts = tuple(tcp_hosts) if tls else ()
        self.tcp_port: int | None = None
        self.bridge: str | None = None
        self.subnet: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._rule = False
        self._images: set[str] = set()

    def __repr__(self) -> str:
        return f"<Engine {self.name} at {self.root}>"

    # addresses

    @property
    def socket(self) -> str:
        return str(self.root / "docker.sock")

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def tcp_url(self, host: str | None = None) -> str:
        if self.tcp_port is None:
            raise EngineError(f"engine {self.name} does not listen on TCP")
        return f"tcp://{host or self.tcp_hosts[0]}:{self.tcp_port}"

    @property
    def gateway(self) -> str:
        return f"10.199.{self.subnet}.1"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def client(self, timeout: float = 60) -> docker.DockerClient:
        """A client on the engine's unix socket (no TLS there)."""
        return docker.DockerClient(base_url=self.base_url, timeout=int(timeout), version="auto")

    # life

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start ``dockerd`` (again, on the same directory) and wait until it answers."""
        if self.running:
            return
        with _lock:
            _live.add(self)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.bridge is None:
            self.bridge, self.subnet = _claim_bridge()
        if not self._rule and shutil.which("iptables"):
            _run(["iptables", "-I", *_forward_rule(self.bridge)])
            self._rule = True
        config = self.root / "daemon.json"
        config.write_text("{}\n")
        self._remove_stale_containerd()
        for stale in (self.root / "docker.pid", Path(self.socket)):
            stale.unlink(missing_ok=True)
        args = [
            shutil.which("dockerd") or "dockerd",
            "--config-file",
            str(config),
            "--host",
            self.base_url,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "docker.pid"),
            "--bridge",
            self.bridge,
            "--iptables=false",
            "--ip-masq=false",
            "--shutdown-timeout",
            "3",
            "--log-level",
            "warn",
        ]
        if self.tls is not None:
            if self.tcp_port is None:
                self.tcp_port = free_port(*self.tcp_hosts)
            args += [
                "--tlsverify",
                "--tlscacert",
                self.tls.ca,
                "--tlscert",
                self.tls.server_cert,
                "--tlskey",
                self.tls.server_key,
            ]
            args += [f"--host=tcp://{host}:{self.tcp_port}" for host in self.tcp_hosts]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_answering(timeout)

    def _remove_stale_containerd(self) -> None:
        """After a crash, the containerd of the dead ``dockerd`` may linger (as a zombie until
        init reaps it, or alive): ``dockerd`` would take its pid file for a running containerd
        and wait for its socket in vain.  Kill it and drop the pid file; a new containerd
        takes over the running shims."""
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _pid_alive(pid) and str(self.root) in _cmdline(pid):
            _kill([pid])
            if not _wait_gone([pid], 10):
                raise EngineError(f"the old containerd {pid} of engine {self.name} survived SIGKILL")
        pidfile.unlink(missing_ok=True)

    def _wait_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.running:
                raise EngineError(
                    f"dockerd of engine {self.name} exited "
                    f"({self.process.returncode if self.process else None}):\n{self.log_tail()}"
                )
            if os.path.exists(self.socket):
                try:
                    client = docker.DockerClient(base_url=self.base_url, timeout=2, version="1.41")
                    try:
                        client.ping()
                        return
                    finally:
                        client.close()
                except Exception as e:  # not yet
                    last = str(e)
            time.sleep(0.1)
        raise EngineError(f"engine {self.name} did not answer within {timeout} s ({last}):\n{self.log_tail()}")

    def kill(self) -> None:
        """A crash: ``SIGKILL`` to ``dockerd`` only (its containerd dies with it; the shims
        and containers survive until the engine is started again or destroyed)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise EngineError(f"dockerd of engine {self.name} survived SIGKILL for {STOP_TIMEOUT} s") from None

    def pause(self) -> None:
        """A hang: ``SIGSTOP`` to ``dockerd`` (connections are accepted, nothing answers)."""
        if self.running and self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running and self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """``SIGTERM`` (it stops its containers and its containerd), ``SIGKILL`` after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def destroy(self) -> None:
        """Stop the engine and remove everything it made: processes, cgroups, mounts, the
        bridge and its ``FORWARD`` rule, the directory.  Safe to call more than once."""
        problems = []
        try:
            self.stop()
        except EngineError as e:
            problems.append(str(e))
        self._sweep()
        if self._rule and self.bridge:
            _run(["iptables", "-D", *_forward_rule(self.bridge)], check=False)
            self._rule = False
        if self.bridge:
            if _run(["ip", "link", "del", self.bridge], check=False).returncode != 0 and _bridge_exists(self.bridge):
                problems.append(f"could not delete bridge {self.bridge}")
            self.bridge = None
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            problems.append(f"could not remove {self.root}")
        with _lock:
            _live.discard(self)
        if problems:
            raise EngineError(f"engine {self.name}: " + "; ".join(problems))

    def _sweep(self) -> None:
        """Kill what survived ``dockerd`` (containerd, shims, containers) and unmount."""
        marker = str(self.root)
        survivors = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            if marker in _cmdline(int(entry)):
                survivors.append(int(entry))
        ids = []
        containers = self.root / "data" / "containers"
        if containers.is_dir():
            ids = [p.name for p in containers.iterdir() if len(p.name) == 64]
        cgroups = [d for i in ids for d in _container_cgroups(i)]
        for directory in cgroups:
            with contextlib.suppress(OSError, ValueError):
                survivors += [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        if survivors:
            _kill(survivors)
            _wait_gone(survivors, 10)
        for directory in sorted(cgroups, key=lambda d: len(str(d)), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        mounts = []
        with open("/proc/mounts") as f:
            for line in f:
                point = line.split()[1].replace("\\040", " ")
                if point == marker or point.startswith(marker + "/"):
                    mounts.append(point)
        for point in sorted(set(mounts), key=len, reverse=True):
            _run(["umount", "-l", point], check=False)

    # images

    def load_images(self, archive: Path, images: Sequence[str], timeout: float = LOAD_TIMEOUT) -> None:
        """Load ``images`` from a ``docker save`` archive unless the engine has them all."""
        if set(images) <= self._images:
            return
        client = self.client()
        try:
            missing = [i for i in images if not _has_image(client, i)]
        finally:
            client.close()
        if missing:
            docker_cli = shutil.which("docker")
            if docker_cli is None:
                raise EngineError("the docker CLI is not installed")
            _run([docker_cli, "-H", self.base_url, "load", "-q", "-i", str(archive)], timeout=timeout)
        self._images.update(images)


def _has_image(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def _bridge_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _container_cgroups(container_id: str) -> list[Path]:
    base = Path("/sys/fs/cgroup")
    found = []
    for candidate in (base / "docker" / container_id, base / "system.slice" / f"docker-{container_id}.scope"):
        if candidate.is_dir():
            found.append(candidate)  # cgroup v2
    with contextlib.suppress(OSError):
        for controller in base.iterdir():
            candidate = controller / "docker" / container_id
            if candidate.is_dir():
                found.append(candidate)  # cgroup v1
    return found


def save_images(images: Sequence[str], archive: Path, timeout: float = LOAD_TIMEOUT) -> Path:
    """``docker save`` ``images`` of the main engine into ``archive`` (once; kept if present)."""
    if archive.exists():
        return archive
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise EngineError("the docker CLI is not installed")
    partial = archive.with_suffix(".partial")
    _run([docker_cli, "save", "-o", str(partial), *images], timeout=timeout)
    partial.rename(archive)
    return archive


def destroy_all() -> None:
    """Destroy every engine still alive (used at interpreter exit)."""
    with _lock:
        engines = list(_live)
    for engine in engines:
        with contextlib.suppress(Exception):
            engine.destroy()


atexit.register(destroy_all)
