"""The data container (cc-protocol §7, §10): fetch the input files, then serve each at /<input_file_key>."""

import http.server
import os
import shutil

from . import connectors
from .common import NET_TIMEOUT, WorkerError, describe, exception_text, log

DATA_DIR = "/var/tmp/cc-data"
PORT = 80
CHUNK = 1024 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "cc-data-container"
    protocol_version = "HTTP/1.1"
    timeout = NET_TIMEOUT  # per socket operation of a connection

    def _lookup(self):
        key = self.path.split("?", 1)[0].lstrip("/")
        return self.server.files.get(key)

    def do_GET(self):
        self._answer(body=True)

    def do_HEAD(self):
        self._answer(body=False)

    def _answer(self, body):
        path = self._lookup()
        if path is None:
            message = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            if body:
                self.wfile.write(message)
            return
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                shutil.copyfileobj(f, self.wfile, CHUNK)

    def log_message(self, format, *args):  # the request paths hold the secret keys: log nothing
        pass


class DataServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, files):
        self.files = dict(files)  # input_file_key -> local path
        super().__init__(address, _Handler)


def make_server(files=None, port=None, host=None):
    """Binds (and listens) at once; files can be filled in later through server.files."""
    port = int(os.environ.get("CC_WORKER_PORT", PORT)) if port is None else port
    host = os.environ.get("CC_WORKER_BIND", "") if host is None else host
    return DataServer((host, port), files or {})


def fetch(input_files, input_file_keys, directory):
    files = {}
    os.makedirs(directory, exist_ok=True)
    for index, key in enumerate(input_file_keys):  # the counts are equal (checked before)
        path = os.path.join(directory, f"input-{index}")
        try:
            connectors.download(input_files[index], path)
        except Exception as e:
            raise WorkerError(f"input file {index}: {describe(e)}", exit_code=6) from e
        files[str(key)] = path
    return files


def run(settings, callbacks, redact):
    """The data container's life: callbacks 0 and 1, then serving until killed; returns an exit code."""
    server = make_server()  # listening before callback 1, so that application containers find it up
    work = callbacks.success("Container started.")
    if not isinstance(work, dict):
        raise WorkerError("the answer to callback 0 is not a JSON object", exit_code=4)
    redact.add_from(work)
    input_files = work.get("input_files") or []
    keys = work.get("input_file_keys") or []
    if len(input_files) != len(keys):
        callbacks.failed(f"{len(input_files)} input files but {len(keys)} input_file_keys")
        return 5
    directory = os.environ.get("CC_WORKER_DATA_DIR", DATA_DIR)
    try:
        server.files.update(fetch(input_files, keys, directory))
    except Exception as e:
        description = e.description if isinstance(e, WorkerError) else "could not retrieve the input files"
        callbacks.failed(description, exception=exception_text(redact))
        return 6
    callbacks.success("Input files available.")
    log(f"serving {len(server.files)} files on port {server.server_address[1]}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
