"""The reference container worker run on the host against a loopback FakeCC (ccserver + data archive).

The worker runs as in an image: `python3 ccserver/worker '<settings>'` (the directory, not the
package), with CC_WORKER_CONFIG pointing at a config for a temporary directory and the sample
application of tests/images/app.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ccserver.worker import application, callbacks, common, connectors
from tests.worker.fake_cc import PASSWORD, USER, FakeCC

REPO = Path(__file__).resolve().parents[2]
WORKER_DIR = REPO / "ccserver" / "worker"
ALGORITHM = REPO / "tests" / "images" / "app" / "algorithm.py"
RUN_TIMEOUT = 60


@pytest.fixture
def cc() -> Any:
    with FakeCC() as fake:
        yield fake


def write_config(tmp_path: Path, inputs: int = 1, extra_results: dict[str, Any] | None = None) -> Path:
    results = {
        "copy": {"dir": str(tmp_path / "result_files"), "name": "copy.txt"},
        "parameters": {"dir": str(tmp_path / "result_files"), "name": "parameters.json"},
        "optional_missing": {"dir": str(tmp_path / "result_files"), "name": "never_written.txt", "optional": True},
    }
    results.update(extra_results or {})
    config = {
        "application_command": f"{sys.executable} {ALGORITHM}",
        "local_input_files": [{"dir": str(tmp_path / "input_files"), "name": "data.txt"}][:inputs],
        "local_result_files": results,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def run_worker(
    settings: dict[str, Any], tmp_path: Path, config: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, CC_APP_DIR=str(tmp_path), CC_WORKER_NET_TIMEOUT="10", **env)
    environ["CC_WORKER_CONFIG"] = str(config) if config else str(tmp_path / "no-such-config.json")
    return subprocess.run(
        [sys.executable, str(WORKER_DIR), json.dumps(settings)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def work(
    cc: FakeCC, parameters: Any = None, result_files: list[Any] | None = None, input_files: list[Any] | None = None
) -> dict[str, Any]:
    cc.files["data.txt"] = b"line one\nline two \xe2\x9c\x93\n"
    if input_files is None:
        input_files = [{"connector_type": "http", "connector_access": {"url": cc.url + "/files/data.txt"}}]
    if result_files is None:
        result_files = [
            {
                "local_result_file": "copy",
                "connector_type": "http",
                "connector_access": {"url": cc.url + "/results/copy", "method": "PUT"},
            },
            {
                "local_result_file": "parameters",
                "connector_type": "http",
                "connector_access": {"url": cc.url + "/results/parameters", "method": "POST"},
            },
            {
                "local_result_file": "optional_missing",
                "connector_type": "http",
                "connector_access": {"url": cc.url + "/results/optional", "method": "POST"},
            },
        ]
    return {
        "task_id": "task0123",
        "input_files": input_files,
        "result_files": result_files,
        "parameters": parameters,
        "sandbox": None,
        "tracing": None,
    }


def assert_callbacks(cc: FakeCC, settings: dict[str, Any], states: list[int]) -> None:
    assert [c["callback_type"] for c in cc.callbacks] == list(range(len(states)))
    assert [c["content"]["state"] for c in cc.callbacks] == states
    for c in cc.callbacks:
        assert c["callback_key"] == settings["callback_key"]
        assert c["container_id"] == settings["container_id"]
        assert set(c["content"]) == {"state", "description", "exception", "telemetry"}


def test_application_flow_array_parameters(cc: FakeCC, tmp_path: Path) -> None:
    parameters = ["--name", "a b", "it's $HOME `x`", 5, True, {"k": [1]}]
    settings = cc.settings()
    cc.work = work(cc, parameters)
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 0, done.stderr
    assert_callbacks(cc, settings, [3, 3, 3, 3])
    assert cc.uploaded("copy")[0]["body"] == cc.files["data.txt"]
    assert cc.uploaded("copy")[0]["method"] == "PUT"
    posted = cc.uploaded("parameters")[0]
    assert posted["method"] == "POST"
    assert json.loads(posted["body"]) == {"argv": ["--name", "a b", "it's $HOME `x`", "5", "true", '{"k": [1]}']}
    assert cc.uploaded("optional") == []
    telemetry = cc.callbacks[2]["content"]["telemetry"]
    assert telemetry["return_code"] == 0
    assert "algorithm: done" in telemetry["std_out"]
    assert telemetry["std_err"] == ""
    assert telemetry["wall_time"] > 0
    assert telemetry["max_rss_memory"] >= 1 and telemetry["max_vms_memory"] >= 1
    assert telemetry["input_file_sizes"] == [1]
    assert telemetry["result_file_sizes"] == {"copy": 1, "parameters": 1, "optional_missing": None}
    for c in cc.callbacks[:2] + cc.callbacks[3:]:
        assert c["content"]["telemetry"] is None


def test_object_parameters_are_one_json_argument(cc: FakeCC, tmp_path: Path) -> None:
    parameters = {"text": 'it\'s "quoted" $HOME; rm -rf /', "n": 1.5, "list": [1, None]}
    cc.work = work(cc, parameters)
    done = run_worker(cc.settings(), tmp_path, write_config(tmp_path))
    assert done.returncode == 0, done.stderr
    argv = json.loads(cc.uploaded("parameters")[0]["body"])["argv"]
    assert len(argv) == 1 and json.loads(argv[0]) == parameters


def test_null_entries_skipped_and_a_key_sent_twice_and_http_json(cc: FakeCC, tmp_path: Path) -> None:
    result_files = [
        None,
        {
            "local_result_file": "copy",
            "connector_type": "http",
            "connector_access": {"url": cc.url + "/results/first", "method": "PUT"},
        },
        {
            "local_result_file": "copy",
            "connector_type": "http",
            "connector_access": {"url": cc.url + "/results/second", "method": "POST"},
        },
        {
            "local_result_file": "parameters",
            "connector_type": "http_json",
            "add_meta_data": True,
            "connector_access": {"url": cc.url + "/results/json"},
        },
        {
            "local_result_file": "parameters",
            "connector_type": "http_json",
            "connector_access": {"url": cc.url + "/results/plain-json"},
        },
    ]
    settings = cc.settings()
    cc.work = work(cc, ["x"], result_files)
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 0, done.stderr
    assert_callbacks(cc, settings, [3, 3, 3, 3])
    assert cc.uploaded("first")[0]["body"] == cc.uploaded("second")[0]["body"] == cc.files["data.txt"]
    sent = cc.uploaded("json")[0]
    assert sent["headers"]["Content-Type"] == "application/json"
    assert json.loads(sent["body"]) == {
        "argv": ["x"],
        "application_container_id": settings["container_id"],
        "task_id": "task0123",
    }
    assert json.loads(cc.uploaded("plain-json")[0]["body"]) == {"argv": ["x"]}


def test_required_missing_result_fails_callback_3(cc: FakeCC, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, extra_results={"required": {"dir": str(tmp_path / "result_files"), "name": "never_written.txt"}}
    )
    cc.work = work(
        cc,
        [],
        [
            {
                "local_result_file": "required",
                "connector_type": "http",
                "connector_access": {"url": cc.url + "/results/required", "method": "PUT"},
            }
        ],
    )
    settings = cc.settings()
    done = run_worker(settings, tmp_path, config)
    assert done.returncode == 10
    assert_callbacks(cc, settings, [3, 3, 3, 4])
    assert "was not created" in cc.callbacks[3]["content"]["description"]
    assert cc.uploads == []


def test_failing_application_reports_callback_2_with_telemetry(cc: FakeCC, tmp_path: Path) -> None:
    settings = cc.settings()
    cc.work = work(cc, ["--fail"])
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 9
    assert_callbacks(cc, settings, [3, 3, 4])
    telemetry = cc.callbacks[2]["content"]["telemetry"]
    assert telemetry["return_code"] == 3
    assert "failing as asked" in telemetry["std_err"]
    assert "algorithm: arguments" in telemetry["std_out"]
    assert "exited with 3" in cc.callbacks[2]["content"]["description"]
    assert cc.uploads == []


def test_sigterm_stops_a_running_application(cc: FakeCC, tmp_path: Path) -> None:
    settings = cc.settings()
    cc.work = work(cc, ["--sleep", "60"])
    environ = dict(os.environ, CC_APP_DIR=str(tmp_path), CC_WORKER_CONFIG=str(write_config(tmp_path)))
    process = subprocess.Popen(
        [sys.executable, str(WORKER_DIR), json.dumps(settings)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert cc.wait_for(lambda: len(cc.callbacks) >= 2, timeout=30)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert_callbacks(cc, settings, [3, 3])  # no failed callback for a container being stopped


def test_unreadable_config_fails_callback_0(cc: FakeCC, tmp_path: Path) -> None:
    settings = cc.settings()
    done = run_worker(settings, tmp_path, None)
    assert done.returncode == 3
    assert_callbacks(cc, settings, [4])
    assert "config" in cc.callbacks[0]["content"]["description"]


def test_input_count_mismatch_fails_callback_1(cc: FakeCC, tmp_path: Path) -> None:
    settings = cc.settings()
    cc.work = work(cc, [], input_files=[])
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 5
    assert_callbacks(cc, settings, [3, 4])


def test_zero_input_files(cc: FakeCC, tmp_path: Path) -> None:
    settings = cc.settings()
    cc.work = work(
        cc,
        ["--sleep", "0.1"],
        input_files=[],
        result_files=[
            {
                "local_result_file": "parameters",
                "connector_type": "http",
                "connector_access": {"url": cc.url + "/results/parameters", "method": "PUT"},
            }
        ],
    )
    done = run_worker(settings, tmp_path, write_config(tmp_path, inputs=0))
    assert done.returncode == 0, done.stderr
    assert_callbacks(cc, settings, [3, 3, 3, 3])
    assert cc.callbacks[2]["content"]["telemetry"]["input_file_sizes"] == []


def test_failed_download_keeps_secrets_out(cc: FakeCC, tmp_path: Path) -> None:
    settings = cc.settings()
    secret_url = cc.url + "/files/missing-secret-key-1234"
    cc.work = work(
        cc,
        [],
        input_files=[
            {
                "connector_type": "http",
                "connector_access": {
                    "url": secret_url,
                    "auth": {"auth_type": "basic", "username": "u", "password": "hunter2-pw"},
                },
            }
        ],
    )
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 6
    assert_callbacks(cc, settings, [3, 4])
    content = cc.callbacks[1]["content"]
    assert "input file 0" in content["description"] and "404" in content["exception"]
    for text in (json.dumps(content), done.stderr):
        assert "secret-key-1234" not in text and "hunter2-pw" not in text and settings["callback_key"] not in text


def test_unknown_connector_fails_clearly(cc: FakeCC, tmp_path: Path) -> None:
    settings = cc.settings()
    cc.work = work(cc, [], input_files=[{"connector_type": "carrier_pigeon", "connector_access": {}}])
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 6
    assert_callbacks(cc, settings, [3, 4])
    assert "unknown input connector_type 'carrier_pigeon'" in cc.callbacks[1]["content"]["description"]


@pytest.mark.parametrize("auth_type", ["basic", "digest"])
def test_http_auth_download_and_upload(cc: FakeCC, tmp_path: Path, auth_type: str) -> None:
    auth = {"auth_type": auth_type, "username": USER, "password": PASSWORD}
    settings = cc.settings()
    cc.work = work(
        cc,
        ["p"],
        input_files=[
            {
                "connector_type": "http",
                "connector_access": {"url": f"{cc.url}/{auth_type}/files/data.txt", "auth": auth},
            }
        ],
        result_files=[
            {
                "local_result_file": "copy",
                "connector_type": "http",
                "connector_access": {"url": f"{cc.url}/{auth_type}/results/put", "method": "PUT", "auth": auth},
            },
            {
                "local_result_file": "parameters",
                "connector_type": "http_json",
                "connector_access": {"url": f"{cc.url}/{auth_type}/results/json", "auth": auth},
            },
        ],
    )
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 0, done.stderr
    assert_callbacks(cc, settings, [3, 3, 3, 3])
    assert cc.uploaded("put")[0]["body"] == cc.files["data.txt"]
    assert json.loads(cc.uploaded("json")[0]["body"]) == {"argv": ["p"]}


def test_wrong_password_fails_download(cc: FakeCC, tmp_path: Path) -> None:
    auth = {"auth_type": "basic", "username": USER, "password": "wrong-password"}
    settings = cc.settings()
    cc.work = work(
        cc,
        [],
        input_files=[
            {"connector_type": "http", "connector_access": {"url": f"{cc.url}/basic/files/data.txt", "auth": auth}}
        ],
    )
    done = run_worker(settings, tmp_path, write_config(tmp_path))
    assert done.returncode == 6
    assert "401" in cc.callbacks[1]["content"]["exception"]
    assert "wrong-password" not in json.dumps(cc.callbacks[1])


def test_refused_callback_is_not_retried(cc: FakeCC, tmp_path: Path) -> None:
    cc.answers[1] = (401, {"error": "wrong key"})
    cc.work = work(cc, [])
    done = run_worker(cc.settings(), tmp_path, write_config(tmp_path))
    assert done.returncode == 2
    assert cc.callback_attempts == 2  # callback 0, then callback 1 once; no failed callback after a refusal
    assert "HTTP 401" in done.stderr


def test_unreachable_callback_url_retries_bounded() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {"callback_url": f"http://127.0.0.1:{port}/callback", "callback_key": "k" * 8, "container_id": "c"}
    sender = callbacks.Callbacks(settings, common.Redactor(), attempts=3, timeout=2)
    started = time.monotonic()
    with pytest.raises(callbacks.CallbackError, match="after 3 attempts"):
        sender.success("Container started.")
    assert time.monotonic() - started < 10


def test_ssh_and_mongodb_without_their_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "paramiko", None)
    monkeypatch.setitem(sys.modules, "pymongo", None)
    with pytest.raises(common.WorkerError, match="connector ssh needs paramiko in the image"):
        connectors.download(
            {"connector_type": "ssh", "connector_access": {"host": "h", "username": "u"}}, str(tmp_path / "x")
        )
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(common.WorkerError, match="connector mongodb_json needs pymongo in the image"):
        connectors.upload(
            {"connector_type": "mongodb_json", "connector_access": {"host": "h", "db": "d"}},
            str(tmp_path / "r.json"),
            {},
        )


def test_build_command_quoting() -> None:
    assert application.build_command("app", None) == "app"
    assert application.build_command("app", []) == "app"
    assert application.build_command("app", ["a b", "c"]) == "app 'a b' c"
    assert application.build_command("app", {"a": "it's"}) == 'app \'{"a": "it\'"\'"\'s"}\''
    with pytest.raises(common.WorkerError):
        application.build_command("app", "a string")


def test_output_tails_are_bounded() -> None:
    command = f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 300000 + 'END'); sys.stderr.write('e')\""
    telemetry = application.run_command(command)
    assert telemetry["return_code"] == 0
    assert telemetry["std_out"].endswith("xEND")
    assert len(telemetry["std_out"]) <= common.TAIL_BYTES + 10
    assert telemetry["std_err"] == "e"


def test_redactor() -> None:
    redact = common.Redactor()
    redact.add_from(
        {
            "input_files": [{"connector_access": {"url": "http://h/k123", "auth": {"password": "pw12"}}}],
            "input_file_keys": ["abcdef"],
            "other": "visible",
        }
    )
    assert redact("GET http://h/k123 with pw12 key abcdef visible") == "GET *** with *** key *** visible"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_container_serves_files_by_key(cc: FakeCC, tmp_path: Path) -> None:
    cc.files["a.bin"] = os.urandom(3 * 1024 * 1024 + 7)
    cc.files["b.txt"] = b"second file\n"
    keys = ["key" + "a" * 29, "key" + "b" * 29]
    cc.work = {
        "input_files": [
            {"connector_type": "http", "connector_access": {"url": cc.url + "/files/a.bin"}},
            {"connector_type": "http", "connector_access": {"url": cc.url + "/files/b.txt"}},
        ],
        "input_file_keys": keys,
    }
    settings = cc.settings("data", "dc0123")
    port = free_port()
    env = dict(os.environ, CC_WORKER_PORT=str(port), CC_WORKER_BIND="127.0.0.1", CC_WORKER_DATA_DIR=str(tmp_path))
    process = subprocess.Popen(
        [sys.executable, str(WORKER_DIR), json.dumps(settings)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert cc.wait_for(lambda: len(cc.callbacks) >= 2, timeout=30), process.stderr
        assert_callbacks(cc, settings, [3, 3])
        import urllib.error
        import urllib.request

        for key, name in zip(keys, ["a.bin", "b.txt"], strict=True):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{key}", timeout=10) as answer:
                assert answer.read() == cc.files[name]
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nokey", timeout=10)
        assert error.value.code == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 128 + signal.SIGTERM
        assert keys[0] not in process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


def test_data_container_failed_download(cc: FakeCC, tmp_path: Path) -> None:
    cc.work = {
        "input_files": [{"connector_type": "http", "connector_access": {"url": cc.url + "/files/none"}}],
        "input_file_keys": ["k" * 32],
    }
    settings = cc.settings("data", "dc0456")
    done = run_worker(
        settings,
        tmp_path,
        None,
        CC_WORKER_PORT=str(free_port()),
        CC_WORKER_BIND="127.0.0.1",
        CC_WORKER_DATA_DIR=str(tmp_path),
    )
    assert done.returncode == 6
    assert_callbacks(cc, settings, [3, 4])


@pytest.mark.parametrize(("path", "code"), [("/", 0), ("/status/500", 1)])
def test_inspection(cc: FakeCC, tmp_path: Path, path: str, code: int) -> None:
    done = run_worker({"container_type": "inspection", "inspection_url": cc.url + path}, tmp_path)
    assert done.returncode == code
    assert cc.callbacks == []


def test_inspection_unreachable(tmp_path: Path) -> None:
    done = run_worker({"container_type": "inspection", "inspection_url": f"http://127.0.0.1:{free_port()}/"}, tmp_path)
    assert done.returncode == 1


def test_bad_settings(tmp_path: Path) -> None:
    assert run_worker({"container_type": "nonsense"}, tmp_path).returncode == 42  # type: ignore[arg-type]
    done = subprocess.run([sys.executable, str(WORKER_DIR), "not json"], capture_output=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 64


def test_runs_as_package_module(cc: FakeCC, tmp_path: Path) -> None:
    env = dict(os.environ, CC_WORKER_NET_TIMEOUT="10")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ccserver.worker",
            json.dumps({"container_type": "inspection", "inspection_url": cc.url}),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr


CUSTOM_CONNECTORS = """
import shutil
import sys


def download_copy(access, path):
    # the worker's modules are one package, whatever its directory is called; no loose copies
    assert "common" not in sys.modules and "connectors" not in sys.modules, sorted(sys.modules)
    shutil.copyfile(access["source"], path)


DOWNLOADERS = {"copy": download_copy}
"""


def test_runs_from_any_directory_with_an_images_custom_connectors(cc: FakeCC, tmp_path: Path) -> None:
    """As in an image: the worker's files in one directory (here a name that is no Python
    identifier), started as that directory; a `custom_connectors` module next to them adds a connector."""
    worker = tmp_path / "cc worker-0.10"
    worker.mkdir()
    for module in WORKER_DIR.glob("*.py"):
        (worker / module.name).write_bytes(module.read_bytes())
    (worker / "custom_connectors.py").write_text(CUSTOM_CONNECTORS)
    source = tmp_path / "source.txt"
    source.write_bytes(b"from a custom connector\n")
    cc.work = work(cc, input_files=[{"connector_type": "copy", "connector_access": {"source": str(source)}}])
    settings = cc.settings()
    environ = dict(
        os.environ, CC_APP_DIR=str(tmp_path), CC_WORKER_NET_TIMEOUT="10", CC_WORKER_CONFIG=str(write_config(tmp_path))
    )
    done = subprocess.run(
        [sys.executable, str(worker), json.dumps(settings)],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert_callbacks(cc, settings, [3, 3, 3, 3])
    assert cc.uploaded("copy")[0]["body"] == source.read_bytes()
