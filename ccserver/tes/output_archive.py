"""Reading TES outputs out of the engine's archive stream (``get_archive``).

The tar stream of an output's path is read member by member; each regular file is handed
to the output's :class:`~ccserver.tes.transfer_base.Uploader` while it is read, so nothing
is held whole.  A FILE is one member, a DIRECTORY its tree, a wildcard path every member
of its static directory that matches (and the trees of matching directories).
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from typing import Any

import docker
import docker.errors

from ccserver.tes.locations import join_url
from ccserver.tes.transfer_base import Budget, ChunkStream, TransferError, Uploader

#: Docker's os.ModeDir and os.ModeSymlink bits in an archive stat
MODE_DIR = 1 << 31
_MODE_SYMLINK = 1 << 27
WILDCARD = re.compile(r"[*?\[]")


def engine_reason(e: Exception) -> str:
    if isinstance(e, docker.errors.APIError):
        return str(e.explanation or e)
    return type(e).__name__


def archive_path(path: str) -> str:
    """The path whose archive an output reads: the path itself, or for a wildcard path the
    directory before its first wildcard."""
    normal = posixpath.normpath(path)
    if not WILDCARD.search(normal):
        return normal
    parts = normal.split("/")
    return "/".join(p for p in parts[: next(i for i, p in enumerate(parts) if WILDCARD.search(p))]) or "/"


def _pattern(path: str) -> re.Pattern[str]:
    """A container path pattern as a regex: ``*`` and ``?`` do not cross ``/`` (as a shell)."""
    out = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in path[i + 2 :]:
            end = path.index("]", i + 2)
            body = path[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _archive(client: docker.DockerClient, container: str, path: str, budget: Budget) -> tuple[Any, dict[str, Any]]:
    """The tar stream of ``path`` (symlinks followed, a few levels) and its stat."""
    for _ in range(8):
        budget.check()
        try:
            chunks, stat = client.api.get_archive(container, path, chunk_size=256 * 1024)
        except docker.errors.NotFound:
            raise TransferError(f"{path} does not exist in the container") from None
        except docker.errors.APIError as e:
            raise TransferError(f"the engine refused to read {path}: {engine_reason(e)}") from None
        stat = stat or {}
        link = stat.get("linkTarget") or ""
        if not (int(stat.get("mode", 0)) & _MODE_SYMLINK) or not link:
            return chunks, stat
        chunks.close()
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
    raise TransferError(f"{path}: too many levels of symbolic links")


def collect(
    client: docker.DockerClient,
    container: str,
    item: dict[str, Any],
    path: str,
    uploader: Uploader,
    budget: Budget,
) -> tuple[list[dict[str, Any]], str]:
    url: str = item["url"]
    if WILDCARD.search(item["path"]):
        return _wildcard_output(client, container, item, uploader, budget)
    kind = item.get("type") or "FILE"
    chunks, stat = _archive(client, container, path, budget)
    is_dir = bool(int(stat.get("mode", 0)) & MODE_DIR)
    if kind == "FILE" and is_dir:
        chunks.close()
        raise TransferError(f"{path} is a directory, not a FILE")
    if kind == "DIRECTORY" and not is_dir:
        chunks.close()
        raise TransferError(f"{path} is not a directory")
    root = stat.get("name") or posixpath.basename(path)
    logs: list[dict[str, Any]] = []
    skipped: list[str] = []
    links: list[str] = []
    with tarfile.open(fileobj=ChunkStream(chunks, budget), mode="r|") as tar:
        for member in tar:
            budget.check()
            rel = member.name[len(root) :].lstrip("/") if member.name != root else ""
            full = posixpath.join(path, rel) if rel else path
            target = join_url(url, rel)
            if member.isdir():
                uploader.make_dir(target)
            elif member.isreg():
                _upload_member(tar, member, target, uploader)
                logs.append({"url": target, "path": full, "size_bytes": str(member.size)})
            elif member.islnk():
                links.append(rel)
            else:
                skipped.append(rel or path)
    for rel in links:  # a hard link has no bytes in the archive: read it on its own
        full = posixpath.join(path, rel)
        linked = {"url": join_url(url, rel), "path": full}
        sub_logs, _ = collect(client, container, linked, full, uploader, budget)
        logs.extend(sub_logs)
    if kind == "FILE" and not logs:
        raise TransferError(f"{path} is not a regular file")
    note = f" (not uploaded, not regular files: {', '.join(skipped[:5])})" if skipped else ""
    return logs, note


def _upload_member(tar: tarfile.TarFile, member: tarfile.TarInfo, url: str, uploader: Uploader) -> None:
    source = tar.extractfile(member)
    assert source is not None
    uploader.put(url, source, member.size)


def _wildcard_output(
    client: docker.DockerClient, container: str, item: dict[str, Any], uploader: Uploader, budget: Budget
) -> tuple[list[dict[str, Any]], str]:
    """Each file matching ``path`` (or below a matching directory) goes to ``url`` plus its
    path after ``path_prefix`` (TES 1.1)."""
    pattern_text = posixpath.normpath(item["path"])
    static = archive_path(item["path"])
    prefix = item.get("path_prefix") or static
    pattern = _pattern(pattern_text)
    url: str = item["url"]
    try:
        chunks, stat = _archive(client, container, static, budget)
    except TransferError:
        return [], f" (nothing matched: {static} does not exist)"
    parent = posixpath.dirname(static.rstrip("/")) or "/"
    logs: list[dict[str, Any]] = []
    matched_dirs: list[str] = []
    with tarfile.open(fileobj=ChunkStream(chunks, budget), mode="r|") as tar:
        for member in tar:
            budget.check()
            full = posixpath.normpath(posixpath.join(parent, member.name))
            hit = bool(pattern.match(full)) or any(full.startswith(d + "/") for d in matched_dirs)
            if not hit:
                continue
            if not full.startswith(prefix.rstrip("/") + "/"):
                raise TransferError(f"{full} matches but does not start with path_prefix {prefix!r}")
            target = join_url(url, full[len(prefix.rstrip("/")) + 1 :])
            if member.isdir():
                matched_dirs.append(full)
                uploader.make_dir(target)
            elif member.isreg():
                _upload_member(tar, member, target, uploader)
                logs.append({"url": target, "path": full, "size_bytes": str(member.size)})
    return logs, "" if logs else " (nothing matched)"
