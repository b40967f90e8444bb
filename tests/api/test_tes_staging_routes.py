"""The ``/tes-staging`` routes with the real staging steps of a TES pod
(ccserver/kubernetes/staging_step.py run by ``python3 -c``, as in the pod) over real HTTP;
the whole path on the real cluster is tests/kube/test_kube_tes.py."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from ccserver.kubernetes.tes_jobs import STEP_SOURCE
from ccserver.tes.kube_staging import StagingExchange
from ccserver.threads import ThreadPoolService
from tests.api.conftest import StartServer


@pytest_twisted.async_yield_fixture
async def exchange(tmp_path: Path) -> AsyncIterator[StagingExchange]:
    pool = ThreadPoolService(reactor, "test-staging", 2)
    pool.startService()
    spools = tmp_path / "spools"
    spools.mkdir()
    yield StagingExchange(pool, str(spools))
    await pool.stopService()


async def step(mode: str, url: str, **env: str) -> tuple[int, str]:
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-c", STEP_SOURCE, mode],
        env={"CCSERVER_STAGING_URL": url, "CCSERVER_PIECE_BYTES": "1000", "PATH": "/usr/bin:/bin", **env},
        reactor=reactor,
    )
    return code, (out + err).decode(errors="replace")


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest_twisted.ensureDeferred
async def test_the_pods_steps_read_inputs_and_send_outputs_in_pieces(
    start_server: StartServer, exchange: StagingExchange, tmp_path: Path
) -> None:
    server = await start_server(staging=exchange)
    pod = tmp_path / "pod"
    (pod / "out" / "sub").mkdir(parents=True)
    (pod / "out" / "sub" / "big.bin").write_bytes(bytes(range(256)) * 30)  # several pieces
    (pod / "out" / "small.txt").write_text("small\n")
    (pod / "out" / "link.txt").hardlink_to(pod / "out" / "small.txt")
    paths = [str(pod / "out"), str(pod / "out" / "small.txt"), str(pod / "nothing")]
    token, spool = await exchange.open(paths)
    url = f"{server.api_url}/tes-staging/{token}"
    # inputs: the daemon's spool, unpacked by the step (into a directory here, "/" in a pod)
    target = tmp_path / "unpacked"
    target.mkdir()
    payload = {"data/a.txt": b"input a\n" * 300, "data/deep/b.bin": bytes(range(256)) * 20}
    spool.add_input(str(target), [tar_of(payload)])
    code, output = await step("in", url)
    assert code == 0, output
    for name, data in payload.items():
        assert (target / name).read_bytes() == data
    # outputs: the step packs and sends them; the spool gives them back as an engine's archive would
    code, output = await step("out", url, CCSERVER_OUTPUT_PATHS=json.dumps(paths))
    assert code == 0, output
    assert await exchange.pool.run(spool.complete)
    chunks, stat = spool.archive(paths[0], 4096)
    assert stat["name"] == "out" and stat["mode"] & (1 << 31)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["out/sub/big.bin"]).read() == bytes(range(256)) * 30  # type: ignore[union-attr]
        assert members["out/link.txt"].isreg() and members["out/small.txt"].isreg()  # no hard links
    chunks, stat = spool.archive(paths[1], 4096)
    assert stat["name"] == "small.txt" and not stat["mode"] & (1 << 31)
    chunks.close()
    missing: Any = None
    try:
        spool.archive(paths[2], 4096)
    except Exception as e:
        missing = e
    assert type(missing).__name__ == "NotFound"


@pytest_twisted.ensureDeferred
async def test_a_wrong_token_or_bad_offset_is_a_clear_4xx(start_server: StartServer, exchange: StagingExchange) -> None:
    server = await start_server(staging=exchange)
    token, spool = await exchange.open(["/out"])
    spool.add_input("/", [tar_of({"x": b"1"})])
    answer = await server.get("/tes-staging/not-a-token/inputs", user=None)
    assert answer.status == 404 and "staging area" in answer.json["error"]
    answer = await server.get(f"/tes-staging/{token}/inputs/0?offset=abc", user=None)
    assert answer.status == 400 and "offset" in answer.json["error"]
    answer = await server.get(f"/tes-staging/{token}/inputs/5", user=None)
    assert answer.status == 404
    answer = await server.post(f"/tes-staging/{token}/outputs/0?offset=7", user=None, raw=b"late", content_type=None)
    assert answer.status == 400 and "bytes have come" in answer.json["error"]
    answer = await server.get(f"/tes-staging/{token}/inputs", user=None)
    assert answer.status == 200 and answer.json == [{"dir": "/", "size": len(tar_of({"x": b"1"}))}]
    await exchange.close(token)
    answer = await server.get(f"/tes-staging/{token}/inputs", user=None)
    assert answer.status == 404
    without = await start_server()
    assert (await without.get(f"/tes-staging/{token}/inputs", user=None)).status == 404
