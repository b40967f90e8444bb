"""A real ``twistd -n ccserver`` on the local dockerd with ``[logs]`` settings, and tasks whose
application container prints (ccserver-test/busybox:1 with an entry point of its own)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker

from tests.resilience.harness import Cluster

IMAGE = "ccserver-test/busybox:1"
OTHER = "bob"
OTHER_PASSWORD = "pw-livelogs-other-0123456789"


class LogsCluster(Cluster):
    """:class:`tests.resilience.harness.Cluster` with one trial per task, a ``[logs]``
    section and a second user."""

    def __init__(self, tmp: Path, gateway: str, logs: str = "", **kwargs: Any) -> None:
        super().__init__(tmp, gateway, **kwargs)
        text = self.config.read_text().replace("max_task_trials = 3", "max_task_trials = 1")
        self.config.write_text(text + "[logs]\n" + logs)
        admin = str(Path(sys.executable).with_name("ccserver-admin"))
        done = subprocess.run(
            [admin, "--config", str(self.config), "create-user", OTHER, "--password-stdin"],
            input=OTHER_PASSWORD + "\n",
            text=True,
            env=self.env,
            timeout=60,
            capture_output=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def close(self) -> None:
        """As the resilience cluster's, but a removal the daemon began (409) is no error."""
        for run in self.runs:
            if run.process and run.process.poll() is None:
                run.process.kill()
                run.process.wait(30)
        for name in self.our_containers():
            try:
                self.engine.api.remove_container(name, force=True)
            except docker.errors.APIError as e:
                if e.status_code not in (404, 409):
                    raise
        self.archive.close()
        self.engine.close()

    def get_as(self, path: str, user: str, password: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path)
        request.add_header("authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def submit(self, script: str, ram: int = 32) -> str:
        """A task whose container runs ``sh -c SCRIPT`` (the settings argument becomes ``$1``)."""
        task = {
            "application_container_description": {
                "image": IMAGE,
                "container_ram": ram,
                "entry_point": f"sh -c '{script}' script",
            },
            "input_files": [],
            "result_files": [],
        }
        code, answer = self.call("POST", "/tasks", task)
        assert code == 200, (code, answer)
        return str(answer["_id"])

    def logs(self, task_id: str, query: str = "") -> dict[str, Any]:
        code, answer = self.call("GET", f"/tasks/{task_id}/logs{query}")
        assert code == 200, (code, answer)
        return answer
