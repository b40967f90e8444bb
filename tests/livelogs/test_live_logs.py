"""Live logs through a real daemon on the real Docker engine: lines of a running container
appear before it ends, ``since`` and ``tail`` select, another user learns nothing, a long
output is cut to the last ``tail_bytes`` and says so, and the follower lets go at the end."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.livelogs.harness import OTHER, OTHER_PASSWORD, LogsCluster
from tests.resilience.harness import wait_until

TAIL_BYTES = 2048
#: prints a line a second on stdout (and one on stderr), 15 times
TICKER = 'i=0; while [ $i -lt 15 ]; do i=$((i+1)); echo "tick $i"; echo "warn $i" >&2; sleep 1; done'
#: prints about 3.9 kB (more than TAIL_BYTES) and lingers a little
CHATTY = "sleep 2; seq 1 1000; sleep 2"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, gateway: str) -> Iterator[LogsCluster]:
    c = LogsCluster(tmp_path_factory.mktemp("livelogs"), gateway, logs=f"tail_bytes = {TAIL_BYTES}\n")
    try:
        c.start()
        yield c
    finally:
        c.close()


def texts(answer: dict, stream: str = "stdout") -> list[str]:
    return [line["text"] for line in answer["lines"] if line["stream"] == stream]


def test_lines_of_a_running_container_appear_before_it_ends(cluster: LogsCluster) -> None:
    task_id = cluster.submit(TICKER)
    answer = wait_until(
        lambda: cluster.logs(task_id), lambda a: len(texts(a)) >= 3, 60, "three lines through the endpoint"
    )
    assert answer["running"] is True and answer["truncated"] is False
    assert answer["container_id"] and answer["task_id"] == task_id
    assert texts(answer)[:3] == ["tick 1", "tick 2", "tick 3"]
    assert "warn 1" in texts(answer, "stderr")
    # still running: the task has not ended
    code, task = cluster.call("POST", "/tasks/query", {"aggregate": [{"$match": {"_id": task_id}}]})
    assert code == 200 and task["tasks"][0]["state"] == 2, task
    # oldest first, with the engine's times
    times = [line["time"] for line in answer["lines"]]
    assert times == sorted(times) and all(t > 1.7e9 for t in times)

    # since: only lines after that time; tail: only the last N
    first = next(line for line in answer["lines"] if line["text"] == "tick 1")
    later = cluster.logs(task_id, f"?since={first['time']}")
    assert "tick 1" not in texts(later) and "tick 2" in texts(later)
    assert all(line["time"] > first["time"] for line in later["lines"])
    last = cluster.logs(task_id, "?tail=1")
    assert len(last["lines"]) == 1
    assert last["lines"][0]["time"] >= answer["lines"][-1]["time"]
    both = cluster.logs(task_id, f"?since={first['time']}&tail=2")
    assert len(both["lines"]) == 2 and all(line["time"] > first["time"] for line in both["lines"])

    # another user: as if the task did not exist; bad parameters: 400 naming them
    code, refused = cluster.get_as(f"/tasks/{task_id}/logs", OTHER, OTHER_PASSWORD)
    assert code == 404 and "error" in refused
    code, unknown = cluster.call("GET", "/tasks/" + "0" * 24 + "/logs")
    assert code == 404 and "error" in unknown
    for query, key in (("?tail=-1", "tail"), ("?tail=x", "tail"), ("?since=soon", "since"), ("?since=nan", "since")):
        code, bad = cluster.call("GET", f"/tasks/{task_id}/logs{query}")
        assert code == 400 and key in bad["error"], (query, code, bad)

    # the end: every line, not running any more, and the follower let go of its connection
    done = wait_until(lambda: cluster.logs(task_id), lambda a: not a["running"], 90, "the container to end")
    assert texts(done) == [f"tick {i}" for i in range(1, 16)]
    assert texts(done, "stderr") == [f"warn {i}" for i in range(1, 16)]
    assert cluster.daemon is not None
    match = cluster.daemon.wait_for(
        rf"stopped following container {done['container_id']} \(it ended\); following (\d+), (\d+) log connections",
        timeout=30,
    )
    assert match.group(1) == "0" and match.group(2) == "0"
    # the tail outlives the follower: it is kept in the container's document
    apps = cluster.query(
        "application-containers", [{"$match": {"_id": done["container_id"]}}, {"$project": {"log_tail": 1}}]
    )
    kept = apps[0]["log_tail"]
    assert [line["text"] for line in kept["lines"] if line["stream"] == "stdout"][-1] == "tick 15"


def test_output_longer_than_the_tail_is_cut_and_says_so(cluster: LogsCluster) -> None:
    task_id = cluster.submit(CHATTY)
    done = wait_until(
        lambda: cluster.logs(task_id),
        lambda a: not a["running"] and a["lines"],
        90,
        "the chatty container to end with its lines",
    )
    assert done["truncated"] is True
    numbers = texts(done)
    assert numbers[-1] == "1000"
    assert "1" not in numbers and "100" not in numbers and int(numbers[0]) > 400
    assert sum(len(n) + 1 for n in numbers) <= TAIL_BYTES
    assert numbers == [str(i) for i in range(int(numbers[0]), 1001)]  # the last bytes, none missing


def test_the_daemon_log_names_no_open_connection_at_the_end(cluster: LogsCluster) -> None:
    assert cluster.daemon is not None
    started = re.findall(r"following the output of container (\w+)", cluster.daemon.output)
    stopped = re.findall(r"stopped following container (\w+) \(it ended\)", cluster.daemon.output)
    assert started and sorted(set(started)) == sorted(set(stopped))
