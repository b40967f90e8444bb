"""Fixtures of the live logs tests (as the resilience ones)."""

from __future__ import annotations

import docker
import pytest

from ccserver.cluster.engine import bridge_gateway
from ccserver.config import NodeConfig


@pytest.fixture(scope="module")
def gateway() -> str:
    client = docker.from_env(timeout=30)
    try:
        client.images.get("ccserver-test/app-noinput:1")  # built by scripts/build-test-images
    finally:
        client.close()
    return bridge_gateway(NodeConfig(name="local", base_url="unix:///var/run/docker.sock", tls=None), 10)
