"""The application container (cc-protocol §10): config, inputs, the application, results."""

import json
import os
import resource
import shlex
import signal
import subprocess
import threading
import time

from . import sandbox as sandboxing
from .common import TAIL_BYTES, WorkerError, describe, exception_text, file_size_mb, log


def _connectors():
    """The connectors (urllib, ssl), imported only when a file is to be moved."""
    from . import connectors

    return connectors


CONFIG_PATH = "/opt/config.json"
MEMORY_SAMPLE_SECONDS = 0.5


def config_path():
    return os.environ.get("CC_WORKER_CONFIG", CONFIG_PATH)


def load_config(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    command = config.get("application_command")
    inputs = config.get("local_input_files", [])
    results = config.get("local_result_files", {})
    if not isinstance(command, str) or not command.strip():
        raise ValueError("application_command must be a non-empty string")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and "dir" in i and "name" in i for i in inputs):
        raise ValueError("local_input_files must be a list of {dir, name}")
    if not isinstance(results, dict) or not all(
        isinstance(r, dict) and "dir" in r and "name" in r for r in results.values()
    ):
        raise ValueError("local_result_files must map keys to {dir, name, optional}")
    return {"application_command": command, "local_input_files": inputs, "local_result_files": results}


def _path(local_file):
    return os.path.join(local_file["dir"], local_file["name"])


def _argument(value):
    if isinstance(value, str):
        return shlex.quote(value)
    return shlex.quote(json.dumps(value))


def build_command(application_command, parameters):
    """application_command plus the parameters: an object as one JSON argument, an array element-wise."""
    if parameters is None:
        return application_command
    if isinstance(parameters, dict):
        return f"{application_command} {shlex.quote(json.dumps(parameters))}"
    if isinstance(parameters, list):
        return " ".join([application_command] + [_argument(p) for p in parameters])
    raise WorkerError(f"parameters must be an object or an array, not {type(parameters).__name__}")


class _Tail(threading.Thread):
    """Reads a pipe to its end, keeping the last TAIL_BYTES."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = bytearray()
        self.truncated = False

    def run(self):
        while True:
            chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536)
            if not chunk:
                break
            self.data += chunk
            if len(self.data) > 2 * TAIL_BYTES:
                del self.data[:-TAIL_BYTES]
                self.truncated = True

    def text(self):
        data = bytes(self.data[-TAIL_BYTES:])
        prefix = "[...]\n" if self.truncated or len(self.data) > TAIL_BYTES else ""
        return prefix + data.decode("utf-8", "replace")


def _tree_memory(root_pid):
    """(rss, vms) in bytes of root_pid and all its descendants, from /proc (0, 0 without /proc)."""
    children, memory = {}, {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0, 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue
        pid, ppid = int(name), int(fields.get("PPid", "0").strip() or 0)
        children.setdefault(ppid, []).append(pid)
        rss = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        vms = int(fields.get("VmSize", "0 kB").split()[0]) * 1024
        memory[pid] = (rss, vms)
    total_rss = total_vms = 0
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        rss, vms = memory.get(pid, (0, 0))
        total_rss, total_vms = total_rss + rss, total_vms + vms
        todo.extend(children.get(pid, []))
    return total_rss, total_vms


class _MemorySampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.max_rss = self.max_vms = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            rss, vms = _tree_memory(self.pid)
            self.max_rss, self.max_vms = max(self.max_rss, rss), max(self.max_vms, vms)
            self.stop.wait(MEMORY_SAMPLE_SECONDS)


def run_command(command, limits=()):
    """Runs command through the shell, under the resource ``limits`` ([(RLIMIT_*, value)], see
    :mod:`sandbox`); returns its telemetry (memory in MB, as CC-Container-Worker 0.10)."""
    log("running the application" + (f" with {len(limits)} resource limits" if limits else ""))
    start = time.time()
    try:
        process = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=sandboxing.preexec(limits),
        )
    except subprocess.SubprocessError as e:  # setrlimit refused in the child (above the hard limit)
        raise WorkerError(f"the sandbox limits could not be applied: {describe(e)}", exit_code=8) from e
    tails = [_Tail(process.stdout), _Tail(process.stderr)]
    sampler = _MemorySampler(process.pid)
    for thread in tails + [sampler]:
        thread.start()
    try:
        return_code = process.wait()
    finally:
        if process.poll() is None:  # interrupted (SIGTERM): take the application down with us
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
        sampler.stop.set()
    for thread in tails:
        thread.join(timeout=5)
    wall_time = time.time() - start
    usage_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    max_rss = max(usage_rss, sampler.max_rss)
    max_vms = max(sampler.max_vms, max_rss)  # sampling can miss a short peak; the VMS is never below the RSS
    mb = 1024 * 1024
    return {
        "wall_time": wall_time,
        "return_code": return_code,
        "std_out": tails[0].text(),
        "std_err": tails[1].text(),
        "max_rss_memory": -(-max_rss // mb),
        "max_vms_memory": -(-max_vms // mb),
    }


def _download_inputs(input_files, local_input_files):
    for index, local in enumerate(local_input_files):  # the counts are equal (checked before)
        try:
            _connectors().download(input_files[index], _path(local))
        except Exception as e:
            raise WorkerError(f"input file {index}: {describe(e)}", exit_code=6) from e


def _upload_results(result_files, local_result_files, meta):
    for index, entry in enumerate(result_files):
        if entry is None:
            continue
        key = entry.get("local_result_file") if isinstance(entry, dict) else None
        if key not in local_result_files:
            raise WorkerError(f"result file {index}: {key!r} is not a key of local_result_files", exit_code=10)
        local = local_result_files[key]
        path = _path(local)
        if not os.path.isfile(path):
            if local.get("optional"):
                log(f"result file {index} ({key}): optional and missing, skipped")
                continue
            raise WorkerError(f"result file {index} ({key}): {path} was not created", exit_code=10)
        try:
            _connectors().upload(entry, path, meta)
        except Exception as e:
            raise WorkerError(f"result file {index} ({key}): {describe(e)}", exit_code=10) from e


def _step(callbacks, redact, description, exit_code, function, *args):
    """Runs one step; on any exception sends the failed callback for the current type and stops."""
    try:
        return function(*args)
    except WorkerError as e:
        text = exception_text(redact) if e.__cause__ is not None else None
        callbacks.failed(e.description, exception=text)
        raise WorkerError(e.description, e.exit_code) from None
    except Exception as e:
        callbacks.failed(f"{description}: {describe(e)}", exception=exception_text(redact))
        raise WorkerError(description, exit_code) from e


def run(settings, callbacks, redact):
    """The application container's whole life; returns the exit code."""
    path = config_path()
    try:
        config = load_config(path)
    except Exception as e:
        callbacks.failed(f"could not load the config file {path}: {e}", exception=exception_text(redact))
        return 3
    local_inputs, local_results = config["local_input_files"], config["local_result_files"]
    for local in local_results.values():
        os.makedirs(local["dir"], exist_ok=True)

    work = callbacks.success("Container started.")
    if not isinstance(work, dict):
        raise WorkerError("the answer to callback 0 is not a JSON object", exit_code=4)
    redact.add_from(work)
    input_files = work.get("input_files") or []
    result_files = work.get("result_files") or []
    if len(input_files) != len(local_inputs):
        callbacks.failed(f"the task has {len(input_files)} input files, the image's config expects {len(local_inputs)}")
        return 5
    _step(callbacks, redact, "could not retrieve the input files", 6, _download_inputs, input_files, local_inputs)
    callbacks.success("Input files retrieved.")

    command = _step(
        callbacks,
        redact,
        "could not build the command",
        8,
        build_command,
        config["application_command"],
        work.get("parameters"),
    )
    limits = _step(callbacks, redact, "could not apply the sandbox", 8, sandboxing.limits_of, work.get("sandbox"))
    for part in sandboxing.ignored_parts(work.get("sandbox"), work.get("tracing")):
        log(f"{part} was requested; this worker does not apply it")
    telemetry = _step(callbacks, redact, "could not run the application", 8, run_command, command, limits)
    telemetry["input_file_sizes"] = [file_size_mb(_path(local)) for local in local_inputs]
    telemetry["result_file_sizes"] = {key: file_size_mb(_path(local)) for key, local in local_results.items()}
    if telemetry["return_code"] != 0:
        callbacks.failed(
            "Processing failed: the application exited with {}.".format(telemetry["return_code"]), telemetry=telemetry
        )
        return 9
    callbacks.success("Processing succeeded.", telemetry=telemetry)

    meta = {"application_container_id": settings["container_id"], "task_id": work.get("task_id")}
    _step(callbacks, redact, "could not send the result files", 10, _upload_results, result_files, local_results, meta)
    callbacks.success("Result files sent.")
    return 0
