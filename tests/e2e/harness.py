"""An in-process ccserver on the real Docker engine, and a small data archive for it.

The daemon runs under the test reactor with a real store, real sockets and the local dockerd;
containers reach it, and the archive, at the Docker bridge gateway.  The archive serves input
files, receives result files and notifications, and counts downloads.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import docker
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ccserver.cluster.docker_ops import DAEMON_LABEL, KIND_LABEL

APP_IMAGE = "ccserver-test/app:1"
NOINPUT_IMAGE = "ccserver-test/app-noinput:1"


class Archive(Resource):
    """GET /inputs/NAME, PUT|POST /results/NAME, POST /notify."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, bytes] = {}
        self.downloads: dict[str, int] = {}
        self.results: dict[str, bytes] = {}
        self.notifications: list[dict[str, Any]] = []
        self.notification_auth: list[str | None] = []
        #: inputs answered only after this many seconds
        self.delays: dict[str, float] = {}

    def render_GET(self, request: Any) -> Any:
        path = request.path.decode()
        if path.startswith("/inputs/") and path[8:] in self.inputs:
            name = path[8:]
            self.downloads[name] = self.downloads.get(name, 0) + 1
            if name in self.delays:

                def answer() -> None:
                    if not request.finished and not request._disconnected:
                        request.write(self.inputs[name])
                        request.finish()

                reactor.callLater(self.delays[name], answer)
                return NOT_DONE_YET
            return self.inputs[name]
        request.setResponseCode(404)
        return b"not found"

    def _receive(self, request: Any) -> bytes:
        path = request.path.decode()
        body = request.content.read()
        if path.startswith("/results/"):
            self.results[path[9:]] = body
            return b"{}"
        if path == "/notify":
            self.notifications.append(json.loads(body))
            auth = request.getHeader("authorization")
            self.notification_auth.append(auth)
            return b"{}"
        request.setResponseCode(404)
        return b"not found"

    render_PUT = _receive
    render_POST = _receive


@dataclass
class Harness:
    root: Any
    url: str
    archive: Archive
    archive_url: str
    engine: docker.DockerClient
    users: dict[str, str] = field(default_factory=dict)

    def auth(self, user: str) -> tuple[str, str]:
        return (user, self.users[user])

    async def post(self, path: str, body: Any, user: str = "alice") -> tuple[int, Any]:
        response = await treq.post(self.url + path, json=body, auth=self.auth(user), timeout=30)
        return response.code, await response.json()

    async def get(self, path: str, user: str = "alice") -> tuple[int, Any]:
        response = await treq.get(self.url + path, auth=self.auth(user), timeout=30)
        return response.code, await response.json()

    async def task(self, task_id: str) -> dict[str, Any]:
        from bson import ObjectId

        doc = await self.root.store.find_one("tasks", {"_id": ObjectId(task_id)})
        assert doc is not None
        return doc

    async def wait_task(self, task_id: str, states: tuple[int, ...], timeout: float = 120) -> dict[str, Any]:
        return await wait_for(
            lambda: self.task(task_id), lambda t: t["state"] in states, timeout, f"task {task_id} to reach {states}"
        )

    def our_containers(self) -> list[str]:
        """Names of the containers this daemon started that still exist (one API call, no
        follow-up inspections that could race with a removal); other daemons' are not ours."""
        labels = [KIND_LABEL, f"{DAEMON_LABEL}={self.root.identity.value}"]
        found = self.engine.api.containers(all=True, filters={"label": labels})
        return [c["Names"][0].lstrip("/") for c in found]


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_for(get: Any, ok: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``get`` (a coroutine function) until ``ok(value)``; bounded by ``timeout``."""
    deadline = reactor.seconds() + timeout
    while True:
        value = get()
        if isinstance(value, Deferred) or hasattr(value, "__await__"):
            value = await value
        if ok(value):
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {value!r}")
        await sleep(interval)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def app_task(
    archive_url: str,
    tag: str,
    inputs: list[str],
    params: Any = None,
    results: list[str] | None = None,
    ram: int = 256,
    **extra: Any,
) -> dict[str, Any]:
    """A task for the sample app; its result files arrive at the archive as ``TAG-KEY``."""
    results = ["copy", "parameters"] if results is None else results
    task = {
        "application_container_description": {"image": APP_IMAGE, "container_ram": ram},
        "input_files": [
            {"connector_type": "http", "connector_access": {"url": f"{archive_url}/inputs/{name}"}} for name in inputs
        ],
        "result_files": [
            {
                "local_result_file": key,
                "connector_type": "http",
                "connector_access": {"url": f"{archive_url}/results/{tag}-{key}", "method": "PUT"},
            }
            for key in results
        ],
    }
    if params is not None:
        task["application_container_description"]["parameters"] = params
    task.update(extra)
    return task
