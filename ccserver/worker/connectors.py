"""Input and result connectors (cc-protocol §10), selected by connector_type.

http / http_json need only the standard library. ssh needs paramiko and mongodb_* need pymongo in
the image; without them those connectors fail with a clear message. An image may add connectors
of its own in a module `custom_connectors` next to this one (dicts DOWNLOADERS and UPLOADERS of
functions with the signatures of the ones below).
"""

import importlib
import json
import os
import shutil
import urllib.request

from .common import NET_TIMEOUT, WorkerError
from .openers import opener_for

CHUNK = 1024 * 1024


def _optional_module(name, connector_type, package):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise WorkerError(f"connector {connector_type} needs {package} in the image") from None


def _access(connector_access, *required):
    if not isinstance(connector_access, dict):
        raise WorkerError("connector_access must be an object")
    missing = [k for k in required if k not in connector_access]
    if missing:
        raise WorkerError("connector_access lacks {}".format(", ".join(missing)))
    return connector_access


# --- input connectors: (connector_access, local file path) -------------------------------------------


def download_http(access, path):
    _access(access, "url")
    opener = opener_for(access["url"], access.get("auth"), access.get("ssl_verify", True))
    part = path + ".part"
    with opener.open(urllib.request.Request(access["url"]), timeout=NET_TIMEOUT) as answer, open(part, "wb") as f:
        shutil.copyfileobj(answer, f, CHUNK)
    os.replace(part, path)


def download_ssh(access, path):
    with _sftp(access) as sftp:
        sftp.get(_remote_path(access), path)


# --- result connectors: (connector_access, local file path, result entry, meta data) ---------------


def upload_http(access, path, entry, meta):
    _access(access, "url")
    method = str(access.get("method", "POST")).upper()
    if method not in ("PUT", "POST"):
        raise WorkerError(f"http method must be PUT or POST, not {method!r}")
    opener = opener_for(access["url"], access.get("auth"), access.get("ssl_verify", True))
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        request = urllib.request.Request(
            access["url"],
            data=f,
            method=method,
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        with opener.open(request, timeout=NET_TIMEOUT) as answer:
            answer.read()


def _json_document(path, entry, meta):
    with open(path, encoding="utf-8") as f:
        try:
            document = json.load(f)
        except ValueError as e:
            raise WorkerError(f"result file does not hold JSON: {e}") from None
    if entry.get("add_meta_data"):
        if not isinstance(document, dict):
            raise WorkerError("add_meta_data needs a JSON object in the result file")
        document.update(meta)
    return document


def upload_http_json(access, path, entry, meta):
    _access(access, "url")
    document = _json_document(path, entry, meta)
    opener = opener_for(access["url"], access.get("auth"), access.get("ssl_verify", True))
    request = urllib.request.Request(
        access["url"],
        data=json.dumps(document).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with opener.open(request, timeout=NET_TIMEOUT) as answer:
        answer.read()


def upload_ssh(access, path, entry, meta):
    with _sftp(access) as sftp:
        _sftp_makedirs(sftp, access["file_dir"])
        sftp.put(path, _remote_path(access))


def upload_mongodb_json(access, path, entry, meta):
    document = _json_document(path, entry, meta)
    with _mongo_client(access, "mongodb_json") as client:
        client[access["db"]][access["collection"]].insert_one(document)


def upload_mongodb_gridfs(access, path, entry, meta):
    gridfs = _optional_module("gridfs", "mongodb_gridfs", "pymongo (with gridfs)")
    with _mongo_client(access, "mongodb_gridfs") as client, open(path, "rb") as f:
        extra = dict(meta) if entry.get("add_meta_data") else {}
        gridfs.GridFS(client[access["db"]]).put(f, filename=access.get("file_name", os.path.basename(path)), **extra)


# --- helpers of the optional connectors ----------------------------------------------------------------


def _remote_path(access):
    _access(access, "file_dir", "file_name")
    return access["file_dir"].rstrip("/") + "/" + access["file_name"]


class _sftp:
    def __init__(self, access):
        self.paramiko = _optional_module("paramiko", "ssh", "paramiko")
        self.access = _access(access, "host", "username")

    def __enter__(self):
        a = self.access
        self.client = self.paramiko.SSHClient()
        self.client.set_missing_host_key_policy(self.paramiko.AutoAddPolicy())
        self.client.connect(
            a["host"],
            port=int(a.get("port", 22)),
            username=a["username"],
            password=a.get("password"),
            timeout=NET_TIMEOUT,
            banner_timeout=NET_TIMEOUT,
            auth_timeout=NET_TIMEOUT,
            allow_agent=False,
            look_for_keys=False,
        )
        self.sftp = self.client.open_sftp()
        self.sftp.get_channel().settimeout(NET_TIMEOUT)
        return self.sftp

    def __exit__(self, *exc):
        self.sftp.close()
        self.client.close()


def _sftp_makedirs(sftp, directory):
    current = "/" if directory.startswith("/") else ""
    for part in [p for p in directory.split("/") if p]:
        current = current + part + "/"
        try:
            sftp.stat(current)
        except OSError:
            sftp.mkdir(current)


def _mongo_client(access, connector_type):
    pymongo = _optional_module("pymongo", connector_type, "pymongo")
    _access(access, "host", "db")
    options = {"serverSelectionTimeoutMS": int(NET_TIMEOUT * 1000), "socketTimeoutMS": int(NET_TIMEOUT * 1000)}
    if access.get("username"):
        options.update(username=access["username"], password=access.get("password"), authSource=access["db"])
    if access.get("enable_ssl"):
        options["tls"] = True
        options["tlsAllowInvalidCertificates"] = access.get("ssl_verify") is False
        if access.get("ssl_ca_cert_path"):
            options["tlsCAFile"] = access["ssl_ca_cert_path"]
    return pymongo.MongoClient(access["host"], int(access.get("port", 27017)), **options)


DOWNLOADERS = {"http": download_http, "ssh": download_ssh}
UPLOADERS = {
    "http": upload_http,
    "http_json": upload_http_json,
    "ssh": upload_ssh,
    "mongodb_json": upload_mongodb_json,
    "mongodb_gridfs": upload_mongodb_gridfs,
}

try:  # connectors an image adds of its own
    import custom_connectors  # type: ignore[import-not-found]  # an image's own module, absent here
except ImportError:
    pass
else:
    DOWNLOADERS.update(getattr(custom_connectors, "DOWNLOADERS", {}))
    UPLOADERS.update(getattr(custom_connectors, "UPLOADERS", {}))


def _spec(file_spec, what):
    if not isinstance(file_spec, dict) or "connector_type" not in file_spec:
        raise WorkerError(f"{what} needs connector_type and connector_access")
    return file_spec["connector_type"], file_spec.get("connector_access")


def download(file_spec, path):
    """Fetches one input file ({"connector_type", "connector_access"}) to path."""
    connector_type, access = _spec(file_spec, "an input file")
    function = DOWNLOADERS.get(connector_type)
    if function is None:
        raise WorkerError(
            "unknown input connector_type {!r} (known: {})".format(connector_type, ", ".join(sorted(DOWNLOADERS)))
        )
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    function(access, path)


def upload(entry, path, meta):
    """Sends one result file (a result_files entry) from path; meta holds application_container_id, task_id."""
    connector_type, access = _spec(entry, "a result file")
    function = UPLOADERS.get(connector_type)
    if function is None:
        raise WorkerError(
            "unknown result connector_type {!r} (known: {})".format(connector_type, ", ".join(sorted(UPLOADERS)))
        )
    function(access, path, entry, meta)
