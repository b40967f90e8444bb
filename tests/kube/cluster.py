"""A real single-node Kubernetes for the tests: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, a containerd of its own and a kubelet, all under one state directory.

What this machine needs (shared/NOTES.md, "A real single-node Kubernetes here"):

- containerd and kubelet run in a private mount namespace (a holder process made by
  ``unshare --mount --propagation private``, entered with ``nsenter``).  In it the
  ``/proc/sys`` files kubelet would set are bind-mounted over by files holding the values it
  wants (so the host's ``vm.overcommit_memory``, ``kernel.panic``... stay as they are), and
  ``/run/containerd`` (shim sockets), ``/var/lib/cni`` (the CNI cache) and
  ``/var/log/containers`` (kubelet's log links) are directories of the state dir.  Every mount
  kubelet and containerd make (overlay snapshots, pod volumes) lives and dies with that
  namespace.
- containerd: own root, state, socket; ``restrict_oom_score_adj`` (root lacks
  CAP_SYS_RESOURCE here); the CNI plugins of /usr/lib/cni with a bridge of its own
  (``ccskube<slot>``, 10.88.<77+slot>.0/24, ``ipMasq: false``: iptables stay untouched); the
  pause image built locally (tests/kube/images.py).
- kubelet: ``failCgroupV1: false``, ``cgroupDriver: cgroupfs``, a cgroup root of its own
  (``/ccskube-<slot>``), ``makeIPTablesUtilChains: false``, its own ports on the node IP.
- kube-apiserver: ``--endpoint-reconciler-type=none``,
  ``--kubelet-preferred-address-types=InternalIP,Hostname`` and a client certificate towards
  the kubelet (pod logs); authorization Node,RBAC; a token file for an RBAC-limited identity.

Several clusters may run at once (a helper's dev cluster beside a test session): each takes a
free *slot* (a lock file under /run/ccserver-kube held by its namespace holder for its whole
life), which names its bridge, subnet and cgroup root.  Every wait is bounded; every component
logs into ``<state>/logs``; a failure raises :class:`KubeClusterError` with the tail of the log.
The cluster's layout is saved in ``<state>/cluster.json`` so that another process can
:meth:`KubeCluster.attach` to it (tests/kube/devcluster.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.kube import configs, images
from tests.kube.host import (
    KERNEL_TUNABLES,
    NS_DIRS,
    SLOT_DIR,
    SLOTS,
    KubeClusterError,
    alive,
    cmdline,
    free_port,
    make_cgroup_root,
    node_ip,
    remove_cgroups,
    slot_free,
    slot_subnet,
    subnet_in_use,
)
from tests.kube.pki import TOKEN_USER, Pki, make_pki

NAMESPACE = "ccserver-test"
CONTEXT = "ccserver-test"
TOKEN_CONTEXT = "ccserver-test-token"
DEFAULT_STATE_ROOT = Path("/var/lib/ccserver-kube-test")
WARMUP_IMAGE = "ccserver-test/base:1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: flock's exit status when the slot's lock is held (``flock -n -E``)
SLOT_TAKEN = 75
#: slots tried by one start when others take them first
SLOT_ATTEMPTS = 3


class SlotTaken(KubeClusterError):
    """Another run locked the chosen slot first."""


def _wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise KubeClusterError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def prune_runs(root: Path, keep: int = 5) -> None:
    """Removes the state dirs (logs) of stopped runs under ``root`` but the ``keep`` newest."""
    stopped = []
    for run in root.glob("run-*"):
        try:
            if "stopped" in json.loads((run / "cluster.json").read_text()):
                stopped.append(run)
        except (OSError, ValueError):
            continue
    for run in sorted(stopped, key=lambda r: r.stat().st_mtime)[:-keep]:
        shutil.rmtree(run, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


class KubeCluster:
    """One single-node cluster under ``state_dir``; :meth:`start` it, :meth:`stop` it."""

    def __init__(
        self,
        bin_dir: str | os.PathLike[str],
        state_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 240.0,
    ) -> None:
        self.bin_dir = Path(bin_dir)
        for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"):
            if not os.access(self.bin_dir / binary, os.X_OK):
                raise KubeClusterError(
                    f"{self.bin_dir / binary}: missing (build it with `bash -c '. scripts/lib.sh; kube_binaries'`)"
                )
        if state_dir is None:
            DEFAULT_STATE_ROOT.mkdir(parents=True, exist_ok=True)
            prune_runs(DEFAULT_STATE_ROOT)
            state_dir = tempfile.mkdtemp(prefix="run-", dir=DEFAULT_STATE_ROOT)
        self.state = Path(state_dir).resolve()
        self.start_timeout = start_timeout
        self.layout: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._session: requests.Session | None = None
        self._image_lock = threading.Lock()

    # --- the fixture's contract -------------------------------------------------------------
    @property
    def pki(self) -> Pki:
        return Pki(self.state / "pki")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.layout['ports']['apiserver']}"

    @property
    def ca_file(self) -> str:
        return str(self.pki.ca)

    @property
    def client_cert_file(self) -> str:
        return str(self.pki.cert("admin"))

    @property
    def client_key_file(self) -> str:
        return str(self.pki.key("admin"))

    @property
    def token_file(self) -> str:
        return str(self.pki.token)

    @property
    def token_user(self) -> str:
        return TOKEN_USER

    @property
    def kubeconfig(self) -> str:
        return str(self.state / "kubeconfig")

    @property
    def namespace(self) -> str:
        return NAMESPACE

    @property
    def node_name(self) -> str:
        return str(self.layout["node_name"])

    @property
    def callback_host(self) -> str:
        """The CNI bridge's address on the host (pods reach the host there); exists once a pod ran."""
        return str(self.layout["gateway"])

    @property
    def containerd_socket(self) -> str:
        return str(self.state / "containerd.sock")

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"

    def api(self, method: str, path: str, json: Any = None, timeout: float = 10.0, **kwargs: Any) -> tuple[int, Any]:
        """One API call with the admin certificate: (status, decoded JSON body or text)."""
        if self._session is None:
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA, a proxy would see the API
            session.verify = self.ca_file
            session.cert = (self.client_cert_file, self.client_key_file)
            self._session = session
        headers = kwargs.pop("headers", {})
        if method.upper() == "PATCH" and "Content-Type" not in headers:
            headers["Content-Type"] = "application/merge-patch+json"
        answer = self._session.request(
            method, self.server + path, json=json, timeout=timeout, headers=headers, **kwargs
        )
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, answer.text

    def import_image(self, tag: str) -> None:
        """Makes the local Docker image ``tag`` available to the kubelet (``imagePullPolicy: Never``).

        ``docker save | ctr import``, once per image id (a record in the state dir; safe from
        several processes at once)."""
        with self._image_lock, open(self.state / "images.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = self.state / "images.json"
            done = json.loads(record.read_text()) if record.exists() else {}
            image_id = images.docker_image_id(tag)
            if done.get(tag) == image_id:
                return
            images.docker_to_containerd(tag, self.containerd_socket)
            done[tag] = image_id
            record.write_text(json.dumps(done, indent=1))

    # --- layout and files ---------------------------------------------------------------
    def _save_layout(self) -> None:
        tmp = self.state / "cluster.json.tmp"
        tmp.write_text(json.dumps(self.layout, indent=1))
        tmp.rename(self.state / "cluster.json")

    @classmethod
    def attach(cls, state_dir: str | os.PathLike[str]) -> KubeCluster:
        """The cluster started (by another process) under ``state_dir``."""
        path = Path(state_dir) / "cluster.json"
        try:
            layout = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise KubeClusterError(f"{path}: no cluster state there ({e})") from e
        cluster = cls(layout["bin_dir"], state_dir)
        cluster.layout = layout
        return cluster

    def _choose_slot(self) -> int:
        for slot in range(SLOTS):
            link = f"ccskube{slot}"
            if slot_free(slot) and not subnet_in_use(slot_subnet(slot), link):
                return slot
        raise KubeClusterError(
            f"no free cluster slot of {SLOTS} (see {SLOT_DIR}) or their subnets 10.88.77-92.0/24 are in use"
        )

    def _plan(self, slot: int) -> None:
        subnet = slot_subnet(slot)
        ip = node_ip()
        self.layout = {
            "bin_dir": str(self.bin_dir),
            "slot": slot,
            "node_name": f"ccskube-{slot}",
            "node_ip": ip,
            "bridge": f"ccskube{slot}",
            "subnet": str(subnet),
            "gateway": str(subnet.network_address + 1),
            "service_range": f"10.89.{77 + slot}.0/24",
            "cgroup_root": f"ccskube-{slot}",
            "ports": {
                "etcd": free_port(),
                "etcd_peer": free_port(),
                "apiserver": free_port(),
                "kubelet": free_port(ip),
                "kubelet_healthz": free_port(),
            },
            "pids": {},
        }

    def _write_files(self) -> None:
        st = self.state
        pki = make_pki(st / "pki", self.node_name, self.layout["node_ip"])
        admin = configs.cert_user(pki.cert("admin"), pki.key("admin"))
        for name, user in (
            ("admin", admin),
            ("kubelet", configs.cert_user(pki.cert("kubelet-client"), pki.key("kubelet-client"))),
        ):
            text = configs.kubeconfig(self.server, self.ca_file, {"user": user}, {CONTEXT: ("user", None)}, CONTEXT)
            _write_private(st / f"{name}.kubeconfig", text)
        # the one for ccserver and the tests: the admin in context ccserver-test, the token in ccserver-test-token
        token = {"token": pki.token.read_text().strip()}
        contexts = {CONTEXT: ("ccserver-admin", NAMESPACE), TOKEN_CONTEXT: (TOKEN_USER, NAMESPACE)}
        text = configs.kubeconfig(
            self.server, self.ca_file, {"ccserver-admin": admin, TOKEN_USER: token}, contexts, CONTEXT
        )
        _write_private(Path(self.kubeconfig), text)

        cni = st / "cni"
        for sub in ("net.d", "ipam"):
            (cni / sub).mkdir(parents=True, exist_ok=True)
        conflist = configs.cni_conflist(
            self.layout["bridge"], self.layout["subnet"], self.layout["gateway"], cni / "ipam"
        )
        (cni / "net.d" / "10-ccskube.conflist").write_text(conflist)

        _, pause_ref = images.pause_image_tar()
        self.layout["pause_image"] = pause_ref
        ctd = st / "containerd"
        for sub in ("root", "state"):
            (ctd / sub).mkdir(parents=True, exist_ok=True)
        text = configs.containerd_toml(
            ctd / "root", ctd / "state", self.containerd_socket, ctd / "opt", pause_ref, cni / "net.d"
        )
        (st / "containerd.toml").write_text(text)

        kubelet = st / "kubelet"
        for sub in ("root", "pod-logs", "volume-plugins", "pki"):
            (kubelet / sub).mkdir(parents=True, exist_ok=True)
        ports = self.layout["ports"]
        text = configs.kubelet_config(
            node_ip=self.layout["node_ip"],
            port=ports["kubelet"],
            healthz_port=ports["kubelet_healthz"],
            cgroup_root=self.layout["cgroup_root"],
            runtime_socket=self.containerd_socket,
            tls_cert=pki.cert("kubelet"),
            tls_key=pki.key("kubelet"),
            client_ca=pki.ca,
            kubelet_dir=kubelet,
        )
        (st / "kubelet.yaml").write_text(text)

        ns = st / "ns"
        (ns / "sysctl").mkdir(parents=True, exist_ok=True)
        for name, value in KERNEL_TUNABLES.items():
            (ns / "sysctl" / name.replace("/", ".")).write_text(value + "\n")
        # the bridge plugin (isGateway) turns forwarding on: let it write a file of ours
        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
        (ns / "sysctl" / "net.ipv4.ip_forward").write_text(forward)
        for rel in NS_DIRS.values():
            (st / rel).mkdir(parents=True, exist_ok=True)

    # --- processes ------------------------------------------------------------------------
    def _log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {path})"
        return f"--- last lines of {path} ---\n" + "\n".join(text[-lines:])

    def _spawn(self, name: str, args: list[str], in_namespace: bool = False) -> None:
        if in_namespace:
            args = ["nsenter", f"--mount=/proc/{self.layout['ns_pid']}/ns/mnt", "--", *args]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.state,
                env={"PATH": PATH, "HOME": str(self.state), "LANG": "C.UTF-8"},
            )
        self._procs[name] = process
        self.layout["pids"][name] = process.pid
        self._save_layout()

    def _ours(self, pid: int) -> bool:
        """A pid of this cluster (the command line names the state dir): never another's process."""
        return alive(pid) and str(self.state) in cmdline(pid)

    def _check_running(self, name: str) -> None:
        pid = self.layout["pids"].get(name)
        process = self._procs.get(name)
        if process is not None:
            # a child of this process: its exit status says all. /proc cannot: for a moment after
            # Popen returns, the new program's arguments are not set up yet and /proc/PID/cmdline
            # reads empty (the kernel lets the parent go on before it builds the new stack)
            if process.poll() is not None:
                raise KubeClusterError(f"{name} exited with {process.returncode}\n{self._log_tail(name)}")
            return
        if pid is None or not self._ours(pid):
            seen = f"pid {pid}, alive {alive(pid)}, command line {cmdline(pid)[:200]!r}" if pid else "no pid"
            raise KubeClusterError(f"{name} is not running ({seen})\n{self._log_tail(name)}")

    def _terminate(self, name: str, timeout: float = 15.0, kill: bool = False) -> None:
        """SIGTERM (SIGKILL after ``timeout``) to the component's process group; ``kill``: SIGKILL at once."""
        pid = self.layout.get("pids", {}).pop(name, None)
        process = self._procs.pop(name, None)
        if pid is None:
            return
        if (process is not None and process.poll() is None) or self._ours(pid):
            signals = ((signal.SIGKILL, 10.0),) if kill else ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0))
            for sig, wait in signals:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    if process is not None:
                        if process.poll() is not None:
                            break
                    elif not alive(pid):
                        break
                    time.sleep(0.1)
                else:
                    continue
                break
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._save_layout()

    def _wait(self, what: str, name: str, check: Callable[[], bool], timeout: float) -> None:
        """Waits for ``check`` while ``name`` runs; raises with its log tail otherwise."""

        last: list[str] = []

        def step() -> bool:
            self._check_running(name)
            try:
                return check()
            except (OSError, requests.RequestException, ValueError, KeyError) as e:
                last[:] = [f"{type(e).__name__}: {e}"]
                return False

        try:
            _wait_until(what, step, timeout)
        except KubeClusterError as e:
            if name in str(e) and "---" in str(e):
                raise
            seen = f" (last error: {last[0]})" if last else ""
            raise KubeClusterError(f"{e}{seen}\n{self._log_tail(name)}") from None

    # --- the namespace holder -------------------------------------------------------------
    def _start_namespace(self) -> None:
        st = self.state
        lines = ["set -e"]
        for name in list(KERNEL_TUNABLES) + ["net/ipv4/ip_forward"]:
            lines.append(f"mount --bind {st / 'ns' / 'sysctl' / name.replace('/', '.')} /proc/sys/{name}")
        for host, rel in NS_DIRS.items():
            lines.append(f"mount --bind {st / rel} {host}")
        lines.append(f"echo $$ > {st / 'ns' / 'pid.tmp'}")
        lines.append(f"mv {st / 'ns' / 'pid.tmp'} {st / 'ns' / 'pid'}")
        lines.append("exec sleep infinity")
        # mount points the namespace binds over; made on the host when missing (empty, removed at stop)
        SLOT_DIR.mkdir(parents=True, exist_ok=True)
        for host in NS_DIRS:
            if not os.path.isdir(host):
                os.makedirs(host, exist_ok=True)
                (SLOT_DIR / ("made" + host.replace("/", "-"))).touch()
        lock = SLOT_DIR / f"slot-{self.layout['slot']}.lock"
        self._spawn(
            "namespace",
            [
                "flock",
                "-n",
                "-E",
                str(SLOT_TAKEN),
                str(lock),
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                "\n".join(lines),
            ],
        )
        pid_file = st / "ns" / "pid"

        def ready() -> bool:
            process = self._procs["namespace"]
            if process.poll() == SLOT_TAKEN:
                raise SlotTaken(f"slot {self.layout['slot']} was taken meanwhile ({lock})")
            return pid_file.exists()

        try:
            self._wait("the mount namespace holder", "namespace", ready, 15)
        except KubeClusterError as e:
            if self._procs["namespace"].poll() == SLOT_TAKEN:
                raise SlotTaken(f"slot {self.layout['slot']} was taken meanwhile ({lock})") from e
            raise
        self.layout["ns_pid"] = int(pid_file.read_text())
        self._save_layout()

    # --- cgroups ---------------------------------------------------------------------------
    # --- start ---------------------------------------------------------------------------
    def _mark(self, phase: str, since: float) -> None:
        self.timings[phase] = round(time.monotonic() - since, 2)

    def start(self) -> None:
        """Sets up and starts every component, and runs a warm-up pod; bounded by ``start_timeout``."""
        began = time.monotonic()
        self.state.mkdir(parents=True, exist_ok=True)
        for attempt in range(SLOT_ATTEMPTS):
            self._plan(self._choose_slot())
            self._save_layout()
            try:
                self._start(began)
                return
            except SlotTaken:
                # another run took the slot between the look and the lock: the next free one
                self._stop_quietly()
                if attempt + 1 == SLOT_ATTEMPTS:
                    raise
            except BaseException:
                self._stop_quietly()
                raise

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    def _left(self, began: float) -> float:
        left = self.start_timeout - (time.monotonic() - began)
        if left <= 0:
            raise KubeClusterError(f"the cluster did not start within {self.start_timeout} s")
        return left

    def _start(self, began: float) -> None:
        st = self.state
        link = self.layout["bridge"]
        if Path(f"/sys/class/net/{link}").exists():  # left by a crashed run of this slot
            subprocess.run(["ip", "link", "delete", link], capture_output=True, timeout=10, check=False)
        self._write_files()
        self._mark("files", began)
        self._start_namespace()
        make_cgroup_root(self.layout["cgroup_root"])
        ports = self.layout["ports"]
        b = self.bin_dir
        self._spawn(
            "etcd",
            [
                str(b / "etcd"),
                "--name=ccskube",
                f"--data-dir={st / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=ccskube=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync",  # test data: no fsync on a loaded shared disk
                "--log-level=warn",
            ],
        )
        self._spawn("containerd", ["containerd", "--config", str(st / "containerd.toml")], in_namespace=True)
        self._wait(
            "etcd health",
            "etcd",
            lambda: (
                requests.get(f"http://127.0.0.1:{ports['etcd']}/health", timeout=2, proxies={"http": ""})
                .json()
                .get("health")
                == "true"
            ),
            self._left(began),
        )
        self._mark("etcd", began)
        self._spawn("kube-apiserver", self.apiserver_args())
        self._wait("containerd socket", "containerd", lambda: Path(self.containerd_socket).exists(), self._left(began))
        pause_tar, _ = images.pause_image_tar()
        images.ctr_import(self.containerd_socket, pause_tar)
        importer = threading.Thread(target=self._import_warmup, daemon=True)
        importer.start()
        self._mark("containerd", began)
        self._wait_apiserver(self._left(began))
        self._mark("apiserver", began)
        self._spawn_controllers()
        self._spawn(
            "kubelet",
            [
                str(b / "kubelet"),
                f"--config={st / 'kubelet.yaml'}",
                f"--kubeconfig={st / 'kubelet.kubeconfig'}",
                f"--root-dir={st / 'kubelet' / 'root'}",
                f"--cert-dir={st / 'kubelet' / 'pki'}",
                f"--volume-plugin-dir={st / 'kubelet' / 'volume-plugins'}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={self.layout['node_ip']}",
                "--v=1",
            ],
            in_namespace=True,
        )
        self._setup_api_objects()
        self._wait(
            "the namespace's default service account (kube-controller-manager)",
            "kube-controller-manager",
            lambda: self.api("GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default", timeout=5)[0] == 200,
            self._left(began),
        )
        self._mark("controller-manager", began)
        self._wait("node Ready", "kubelet", self.node_ready, self._left(began))
        self._mark("node-ready", began)
        importer.join(self._left(began))
        if importer.is_alive() or self._import_error is not None:
            raise KubeClusterError(f"importing {WARMUP_IMAGE}: {self._import_error or 'no end in time'}")
        self._mark("image-import", began)
        self._warmup(self._left(began))
        self._mark("warm-up-pod", began)
        self.layout["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.layout["timings"] = self.timings
        self._save_layout()

    _import_error: BaseException | None = None

    def _import_warmup(self) -> None:
        try:
            self.import_image(WARMUP_IMAGE)
        except BaseException as e:  # reported by _start
            self._import_error = e

    def apiserver_args(self) -> list[str]:
        pki = self.pki
        ports = self.layout["ports"]
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca}",
            f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={pki.ca}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={self.layout['service_range']}",
            "--endpoint-reconciler-type=none",
            f"--token-auth-file={pki.token_csv}",
            "--profiling=false",
            "--v=1",
        ]

    def _wait_apiserver(self, timeout: float) -> None:
        self._wait(
            "kube-apiserver /readyz",
            "kube-apiserver",
            lambda: self.api("GET", "/readyz", timeout=3)[0] == 200,
            timeout,
        )

    def _setup_api_objects(self) -> None:
        """The namespace, and RBAC for the token's identity: what ccserver's service account needs."""
        for path, body in configs.setup_objects(NAMESPACE, TOKEN_USER):
            status, answer = self.api("POST", path, json=body)
            if status not in (201, 409):
                raise KubeClusterError(f"POST {path}: {status} {answer}")

    def node_ready(self) -> bool:
        status, node = self.api("GET", f"/api/v1/nodes/{self.node_name}", timeout=5)
        if status != 200:
            return False
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))

    def _warmup(self, timeout: float) -> None:
        """One pod to the end: proves scheduler, kubelet, containerd, CNI; makes the bridge (callback_host)."""
        name = "ccserver-warmup"
        pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "warmup", "image": WARMUP_IMAGE, "imagePullPolicy": "Never", "command": ["true"]}
                ],
            },
        }
        status, answer = self.api("POST", pods, json=pod)
        if status != 201:
            raise KubeClusterError(f"creating the warm-up pod: {status} {answer}")
        phase: list[str] = []

        def done() -> bool:
            _, current = self.api("GET", f"{pods}/{name}", timeout=5)
            phase[:] = [current.get("status", {}).get("phase", "?")]
            if phase[0] == "Failed":
                raise KubeClusterError(f"the warm-up pod failed: {json.dumps(current.get('status'))}")
            return phase[0] == "Succeeded"

        try:
            self._wait("the warm-up pod Succeeded", "kubelet", done, timeout)
        except KubeClusterError as e:
            _, current = self.api("GET", f"{pods}/{name}", timeout=5)
            raise KubeClusterError(
                f"{e}\npod status: {json.dumps(current.get('status') if isinstance(current, dict) else current)}"
            ) from None
        self.api("DELETE", f"{pods}/{name}", json={"gracePeriodSeconds": 0})
        if not Path(f"/sys/class/net/{self.layout['bridge']}").exists():
            raise KubeClusterError(f"the CNI bridge {self.layout['bridge']} is missing after the warm-up pod ran")

    # --- the dead-cluster test ----------------------------------------------------------
    def _spawn_controllers(self) -> None:
        """kube-controller-manager and kube-scheduler (started again with the API server:
        their informers would otherwise come back from an outage with a long backoff, and
        the job controller waits for its stale pod cache for a minute or more)."""
        st, b = self.state, self.bin_dir
        admin = str(st / "admin.kubeconfig")
        self._spawn(
            "kube-controller-manager",
            [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={admin}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca}",
                "--use-service-account-credentials=false",
                f"--flex-volume-plugin-dir={st / 'kubelet' / 'volume-plugins'}",  # else it makes /usr/libexec/...
                "--concurrent-job-syncs=10",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [str(b / "kube-scheduler"), f"--kubeconfig={admin}", "--leader-elect=false", "--secure-port=0", "--v=1"],
        )

    def stop_apiserver(self) -> None:
        """The API goes away at once (SIGKILL, as in a crash: its port refuses connections; a
        graceful stop would drain for ~15 s).  etcd keeps the state for :meth:`start_apiserver`."""
        self._terminate("kube-apiserver", kill=True)

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """The API comes back on the same port with the same state."""
        if self.layout["pids"].get("kube-apiserver") and self._ours(self.layout["pids"]["kube-apiserver"]):
            return
        self._spawn("kube-apiserver", self.apiserver_args())
        self._wait_apiserver(timeout)
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._terminate(name, kill=True)  # they keep no state of their own
        self._spawn_controllers()

    # --- stop ------------------------------------------------------------------------
    def _processes_naming(self, needle: str) -> list[int]:
        """Processes (not this one) whose command line holds ``needle`` (a path of this cluster's state)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid() and needle in cmdline(int(entry.name)):
                found.append(int(entry.name))
        return found

    def _kill_all(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Stops every component and removes what they left (pods, cgroups, bridge, runtime state);
        the logs stay in ``<state>/logs``."""
        if not self.layout:
            return
        self._terminate("kubelet")
        remove_cgroups(self.layout.get("cgroup_root"))
        self._kill_all(self._processes_naming(f"-address {self.containerd_socket}"))  # the shims
        self._terminate("containerd")
        self._terminate("namespace")
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._terminate(name)
        # anything else naming the state dir: an image import (ctr) still running, say
        left = self._processes_naming(str(self.state))
        self._kill_all(left)
        _wait_until("the cluster's last processes ended", lambda: not any(alive(pid) for pid in left), 10)
        remove_cgroups(self.layout.get("cgroup_root"))
        self._unmount_leftovers()
        link = self.layout.get("bridge")
        if link and Path(f"/sys/class/net/{link}").exists():
            subprocess.run(["ip", "link", "delete", link], capture_output=True, timeout=10, check=False)
        for path in self.state.iterdir():  # all but the logs and the layout (the images went with containerd)
            if path.name in ("logs", "cluster.json"):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._remove_made_mount_points()
        if self._session is not None:
            self._session.close()
            self._session = None
        self.layout["stopped"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._save_layout()

    def _unmount_leftovers(self) -> None:
        """Safety net: nothing should be mounted under the state dir on the host (all mounts were in
        the namespace); lazily unmount anything that is."""
        prefix = str(self.state) + "/"
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=10, check=False)

    def _remove_made_mount_points(self) -> None:
        """The empty host directories made as mount points, once no cluster of any slot runs."""
        if not all(slot_free(slot) for slot in range(SLOTS)):
            return
        for host in NS_DIRS:
            marker = SLOT_DIR / ("made" + host.replace("/", "-"))
            if marker.exists():
                try:
                    os.rmdir(host)
                except OSError:
                    pass
                marker.unlink()
