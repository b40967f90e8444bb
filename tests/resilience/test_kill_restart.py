"""``kill -9`` of the real daemon at five moments of a 100-task run, then a restart on the same
store: every task ends and succeeds, with exactly one successful application container, its
result arrives, and no container is left behind (docs/resilience.rst).

Each moment has its own trigger, watched from outside the daemon:

* ``submission``: 20 batches of 5 tasks from 4 clients; killed once 4 answers arrived (the
  other requests are in flight).  Answered tasks must exist; unanswered ones are either fully
  stored or not at all, and the test submits the missing ones after the restart.
* ``scheduling``: killed as soon as the first application container documents exist (the
  placement round is writing them).
* ``container start``: killed once 10 of the containers exist in Docker.
* ``callbacks``: killed once 10 application containers have sent a callback.
* ``result upload``: the archive answers uploads after 0.5 s; killed once 10 results arrived.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ccserver.testing.ferretdb import FerretDB
from tests.resilience.harness import Cluster, wait_until

TASKS = 100
RUN_TIMEOUT = 150.0


@pytest.fixture
def make_cluster(tmp_path: Path, gateway: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(backend: str, **kwargs: Any) -> Cluster:
        uri = request.getfixturevalue("ferretdb").uri if backend == "ferretdb" else None
        cluster = Cluster(tmp_path, gateway, uri, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(cluster.output()[-20000:])
        cluster.close()


def submit_batches(c: Cluster, batches: int, size: int, tags: list[str]) -> list[tuple[int, Any]]:
    body = [{"tasks": [c.task(tags[b * size + i]) for i in range(size)]} for b in range(batches)]
    return [c.call("POST", "/tasks", b) for b in body]


def app_docs(c: Cluster) -> list[dict[str, Any]]:
    return c.query("application-containers", [{"$project": {"callbacks.callback_type": 1, "state": 1}}])


def kill_during_submission(c: Cluster) -> set[str]:
    """Returns the ids of the tasks whose submission was answered."""
    tags = [uuid.uuid4().hex[:12] for _ in range(TASKS)]
    answered: list[Any] = []
    lock = threading.Lock()

    def one(b: int) -> None:
        body = {"tasks": [c.task(tags[b * 5 + i]) for i in range(5)]}
        try:
            code, answer = c.call("POST", "/tasks", body, timeout=10)
        except OSError:
            return  # the daemon was killed under this request: no answer
        if code == 200:
            with lock:
                answered.append(answer)

    pool = ThreadPoolExecutor(4)
    futures = [pool.submit(one, b) for b in range(TASKS // 5)]
    wait_until(lambda: len(answered), lambda n: n >= 4, 30, "4 answered submissions", interval=0.005)
    c.kill()
    for f in futures:
        f.result(timeout=30)
    pool.shutdown()
    return {t["_id"] for a in answered for t in a["tasks"]}


TRIGGERS: dict[str, Callable[[Cluster], bool]] = {
    "scheduling": lambda c: len(c.query("application-containers", [{"$project": {"_id": 1}}])) > 0,
    "container start": lambda c: len(c.our_containers()) >= 10,
    "callbacks": lambda c: sum(1 for a in app_docs(c) if a.get("callbacks")) >= 10,
    "result upload": lambda c: c.archive.count() >= 10,
}
MOMENTS = ["submission", *TRIGGERS]


def run(c: Cluster, moment: str) -> None:
    began = time.monotonic()
    c.start()
    answered: set[str] = set()
    if moment == "submission":
        answered = kill_during_submission(c)
    else:
        tags = [uuid.uuid4().hex[:12] for _ in range(TASKS)]
        for code, answer in submit_batches(c, 4, TASKS // 4, tags):
            assert code == 200, answer
        trigger = TRIGGERS[moment]
        wait_until(lambda: trigger(c), bool, 90, f"the moment '{moment}'", interval=0.02)
        c.kill()
    killed_at = time.monotonic()
    c.start()
    print(f"restarted {time.monotonic() - killed_at:.1f} s after the kill")
    if moment == "submission":
        stored = {t["_id"] for t in c.query("tasks", [{"$project": {"_id": 1}}])}
        assert answered <= stored, "an answered submission was lost"
        missing = TASKS - len(stored)
        if missing:
            tags = [uuid.uuid4().hex[:12] for _ in range(missing)]
            code, answer = c.call("POST", "/tasks", {"tasks": [c.task(t) for t in tags]})
            assert code == 200, answer
    tasks = c.wait_all_ended(RUN_TIMEOUT)
    print(f"all ended {time.monotonic() - killed_at:.1f} s after the kill, {time.monotonic() - began:.1f} s in all")
    assert len(tasks) == TASKS
    c.check_all_succeeded_once(tasks)
    output = c.output()
    (c.tmp / "daemon.log").write_text(output)
    print(f"daemon output: {c.tmp / 'daemon.log'}")
    assert "Traceback" not in output, output[output.index("Traceback") - 2000 :][:6000]


@pytest.mark.parametrize("moment", MOMENTS)
def test_kill_and_restart_embedded(make_cluster: Callable[..., Cluster], moment: str) -> None:
    c = make_cluster("embedded", archive_delay=0.5 if moment == "result upload" else 0.0)
    run(c, moment)


@pytest.mark.parametrize("moment", ["submission", "callbacks"])
def test_kill_and_restart_ferretdb(make_cluster: Callable[..., Cluster], moment: str, ferretdb: FerretDB) -> None:
    c = make_cluster("ferretdb")
    run(c, moment)
