"""Images for the test cluster's containerd, without a registry.

The pause image (the pod sandbox) is Kubernetes' own ``build/pause/linux/pause.c`` compiled
with ``gcc -static`` and packed as a ``docker save``-style tar (manifest.json, a config, one
layer), cached by the hash of the source.  Test images come from the local Docker engine:
``docker save TAG | ctr -n k8s.io images import -``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CCSERVER_CACHE", "/var/cache/ccserver-dev"))
PAUSE_REPOSITORY = "ccserver-test/pause"


class ImageError(Exception):
    """An image could not be built or imported; the message has the tool's output."""


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version the wrapper module of scripts/kube/k8s builds."""
    text = (REPO / "scripts" / "kube" / "k8s" / "go.mod").read_text()
    found = re.search(r"^require k8s\.io/kubernetes (v\S+)", text, re.M)
    if not found:
        raise ImageError("scripts/kube/k8s/go.mod names no k8s.io/kubernetes version")
    return found.group(1)


def pause_source() -> Path:
    """pause.c of the Kubernetes module (downloaded by the binaries' build; fetched if missing)."""
    version = kubernetes_version()
    out = _run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], timeout=600)
    directory = Path(json.loads(out)["Dir"])
    return directory / "build" / "pause" / "linux" / "pause.c"


def _run(args: list[str], timeout: float, stdin: bytes | None = None) -> str:
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise ImageError(f"{' '.join(args)}: no answer within {timeout} s") from e
    if done.returncode != 0:
        raise ImageError(
            f"{' '.join(args)} exited with {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
        )
    return done.stdout.decode()


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def pause_image_tar(cache: Path = CACHE) -> tuple[Path, str]:
    """(path of the pause image tar, its reference as containerd names it), built once per source hash."""
    source = pause_source()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    tag = f"{PAUSE_REPOSITORY}:{kubernetes_version()}-{digest}"
    target = cache / "kube-pause" / f"pause-{digest}.tar"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            binary = Path(tmp) / "pause"
            _run(["gcc", "-Os", "-static", "-DVERSION=ccserver", "-o", str(binary), str(source)], timeout=120)
            layer_buf = io.BytesIO()
            with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.USTAR_FORMAT) as layer:
                _tar_member(layer, "pause", binary.read_bytes(), 0o755)
            layer_bytes = layer_buf.getvalue()
            diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
            config = json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "history": [{"created_by": "gcc -static build/pause/linux/pause.c"}],
                },
                sort_keys=True,
            ).encode()
            config_name = hashlib.sha256(config).hexdigest() + ".json"
            layer_name = diff_id.split(":")[1] + "/layer.tar"
            manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]).encode()
            partial = target.with_suffix(".tmp")
            with tarfile.open(partial, mode="w", format=tarfile.USTAR_FORMAT) as out:
                _tar_member(out, layer_name, layer_bytes)
                _tar_member(out, config_name, config)
                _tar_member(out, "manifest.json", manifest)
            partial.rename(target)
    return target, normalized(tag)


def normalized(tag: str) -> str:
    """The reference containerd (and the kubelet) give a short Docker tag: docker.io/library/x, docker.io/a/b."""
    first = tag.split("/", 1)[0]
    if "/" in tag and ("." in first or ":" in first or first == "localhost"):
        return tag
    return f"docker.io/{tag}" if "/" in tag else f"docker.io/library/{tag}"


def ctr_import(socket: str, tar: Path, timeout: float = 300) -> None:
    """Imports an image tar into the k8s.io namespace of the containerd on ``socket``."""
    _run(["ctr", "-a", socket, "-n", "k8s.io", "images", "import", str(tar)], timeout=timeout)


def docker_image_id(tag: str, timeout: float = 60) -> str:
    return _run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], timeout=timeout).strip()


def docker_to_containerd(tag: str, socket: str, timeout: float = 600) -> None:
    """``docker save TAG | ctr -n k8s.io images import -`` with a deadline on the pair."""
    save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert save.stdout is not None
    try:
        imported = subprocess.run(
            ["ctr", "-a", socket, "-n", "k8s.io", "images", "import", "-"],
            stdin=save.stdout,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        save.stdout.close()
        save_err = save.stderr.read().decode(errors="replace") if save.stderr else ""
        save_code = save.wait(timeout=30)
    except subprocess.TimeoutExpired as e:
        save.kill()
        save.wait()
        raise ImageError(f"importing {tag}: docker save | ctr import took longer than {timeout} s") from e
    if save_code != 0:
        raise ImageError(f"docker save {tag} exited with {save_code}: {save_err[-2000:]}")
    if imported.returncode != 0:
        raise ImageError(f"ctr import of {tag} exited with {imported.returncode}: {imported.stderr.decode()[-2000:]}")
