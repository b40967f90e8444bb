"""With no configuration the daemon finds the Docker bridge and containers can call it.

Runs against the real local dockerd (started by scripts/test) and the locally built
``ccserver-test/busybox:1`` image (scripts/build-test-images); nothing is pulled.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import docker
import pytest

from ccserver import __version__
from ccserver.testing.daemon import Daemon
from tests.test_daemon import env_for, get

IMAGE = "ccserver-test/busybox:1"


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    client = docker.from_env(timeout=30)
    client.ping()
    client.images.get(IMAGE)  # built by scripts/build-test-images, never pulled
    yield client
    client.close()


def test_unconfigured_daemon_is_reachable_from_a_container(tmp_path: Path, engine: docker.DockerClient) -> None:
    with Daemon([], env=env_for(tmp_path), cwd=str(tmp_path)) as d:
        match = d.wait_for(r"containers will call back at http://([0-9.]+):5000", timeout=30)
        gateway = match.group(1)
        assert gateway != "127.0.0.1"
        assert ("tcp", "127.0.0.1", 5000) in d.listening(2)
        assert ("tcp", gateway, 5000) in d.listening(2)
        assert get("http://127.0.0.1:5000/") == (200, {"version": __version__})
        # the verdict is the container's exit status (containers.run raises on a non-zero one):
        # the logs of a container this short-lived can come back empty
        expected = json.dumps({"version": __version__})
        script = f"[ \"$(wget -q -O - http://{gateway}:5000/)\" = '{expected}' ]"
        engine.containers.run(IMAGE, ["sh", "-c", script], remove=True, network_mode="bridge")
        with pytest.raises(docker.errors.ContainerError):  # and the check can fail
            engine.containers.run(IMAGE, ["sh", "-c", script.replace("version", "versio")], remove=True)
        assert d.stop(signal.SIGTERM) == 0


def test_unreachable_engine_falls_back_to_loopback(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-such-docker.sock"
    with Daemon(["--listen", "tcp:0:interface=127.0.0.1"], env=env, cwd=str(tmp_path)) as d:
        d.wait_for("could not ask Docker node local")
        d.wait_for(r"containers will call back at http://127\.0\.0\.1:\d+")
        assert get(d.url() + "/")[0] == 200
        assert d.stop() == 0
