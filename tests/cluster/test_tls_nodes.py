"""Nodes behind mutual TLS ([docker.nodes.NAME.tls]: verify, client_cert, assert_hostname).

One engine listens on 127.0.0.1 and 127.0.0.2 with a certificate naming 127.0.0.1 and
``ccserver-engine.test``; several nodes reach it with different settings.  TLS does not touch
the store, so these run on the embedded backend only.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest_twisted
from bson import ObjectId

from ccserver import states
from ccserver.cluster.engine import make_client
from ccserver.config import NodeConfig, NodeTLS
from tests.cluster.conftest import Engines, MakeCluster, tls_node
from tests.cluster.engines import ENGINE_HOSTNAME
from tests.e2e.harness import NOINPUT_IMAGE, app_task, wait_for


@pytest_twisted.ensureDeferred
async def test_tls_nodes_work_and_wrong_settings_are_refused_clearly(
    cluster: MakeCluster, running_engines: Engines
) -> None:
    e, tls = running_engines.tls_engine, running_engines.tls
    nodes = {
        # the certificate names 127.0.0.1: the default hostname check passes
        "tls": tls_node(e, "127.0.0.1", tls.ca, tls),
        # 127.0.0.2 is not in the certificate: refused by default ...
        "other-name": tls_node(e, "127.0.0.2", tls.ca, tls),
        # ... accepted when only the CA is checked, or when the name to check is given
        "no-hostname-check": tls_node(e, "127.0.0.2", tls.ca, tls, assert_hostname=False),
        "named": tls_node(e, "127.0.0.2", tls.ca, tls, assert_hostname=ENGINE_HOSTNAME),
        "wrong-name": tls_node(e, "127.0.0.2", tls.ca, tls, assert_hostname="somebody-else.test"),
        # a CA that did not sign the engine's certificate
        "wrong-ca": tls_node(e, "127.0.0.1", running_engines.other_ca, tls),
        # no client certificate: the engine (--tlsverify) refuses us
        "no-client-cert": {"base_url": e.tcp_url("127.0.0.1"), "tls": {"verify": tls.ca}},
        # TLS engine, plain client
        "plain": {"base_url": e.tcp_url("127.0.0.1")},
    }
    good = {"tls", "no-hostname-check", "named"}
    harness = await cluster("embedded", nodes, wait_healthy=False)
    status = await wait_for(
        lambda: harness.get("/nodes"),
        lambda r: (
            len(r[1]["healthy_nodes"]) + len(r[1]["dead_nodes"]) == len(nodes)
            and all(d["description"] != "not checked yet" for d in r[1]["dead_nodes"])
        ),
        30,
        "every node to be checked",
    )
    code, body = status
    assert code == 200
    assert {n["name"] for n in body["healthy_nodes"]} == good
    dead = {d["name"]: d["description"] for d in body["dead_nodes"]}
    assert set(dead) == set(nodes) - good
    assert "TLS error" in dead["other-name"] and "not valid for" in dead["other-name"], dead["other-name"]
    assert "127.0.0.2" in dead["other-name"] and "assert_hostname" in dead["other-name"]
    assert "TLS error" in dead["wrong-name"] and "somebody-else.test" in dead["wrong-name"], dead["wrong-name"]
    assert "TLS error" in dead["wrong-ca"] and "tls.verify" in dead["wrong-ca"], dead["wrong-ca"]
    assert running_engines.other_ca in dead["wrong-ca"]
    assert "TLS error" in dead["no-client-cert"] and "client certificate" in dead["no-client-cert"], dead
    assert "expects TLS" in dead["plain"], dead["plain"]
    # the dead nodes are stored in dead_nodes, as 0.10 did
    stored = await harness.root.store.find("dead_nodes", {})
    assert {d["name"] for d in stored} == set(nodes) - good

    # tasks run on the TLS nodes
    tasks = []
    for _ in range(3):
        task = app_task(harness.archive_url, uuid.uuid4().hex[:10], [], results=["parameters"])
        task["application_container_description"]["image"] = NOINPUT_IMAGE
        tasks.append(task)
    code, answer = await harness.post("/tasks", {"tasks": tasks})
    assert code == 200, answer
    for entry in answer["tasks"]:
        done = await harness.wait_task(entry["_id"], states.END_STATES, timeout=120)
        assert done["state"] == states.SUCCESS, done["transitions"]
        app = await harness.root.store.find_one("application_containers", {"task_id": ObjectId(entry["_id"])})
        assert app["cluster_node"] in good


def test_make_client_tls_semantics(running_engines: Engines, monkeypatch: Any) -> None:
    """The settings map onto docker-py as 0.10 documented, whatever REQUESTS_CA_BUNDLE says."""
    e, tls = running_engines.tls_engine, running_engines.tls
    # a CA bundle in the environment (many systems set one) must not replace tls.verify
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", running_engines.other_ca)

    def node(host: str, assert_hostname: Any) -> NodeConfig:
        return NodeConfig(
            name="n",
            base_url=e.tcp_url(host),
            tls=NodeTLS(
                verify=tls.ca,
                client_cert=(tls.client_cert, tls.client_key),
                assert_hostname=assert_hostname,
                ca_cert=None,
            ),
        )

    for host, assert_hostname in (
        ("127.0.0.1", None),
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("127.0.0.2", ENGINE_HOSTNAME),
    ):
        client = make_client(node(host, assert_hostname), 10)
        try:
            assert client.ping(), (host, assert_hostname)
        finally:
            client.close()
    # docker-machine style: verify = true with ca_cert given separately
    config = NodeConfig(
        name="n",
        base_url=e.tcp_url(),
        tls=NodeTLS(verify=True, client_cert=(tls.client_cert, tls.client_key), assert_hostname=None, ca_cert=tls.ca),
    )
    client = make_client(config, 10)
    try:
        assert client.ping()
    finally:
        client.close()
