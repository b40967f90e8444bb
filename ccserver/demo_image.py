"""``ccserver-admin demo-image``: a small application image with the reference worker, made
without a registry.

The base is either a local image (``--from``, e.g. ``python:3-slim`` where a registry or a
proxy is at hand, or any local image with ``python3``) or a Debian made on this machine by
``debootstrap --variant=minbase --include=python3`` from the machine's own apt mirror and
``docker import``-ed (as ``scripts/build-test-images`` makes ``ccserver-test/base:1``).  On it
go the worker of :mod:`ccserver.worker` at ``/opt/container_worker`` and a demo application
that prints a line a second and writes a result file.  Blocking by design: a command-line tool,
never run by the daemon."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker

DEFAULT_TAG = "ccserver-demo/app:1"
BASE_TAG = "ccserver-demo/base:1"
SUITE = "bookworm"
DEBOOTSTRAP_SECONDS = 1800
BUILD_SECONDS = 900

#: the demo application: ``--lines N`` (default 10) lines, one every ``--interval`` seconds
APP = '''"""The ccserver demo application: prints numbered lines, then writes a summary."""
import json
import os
import sys
import time

args = sys.argv[1:]
lines, interval = 10, 1.0
for flag, value in zip(args, args[1:]):
    if flag == "--lines":
        lines = int(value)
    elif flag == "--interval":
        interval = float(value)
for i in range(1, lines + 1):
    print(f"demo: line {i} of {lines}", flush=True)
    time.sleep(interval)
os.makedirs("/opt/demo/results", exist_ok=True)
with open("/opt/demo/results/summary.json", "w") as f:
    json.dump({"lines": lines, "interval": interval}, f)
print("demo: done", flush=True)
'''

WORKER_CONFIG = {
    "application_command": "python3 /opt/demo/app.py",
    "local_input_files": [],
    "local_result_files": {"summary": {"dir": "/opt/demo/results", "name": "summary.json", "optional": True}},
}

#: the worker's bytecode is made at build time (exec form: the base needs no shell), so that a
#: container does not compile the worker's modules at its start, nor write them into its layer
DOCKERFILE = """FROM {base}
COPY container_worker /opt/container_worker
RUN ["python3", "-m", "compileall", "-q", "/opt/container_worker"]
COPY app.py /opt/demo/app.py
COPY config.json /opt/config.json
LABEL io.curious-containers.demo="1"
CMD ["python3", "/opt/container_worker"]
"""


class DemoImageError(Exception):
    """Making the image failed; the message says what to do."""


def debian_mirror(sources: list[Path] | None = None) -> str:
    """The first non-security Debian URI of the machine's apt sources (deb822 or one-line)."""
    paths = sources
    if paths is None:
        paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "URIs:":
                candidates = words[1:]
            elif words[0] == "deb":
                rest = words[1:]
                if rest and rest[0].startswith("["):
                    while rest and not rest[0].endswith("]"):
                        rest = rest[1:]
                    rest = rest[1:]
                candidates = rest[:1]
            else:
                continue
            for uri in candidates:
                if uri.startswith(("http://", "https://")) and "security" not in uri:
                    return uri
    return "http://deb.debian.org/debian"


def make_debian_base(client: docker.DockerClient, tag: str = BASE_TAG) -> str:
    """Debian minbase with python3 by debootstrap, imported as ``tag`` (kept: made once)."""
    import docker

    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        raise DemoImageError("debootstrap is missing (apt-get install debootstrap), or give a local image with --from")
    root = Path(tempfile.mkdtemp(prefix="ccserver-demo-base."))
    try:
        mirror = debian_mirror()
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", SUITE, str(root), mirror],
            capture_output=True,
            text=True,
            timeout=DEBOOTSTRAP_SECONDS,
        )
        if done.returncode != 0:
            raise DemoImageError(f"debootstrap from {mirror} failed: {(done.stderr or done.stdout)[-600:]}")
        for leftover in (*root.glob("var/cache/apt/archives/*.deb"), *root.glob("var/lib/apt/lists/*")):
            if leftover.is_file():
                leftover.unlink()
        archive = root.with_suffix(".tar")
        subprocess.run(["tar", "-C", str(root), "-c", "-f", str(archive), "."], check=True, timeout=600)
        repository, _, version = tag.partition(":")
        with archive.open("rb") as stream:
            client.api.import_image_from_stream(
                stream,
                repository=repository,
                tag=version or "latest",
                changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8"],
            )
        archive.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tag


def build_context(base: str) -> bytes:
    """The build context as a tar archive: Dockerfile, the worker, the app and its config."""
    from ccserver import worker

    files = {
        "Dockerfile": DOCKERFILE.format(base=base).encode(),
        "app.py": APP.encode(),
        "config.json": json.dumps(WORKER_CONFIG, indent=2).encode(),
    }
    for path in sorted(Path(worker.__file__).resolve().parent.glob("*.py")):
        files[f"container_worker/{path.name}"] = path.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build(base_url: str, tag: str = DEFAULT_TAG, from_image: str | None = None) -> str:
    """Make the demo image; its id."""
    import docker

    client = docker.DockerClient(base_url=base_url, timeout=BUILD_SECONDS)
    try:
        if from_image is None:
            base = make_debian_base(client)
        else:
            try:
                client.images.get(from_image)
            except docker.errors.ImageNotFound:
                raise DemoImageError(
                    f"no local image {from_image}: pull it first (docker pull {from_image}) or leave out --from"
                ) from None
            base = from_image
        try:
            image, _ = client.images.build(
                fileobj=io.BytesIO(build_context(base)), custom_context=True, tag=tag, rm=True, forcerm=True, pull=False
            )
        except docker.errors.BuildError as e:
            raise DemoImageError(f"building {tag} on {base} failed: {e}") from None
        return str(image.id)
    except docker.errors.DockerException as e:
        raise DemoImageError(f"the Docker engine at {base_url}: {e}") from None
    finally:
        client.close()
