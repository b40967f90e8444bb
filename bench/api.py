"""Benchmark of the REST API of a real ``twistd -n ccserver`` process on loopback.

Run from the repository root:  .venv/bin/python bench/api.py [--quick] [--profile FILE] [--gc-log]
                                                          [--gc-freeze]

The script writes a configuration into a temporary directory (embedded store there, a
loopback listener on a free port, and one Docker node that cannot be reached, so that the
scheduler places nothing and the submitted tasks just wait), creates a standard user with
``ccserver-admin``, starts the daemon, gets a token and drives the API with 32 concurrent
keep-alive clients (raw asyncio streams, one connection each):

  a. single-task ``POST /tasks`` with the token;
  b. 1,000-task batch ``POST /tasks``, one at a time (the time per batch);
  c. ``GET /nodes``;
  d. filling the store with 1,000-task batches from all clients (tasks/s), then
     ``POST /tasks/query`` with ``$match state`` + ``$limit 100`` over all stored tasks;
  e. single-task ``POST /tasks`` with the password on every request.

Every phase has a fixed number of requests and a hard time limit.  The figures are printed
with the load average and the CPU time of the daemon and of this load generator, so that a
generator that is itself the bottleneck would show.  Exit status: 2 when the run is broken
(a request failed or timed out, the daemon misbehaved); otherwise 0 when every target is met
and 1 when one is missed, except with ``--quick``, whose sizes are not the targets' (10,000
stored tasks instead of 100,000): it prints the targets for information and exits 0.

``--profile FILE`` runs the daemon under twistd's cProfile support and leaves the statistics
in FILE (read them with ``python -m pstats FILE``); figures under the profiler are slower.
``--gc-log`` reports the daemon's full (generation 2) garbage collections per phase: their
number and pauses.  ``--gc-freeze`` is an experiment: it has the daemon call ``gc.freeze()``
once, after start-up and the warm-up, so that full collections no longer walk the objects of
start-up.  Both work through a ``sitecustomize`` module that this script writes into its
temporary directory and puts first on the daemon's ``PYTHONPATH``; nothing in ccserver is
changed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccserver.testing import daemon as harness  # noqa: E402
from ccserver.testing.daemon import FileDaemon, daemon_env  # noqa: E402

CLIENTS = 32
USERNAME = "bench"
PASSWORD = "bench-password-0123"
TASK = {
    "application_container_description": {"image": "ccserver-test/app-noinput:1", "container_ram": 64},
    "input_files": [],
    "result_files": [],
}
QUERY = {"aggregate": [{"$match": {"state": 1}}, {"$limit": 100}]}
BATCH = 1000

# targets
SINGLE_RATE = 500.0
SINGLE_P99 = 0.050
BATCH_SECONDS = 1.0
QUERY_P99 = 0.050
PASSWORD_RATIO = 2.0


@dataclass(frozen=True)
class Sizes:
    single: int  # single submissions per single-submission phase
    batches: int  # sequential 1,000-task batches (phase b)
    nodes: int  # GET /nodes requests
    stored: int  # tasks in the store before the query phase
    queries: int  # POST /tasks/query requests
    serial_queries: int  # queries from one client (service time without queueing)
    phase_limit: float  # hard limit per phase, seconds


FULL = Sizes(single=8000, batches=20, nodes=8000, stored=100_000, queries=2000, serial_queries=100, phase_limit=60.0)
QUICK = Sizes(single=1500, batches=5, nodes=1500, stored=10_000, queries=500, serial_queries=30, phase_limit=15.0)


# --- diagnostics inside the daemon (only with --gc-log / --gc-freeze) --------------------------

#: written as sitecustomize.py into the temporary directory, which goes first on the daemon's
#: PYTHONPATH; Python imports it at start-up
DAEMON_HOOK = """\
import gc, os, signal, time

_log = os.environ.get("CCSERVER_BENCH_GC_LOG")
if _log:
    _out = open(_log, "a", buffering=1)
    _started = [0.0]

    def _gc_callback(phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            pause = (time.perf_counter() - _started[0]) * 1000
            _out.write("%.3f %.2f %d\\n" % (time.time(), pause, info["collected"]))

    gc.callbacks.append(_gc_callback)

if os.environ.get("CCSERVER_BENCH_GC_FREEZE"):
    def _freeze(signum, frame):
        gc.collect()
        gc.freeze()

    signal.signal(signal.SIGUSR2, _freeze)
"""


class GCLog:
    """The daemon's full collections, as the hook writes them: ``time pause_ms collected``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen = 0

    def take(self) -> str:
        """A summary of the collections since the last call; empty without --gc-log."""
        if self.path is None:
            return ""
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return "; daemon GC: no log"
        new, self.seen = lines[self.seen :], len(lines)
        pauses = [float(line.split()[1]) for line in new if len(line.split()) == 3]
        if not pauses:
            return "; daemon full GCs: 0"
        return (
            f"; daemon full GCs: {len(pauses)}, pause mean {sum(pauses) / len(pauses):.1f} ms, max {max(pauses):.1f} ms"
        )


GC_LOG = GCLog(None)


# --- a small, cheap HTTP/1.1 keep-alive client ------------------------------------------------


class HTTPError(Exception):
    pass


class Connection:
    """One keep-alive connection; requests are sent one after another (no pipelining)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader and self.writer
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None:
            body = await self.reader.readexactly(length)
        elif chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        else:
            raise HTTPError(f"answer without length: {head!r}")
        return status, body


def build_request(method: str, path: str, host: str, auth: str, body: bytes | None = None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        f"Authorization: Basic {auth}",
        "Connection: keep-alive",
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def basic(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


# --- measuring --------------------------------------------------------------------------------


def _ticks(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of a process and of its main (reactor) thread (Linux /proc)."""
    try:
        return _ticks(f"/proc/{pid}/stat"), _ticks(f"/proc/{pid}/task/{pid}/stat")
    except (OSError, IndexError, ValueError):
        return float("nan"), float("nan")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Result:
    name: str
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    daemon_cpu: float = 0.0
    reactor_cpu: float = 0.0
    client_cpu: float = 0.0
    timed_out: bool = False
    first_error: str = ""
    gc: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.wall if self.wall else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self, unit: str = "requests", per: int = 1) -> str:
        extra = f", {self.done * per / self.wall:,.0f} tasks/s" if per > 1 and self.wall else ""
        text = (
            f"{self.name}: {self.done} {unit} in {self.wall:.2f} s = {self.rate:,.1f}/s{extra}; "
            f"latency p50 {self.pct(50) * 1000:.1f} ms, p99 {self.pct(99) * 1000:.1f} ms, "
            f"max {max(self.latencies, default=float('nan')) * 1000:.1f} ms; "
            f"CPU daemon {self.daemon_cpu:.2f} s (reactor thread {self.reactor_cpu:.2f}), "
            f"generator {self.client_cpu:.2f} s"
        )
        text += self.gc
        if self.errors:
            text += f"; {self.errors} ERRORS (first: {self.first_error})"
        if self.timed_out:
            text += "; STOPPED AT TIME LIMIT"
        return text


async def drive(
    name: str,
    host: str,
    port: int,
    requests: list[bytes] | bytes,
    count: int,
    clients: int,
    limit: float,
    pid: int,
) -> Result:
    """Send ``count`` requests over ``clients`` keep-alive connections (each one in turn)."""
    result = Result(name)
    conns = [Connection(host, port) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    next_index = 0
    deadline = time.monotonic() + limit

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < count and time.monotonic() < deadline:
            i = next_index
            next_index += 1
            raw = requests if isinstance(requests, bytes) else requests[i % len(requests)]
            started = time.perf_counter()
            try:
                status, body = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, HTTPError, ValueError) as e:
                result.errors += 1
                result.first_error = result.first_error or repr(e)
                conn.close()
                conn.writer = None
                continue
            result.latencies.append(time.perf_counter() - started)
            if status == 200:
                result.done += 1
            else:
                result.errors += 1
                result.first_error = result.first_error or f"{status} {body[:200]!r}"

    GC_LOG.take()
    cpu0, own0, t0 = cpu_of(pid), own_cpu(), time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in conns)), limit + 30)
    except TimeoutError:
        result.timed_out = True
    result.wall = time.perf_counter() - t0
    cpu1 = cpu_of(pid)
    result.daemon_cpu, result.reactor_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    result.client_cpu = own_cpu() - own0
    result.gc = GC_LOG.take()
    result.timed_out = result.timed_out or (result.done + result.errors < count)
    for c in conns:
        c.close()
    return result


# --- setting up -------------------------------------------------------------------------------


def env_for(home: Path) -> dict[str, str]:
    return daemon_env(home, REPO)


def write_config(tmp: Path) -> Path:
    # the only node cannot be reached: it is reported dead, nothing is placed, tasks wait
    return harness.write_config(tmp)


def create_user(config: Path, env: dict[str, str]) -> bool:
    try:
        harness.create_user(config, USERNAME, PASSWORD, env)
    except harness.DaemonError as e:
        print(e, file=sys.stderr)
        return False
    return True


def get_json(host: str, port: int, path: str, auth: str) -> tuple[int, dict]:
    async def once() -> tuple[int, bytes]:
        conn = Connection(host, port)
        try:
            return await conn.request(build_request("GET", path, f"{host}:{port}", auth))
        finally:
            conn.close()

    status, body = asyncio.run(once())
    return status, json.loads(body)


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return f"{label}: load average {one:.2f} {five:.2f} {fifteen:.2f}; CPUs {os.cpu_count()} ({usable} usable)"


# --- the run ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


async def run(
    sizes: Sizes, host: str, port: int, token: str, pid: int, freeze: bool = False
) -> tuple[list[str], bool, bool]:
    """All phases; ``(check lines, every target met, every request answered cleanly)``."""
    where = f"{host}:{port}"
    by_token = basic(USERNAME, token)
    by_password = basic(USERNAME, PASSWORD)
    single = json.dumps(TASK).encode()
    batch = json.dumps({"tasks": [TASK] * BATCH}).encode()
    limit = sizes.phase_limit
    checks: list[str] = []
    ok = True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok = ok and passed
        checks.append(f"{verdict(passed)}  {text}")

    # warm-up: connections, imports and caches in the daemon
    warm = await drive(
        "warm-up", host, port, build_request("POST", "/tasks", where, by_token, single), 200, CLIENTS, limit, pid
    )
    if freeze:
        os.kill(pid, signal.SIGUSR2)
        await asyncio.sleep(1.0)
        print("daemon: gc.freeze() after the warm-up (--gc-freeze)", flush=True)

    # (a) single submissions with the token
    a = await drive(
        "(a) single POST /tasks, token",
        host,
        port,
        build_request("POST", "/tasks", where, by_token, single),
        sizes.single,
        CLIENTS,
        limit,
        pid,
    )
    print(a.line(), flush=True)

    # (b) 1,000-task batches, one at a time
    b = await drive(
        "(b) 1,000-task POST /tasks, 1 client",
        host,
        port,
        build_request("POST", "/tasks", where, by_token, batch),
        sizes.batches,
        1,
        limit,
        pid,
    )
    print(b.line("batches", BATCH), flush=True)

    # (c) GET /nodes
    c = await drive(
        "(c) GET /nodes", host, port, build_request("GET", "/nodes", where, by_token), sizes.nodes, CLIENTS, limit, pid
    )
    print(c.line(), flush=True)

    # (d) fill the store to sizes.stored tasks with batches from all clients, then query
    stored = warm.done + a.done + b.done * BATCH  # the tasks of the warm-up, (a) and (b)
    missing = max(0, sizes.stored - stored)
    fill_batches = -(-missing // BATCH)
    fill = await drive(
        f"(d) fill: 1,000-task POST /tasks, {CLIENTS} clients",
        host,
        port,
        build_request("POST", "/tasks", where, by_token, batch),
        fill_batches,
        CLIENTS,
        max(limit, 120.0),
        pid,
    )
    stored += fill.done * BATCH
    print(fill.line("batches", BATCH), flush=True)
    print(f"    tasks stored: about {stored:,}", flush=True)
    query = build_request("POST", "/tasks/query", where, by_token, json.dumps(QUERY).encode())
    d1 = await drive("(d) POST /tasks/query, 1 client", host, port, query, sizes.serial_queries, 1, limit, pid)
    print(d1.line(), flush=True)
    d = await drive(f"(d) POST /tasks/query, {CLIENTS} clients", host, port, query, sizes.queries, CLIENTS, limit, pid)
    print(d.line(), flush=True)
    # the same query again and again is answered from the daemon's query cache (nothing is
    # written meanwhile); distinct pipelines ($skip n) show the cost of running each one
    distinct = [
        build_request(
            "POST",
            "/tasks/query",
            where,
            by_token,
            json.dumps({"aggregate": [*QUERY["aggregate"][:1], {"$skip": n}, *QUERY["aggregate"][1:]]}).encode(),
        )
        for n in range(sizes.queries)
    ]
    dd = await drive(
        f"(d) POST /tasks/query, distinct pipelines (no cache reuse), {CLIENTS} clients",
        host,
        port,
        distinct,
        sizes.queries,
        CLIENTS,
        limit,
        pid,
    )
    print(dd.line(), flush=True)

    # (e) single submissions with the password on every request
    e = await drive(
        "(e) single POST /tasks, password",
        host,
        port,
        build_request("POST", "/tasks", where, by_password, single),
        sizes.single,
        CLIENTS,
        limit,
        pid,
    )
    print(e.line(), flush=True)

    def clean(r: Result) -> bool:
        return not r.errors and not r.timed_out

    clean_run = all(clean(r) for r in (warm, a, b, c, fill, d1, d, dd, e)) and stored >= sizes.stored
    check(
        a.rate >= SINGLE_RATE and a.pct(99) < SINGLE_P99,
        f"single submissions (token): {a.rate:,.0f}/s (>= {SINGLE_RATE:.0f}), "
        f"p99 {a.pct(99) * 1000:.1f} ms (< {SINGLE_P99 * 1000:.0f})",
    )
    check(
        max(b.latencies, default=99) < BATCH_SECONDS,
        f"1,000-task batch: p50 {b.pct(50) * 1000:.0f} ms, max {max(b.latencies, default=0) * 1000:.0f} ms "
        f"(< {BATCH_SECONDS * 1000:.0f})",
    )
    check(
        d.pct(99) < QUERY_P99,
        f"query over {stored:,} tasks, {CLIENTS} clients: p99 {d.pct(99) * 1000:.1f} ms (< {QUERY_P99 * 1000:.0f})",
    )
    checks.append(
        f"INFO  distinct queries (no cache reuse), {CLIENTS} clients: {dd.rate:,.0f}/s, p99 {dd.pct(99) * 1000:.1f} ms"
    )
    ratio = a.rate / e.rate if e.rate else float("inf")
    check(
        ratio <= PASSWORD_RATIO,
        f"password on every request: {e.rate:,.0f}/s, token/password = {ratio:.2f} (<= {PASSWORD_RATIO:.0f})",
    )
    checks.append(
        f"{verdict(clean_run)}  run complete: every request answered 200 within the time limits, "
        f"{stored:,} tasks stored (>= {sizes.stored:,})"
    )
    return checks, ok, clean_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (10,000 stored tasks, < 1 minute)")
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under cProfile; statistics to FILE")
    parser.add_argument("--gc-log", action="store_true", help="report the daemon's full garbage collections")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="experiment: gc.freeze() in the daemon after the warm-up"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL

    print(load_line("start"), flush=True)
    started = time.monotonic()
    own_start = own_cpu()
    with tempfile.TemporaryDirectory(prefix="ccserver-bench-api-") as name:
        tmp = Path(name)
        (tmp / "home").mkdir()
        env = env_for(tmp / "home")
        config = write_config(tmp)
        if not create_user(config, env):
            return 2
        if args.gc_log or args.gc_freeze:
            hooks = tmp / "hooks"
            hooks.mkdir()
            (hooks / "sitecustomize.py").write_text(DAEMON_HOOK)
            env["PYTHONPATH"] = str(hooks) + os.pathsep + env["PYTHONPATH"]
            if args.gc_log:
                env["CCSERVER_BENCH_GC_LOG"] = str(tmp / "gc.log")
                GC_LOG.path = tmp / "gc.log"
            if args.gc_freeze:
                env["CCSERVER_BENCH_GC_FREEZE"] = "1"
        daemon_args = ["--config", str(config)]
        profile = str(Path(args.profile).resolve()) if args.profile else None
        daemon = FileDaemon(daemon_args, env=env, cwd=str(tmp), log=tmp / "daemon.log", profile=profile)
        with daemon:
            assert daemon.process
            pid = daemon.process.pid
            _, host, port = daemon.listening(timeout=60)[0]
            daemon.done_following.set()
            status, answer = get_json(host, port, "/token", basic(USERNAME, PASSWORD))
            if status != 200:
                print(f"GET /token answered {status}: {answer}", file=sys.stderr)
                return 2
            token = answer["token"]
            status, nodes = get_json(host, port, "/nodes", basic(USERNAME, token))
            dead = [n["name"] for n in nodes.get("dead_nodes", [])]
            healthy = [n["name"] for n in nodes.get("healthy_nodes", [])]
            print(f"daemon pid {pid} on {host}:{port}; nodes: healthy {healthy}, dead {dead}", flush=True)
            if status != 200 or healthy:
                print("the unreachable node must be the only one, and not healthy", file=sys.stderr)
                return 2
            try:
                checks, ok, clean_run = asyncio.run(run(sizes, host, port, token, pid, args.gc_freeze))
            finally:
                daemon_cpu = cpu_of(pid)[0]
                code = daemon.stop(signal.SIGTERM, timeout=60)
            if code != 0:
                print(f"daemon exited {code}:\n{daemon.output[-3000:]}", file=sys.stderr)
                clean_run = False
            if "Traceback" in daemon.output:
                print("the daemon logged a traceback:", file=sys.stderr)
                print(daemon.output[daemon.output.index("Traceback") - 500 :][:3000], file=sys.stderr)
                clean_run = False
    print(
        f"total: {time.monotonic() - started:.1f} s; CPU daemon {daemon_cpu:.1f} s, "
        f"generator {own_cpu() - own_start:.1f} s",
        flush=True,
    )
    print(load_line("end"))
    print("targets:")
    for line in checks:
        print("  " + line)
    if args.profile:
        print(f"daemon profile: {args.profile} (python -m pstats {args.profile})")
    if not clean_run:
        return 2
    if args.quick:
        print("(--quick: the targets are meant for the full run; a missed one does not fail this run)")
        return 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
