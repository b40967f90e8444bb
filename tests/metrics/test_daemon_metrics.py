"""``GET /metrics`` of a real daemon (``twistd -n ccserver`` as a process) on the real Docker
engine: the numbers move as a task runs, the access rule holds, and the endpoint can live on
a listener of its own.  Answers are parsed with ``prometheus_client``'s own parser."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccserver.cluster.engine import bridge_gateway
from ccserver.config import NodeConfig
from ccserver.testing.daemon import Daemon, daemon_env
from tests.metrics.tiny_registry import TinyRegistry

REPO = Path(__file__).resolve().parents[2]
NOINPUT_IMAGE = "ccserver-test/app-noinput:1"
LOCAL = NodeConfig(name="local", base_url="unix:///var/run/docker.sock", tls=None)
USERS = {"alice": "alice-pw-metrics-1", "boss": "boss-pw-metrics-1"}

Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture(scope="module")
def gateway() -> str:
    client = docker.from_env(timeout=60)
    try:
        client.images.get(NOINPUT_IMAGE)  # built by scripts/build-test-images; never pulled
    finally:
        client.close()
    return bridge_gateway(LOCAL, 10)


def write_config(tmp_path: Path, gateway: str, metrics: str = "", pull_policy: str = "never") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        "[server]\n"
        f"listen = ['tcp:0:interface={gateway}']\n"
        f"data_dir = '{tmp_path / 'data'}'\n"
        "scheduling_interval_seconds = 1\n"
        "[docker]\n"
        f"pull_policy = '{pull_policy}'\n"
        "[docker.nodes.local]\n"
        "base_url = 'unix:///var/run/docker.sock'\n"
        "[defaults.data_container_description]\n"
        f"image = '{NOINPUT_IMAGE}'\n"
        "[metrics]\n"
        "refresh_seconds = 0.5\n" + metrics
    )
    env = daemon_env(tmp_path, REPO)
    admin = str(Path(sys.executable).with_name("ccserver-admin"))
    for name, password in USERS.items():
        extra = ["--admin"] if name == "boss" else []
        subprocess.run(
            [admin, "--config", str(config), "create-user", name, *extra, "--password-stdin"],
            input=password + "\n",
            text=True,
            env=env,
            check=True,
            timeout=60,
            capture_output=True,
        )
    return config


@pytest.fixture
def daemon_factory(tmp_path: Path, gateway: str) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(metrics: str = "", pull_policy: str = "never") -> Daemon:
        config = write_config(tmp_path, gateway, metrics, pull_policy)
        d = Daemon(["--config", str(config)], env=daemon_env(tmp_path, REPO), cwd=str(tmp_path)).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()
        assert "Traceback" not in d.output, d.output


def request(
    url: str, user: str | None = None, body: Any = None, password: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if user is not None:
        secret = password if password is not None else USERS[user]
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def scrape(url: str, user: str | None = "boss") -> Samples:
    status, body, headers = request(url, user)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def wait_for(get: Callable[[], Samples], ok: Callable[[Samples], bool], timeout: float, what: str) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = get()
        if ok(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)


def test_metrics_follow_a_task_through_its_life(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("")  # the defaults: access = "admin", on the API's listeners
    url = d.url()
    metrics = url + "/metrics"
    before = wait_for(
        lambda: scrape(metrics),
        lambda s: value(s, "ccserver_node_healthy", node="local") == 1,
        60,
        "the node to be healthy",
    )
    assert value(before, "ccserver_tasks", state="success") == 0
    assert value(before, "ccserver_task_queue_wait_seconds_count") == 0

    task = {
        "application_container_description": {"image": NOINPUT_IMAGE, "container_ram": 128},
        "input_files": [],
        "result_files": [],
    }
    status, body, _ = request(url + "/tasks", "alice", task)
    assert status == 200, body
    task_id = json.loads(body)["_id"]

    # submitted: it is counted among the live tasks first, then placed (the queue wait is
    # observed), then it succeeds and its run time is observed
    seen_live = wait_for(
        lambda: scrape(metrics),
        lambda s: sum(value(s, "ccserver_tasks", state=x) for x in ("waiting", "processing", "success")) == 1,
        60,
        "the task in the state gauges",
    )
    assert value(seen_live, "ccserver_tasks", state="failed") == 0
    done = wait_for(
        lambda: scrape(metrics), lambda s: value(s, "ccserver_tasks", state="success") == 1, 180, "the task to succeed"
    )
    assert value(done, "ccserver_task_queue_wait_seconds_count") == 1
    assert value(done, "ccserver_task_run_seconds_count", outcome="success") == 1
    assert value(done, "ccserver_containers", kind="application", state="success") == 1
    assert value(done, "ccserver_callbacks_total", kind="application", type="3", outcome="accepted") == 1
    assert value(done, "ccserver_docker_call_seconds_count", operation="create_container", node="local") >= 1
    assert value(done, "ccserver_docker_call_seconds_count", operation="start_container", node="local") >= 1
    assert value(done, "ccserver_scheduling_round_seconds_count") >= 1
    assert value(done, "ccserver_launches_in_flight") == 0
    assert value(done, "ccserver_node_ram_total_bytes", node="local") > 0
    assert value(done, "ccserver_store_operation_seconds_count", operation="insert_many", collection="tasks") >= 1
    # HTTP requests by route template: the submission, the callbacks, the scrapes
    assert value(done, "ccserver_http_requests_total", method="POST", route="/tasks", status="200") == 1
    assert value(done, "ccserver_http_requests_total", route="/application-containers/callback", status="200") == 4
    assert value(done, "ccserver_http_requests_total", method="GET", route="/metrics", status="200") >= 3
    assert value(done, "ccserver_http_request_seconds_count", method="POST", route="/tasks") == 1

    # a path with an id in it is counted under its template's name, never under the path
    request(url + f"/tasks/{task_id}/no-such-thing", "alice")
    after = scrape(metrics)
    assert value(after, "ccserver_http_requests_total", route="unmatched", status="404") == 1
    # no label anywhere holds a task or container id or a user name
    # (one listing call: containers removed meanwhile are not looked up one by one)
    names = {n.lstrip("/") for c in docker.from_env().api.containers(all=True) for n in c.get("Names") or ()}
    ids = {task_id} | {name for name in names if len(name) == 24}
    for name, labels, _ in after:
        for label in labels.values():
            assert not any(i in label for i in ids), (name, labels)
            assert label not in USERS, (name, labels)


def test_admin_access_refuses_anonymous_and_standard_users(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("access = 'admin'\n")
    metrics = d.url() + "/metrics"
    status, body, headers = request(metrics)
    assert status == 401
    assert "www-authenticate" not in {k.lower() for k in headers}
    assert json.loads(body)["error"]
    status, body, _ = request(metrics, "alice")
    assert (status, json.loads(body)) == (403, {"error": "only admins may read the metrics"})
    status, body, _ = request(metrics, "boss", password="wrong")
    assert status == 401
    # an admin, with the password and then with a token
    assert value(scrape(metrics), "ccserver_http_requests_total", route="/metrics", status="401") == 2
    status, body, _ = request(d.url() + "/token", "boss")
    token = json.loads(body)["token"]
    assert request(metrics, "boss", password=token)[0] == 200


def test_a_listener_of_its_own_serves_the_metrics_and_the_api_port_does_not(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory("access = 'open'\nlisten = ['tcp:0:interface=127.0.0.1']\n")
    found = d.wait_for(r"metrics: listening on tcp:127\.0\.0\.1:(\d+)")
    own = f"http://127.0.0.1:{found.group(1)}"
    api = d.url()
    assert not api.endswith(f":{found.group(1)}")
    # open: no credentials needed
    samples = scrape(own + "/metrics", user=None)
    assert value(samples, "ccserver_tasks", state="waiting") == 0
    # the API's listener knows no /metrics, and the metrics listener nothing else
    status, body, _ = request(api + "/metrics", "boss")
    assert (status, json.loads(body)) == (404, {"error": "no such endpoint"})
    status, body, _ = request(own + "/tasks", "boss")
    assert status == 404
    assert request(api + "/", None)[0] == 200
    status, body, _ = request(own + "/metrics", None, {"x": 1})
    assert status == 405
    # the API's answers are counted all the same, and shown on the metrics listener
    samples = scrape(own + "/metrics", user=None)
    assert value(samples, "ccserver_http_requests_total", route="/", method="GET", status="200") == 1
    assert value(samples, "ccserver_http_requests_total", route="unmatched", status="404") >= 1


def test_a_metrics_listener_that_cannot_listen_stops_the_start(tmp_path: Path, gateway: str) -> None:
    from ccserver.testing import daemon as daemons

    config = write_config(tmp_path, gateway, "listen = ['tcp:notaport']\n")
    result = daemons.run(["--config", str(config)], env=daemon_env(tmp_path, REPO))
    assert result.returncode == 1
    assert result.stderr.startswith("ccserver: metrics.listen: cannot listen on 'tcp:notaport'")


def test_image_pulls_are_counted_with_their_bytes(daemon_factory: Callable[..., Daemon]) -> None:
    registry = TinyRegistry("metrics/tiny-" + uuid.uuid4().hex[:10])
    engine = docker.from_env(timeout=60)
    try:
        d = daemon_factory("", pull_policy="if-not-present")
        url = d.url()
        metrics = url + "/metrics"
        missing = f"127.0.0.1:{registry.port}/metrics/missing-{uuid.uuid4().hex[:10]}:1"
        for image in (registry.image, missing):
            task = {
                "application_container_description": {"image": image, "container_ram": 64},
                "input_files": [],
                "result_files": [],
            }
            status, body, _ = request(url + "/tasks", "alice", task)
            assert status == 200, body
        done = wait_for(
            lambda: scrape(metrics),
            lambda s: (
                value(s, "ccserver_image_pulls_total", node="local", outcome="pulled") == 1
                and value(s, "ccserver_image_pulls_total", node="local", outcome="failed") >= 1
            ),
            120,
            "one pull to succeed and one to fail",
        )
        assert value(done, "ccserver_image_pull_bytes_total", node="local") == len(registry.layer)
        assert value(done, "ccserver_image_pull_seconds_count", node="local") == 1
        assert value(done, "ccserver_docker_call_seconds_count", operation="ensure_image", node="local") >= 2
    finally:
        for image in (registry.image,):
            try:
                engine.images.remove(image, force=True)
            except docker.errors.ImageNotFound:
                pass
        engine.close()
        registry.close()
