"""CORS for browser clients, CC-UI's static files, and the API prefix."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.conftest import Server, StartServer

PREFLIGHT = {
    "Origin": "https://ui.example.org",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest_twisted.ensureDeferred
async def test_preflight_and_answers_for_a_listed_origin(start_server: StartServer) -> None:
    server = await start_server(cors_origins=["https://ui.example.org"])
    answer = await server.request("OPTIONS", "/tasks/query", user=None, headers=PREFLIGHT)
    assert answer.status == 204
    assert answer.header("access-control-allow-origin") == "https://ui.example.org"
    assert answer.header("access-control-allow-methods") == "GET, POST, OPTIONS"
    assert answer.header("access-control-allow-headers") == "Authorization, Content-Type"
    assert answer.header("access-control-max-age") == "3600"
    assert answer.header("access-control-allow-credentials") == "true"
    assert answer.raw == b""
    origin = {"Origin": "https://ui.example.org"}
    for answer in (
        await server.post("/tasks/query", {"aggregate": []}, headers=origin),
        await server.get("/", headers=origin),
        await server.get("/nodes", user=None, headers=origin),  # a 401 is readable too
        await server.get("/nope", headers=origin),
    ):
        assert answer.header("access-control-allow-origin") == "https://ui.example.org"
        assert answer.header("vary") == "Origin"


@pytest_twisted.ensureDeferred
async def test_other_origins_get_no_cors_headers(start_server: StartServer) -> None:
    server = await start_server(cors_origins=["https://ui.example.org"])
    evil = {**PREFLIGHT, "Origin": "https://evil.example.org"}
    answer = await server.request("OPTIONS", "/tasks/query", user=None, headers=evil)
    assert answer.status == 204
    assert answer.header("access-control-allow-origin") is None
    assert answer.header("access-control-allow-methods") is None
    answer = await server.post("/tasks/query", {"aggregate": []}, headers={"Origin": "https://evil.example.org"})
    assert answer.status == 200
    assert answer.header("access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_no_cors_without_configured_origins(api_server: Server) -> None:
    answer = await api_server.request("OPTIONS", "/tasks", user=None, headers=PREFLIGHT)
    assert answer.status == 204
    assert answer.header("access-control-allow-origin") is None
    answer = await api_server.get("/", headers={"Origin": "https://ui.example.org"})
    assert answer.header("access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_star_allows_every_origin_without_credentials(start_server: StartServer) -> None:
    server = await start_server(cors_origins=["*"])
    answer = await server.request("OPTIONS", "/nodes", user=None, headers={**PREFLIGHT, "Origin": "http://a.b"})
    assert answer.header("access-control-allow-origin") == "http://a.b"
    assert answer.header("access-control-allow-credentials") is None
    answer = await server.get("/nodes", headers={"Origin": "http://c.d"})
    assert answer.status == 200
    assert answer.header("access-control-allow-origin") == "http://c.d"


def _ui(tmp_path: Any) -> str:
    root = tmp_path / "cc-ui"
    (root / "static" / "js").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "index.html").write_text("<html>CC-UI</html>")
    (root / "static" / "js" / "main.js").write_text("console.log(1)")
    return str(root)


@pytest_twisted.ensureDeferred
async def test_static_files_around_the_api_under_cc(start_server: StartServer, tmp_path: Any) -> None:
    server = await start_server(static_dir=_ui(tmp_path))
    assert server.config.server.api_prefix == "/cc"
    index = await server.get("/", root=True, user=None)
    assert (index.status, index.raw) == (200, b"<html>CC-UI</html>")
    assert "text/html" in (index.header("content-type") or "")
    js = await server.get("/static/js/main.js", root=True, user=None)
    assert (js.status, js.raw) == (200, b"console.log(1)")
    assert (await server.get("/missing.js", root=True, user=None)).status == 404
    # no directory listings
    listing = await server.get("/empty/", root=True, user=None)
    assert listing.status == 404 and b"main.js" not in listing.raw
    listing = await server.get("/static/js/", root=True, user=None)
    assert listing.status == 404 and b"main.js" not in listing.raw
    # the API under the prefix, with and without the trailing slash
    for path in ("/cc", "/cc/"):
        answer = await server.get(path, root=True, user=None)
        assert answer.status == 200 and "version" in answer.json, path
    assert (await server.post("/tasks/query", {"aggregate": []})).status == 200
    assert (await server.post("/cc/tasks/query", {"aggregate": []}, root=True)).status == 200
    assert (await server.post("/tasks/query", {"aggregate": []}, root=True)).status in (404, 405)
    assert (await server.post("/cc/nope", {}, root=True)).json == {"error": "no such endpoint"}
    assert (await server.get("/cc/openapi.json", root=True, user=None)).json["servers"] == [{"url": "/cc"}]


@pytest_twisted.ensureDeferred
async def test_prefix_without_static_files(start_server: StartServer) -> None:
    server = await start_server(api_prefix="/api/v1")
    assert (await server.get("/", user=None)).json.get("version")
    assert (await server.post("/tasks/query", {"aggregate": []})).status == 200
    for path in ("/", "/tasks/query", "/api", "/api/v2/tasks/query"):
        answer = await server.post(path, {"aggregate": []}, root=True)
        assert answer.status == 404, path
        assert answer.json == {"error": "no such endpoint"}


@pytest_twisted.ensureDeferred
async def test_empty_prefix_with_static_files(start_server: StartServer, tmp_path: Any) -> None:
    server = await start_server(static_dir=_ui(tmp_path), api_prefix="")
    assert (await server.get("/", user=None)).raw == b"<html>CC-UI</html>"
    assert (await server.get("/static/js/main.js", user=None)).raw == b"console.log(1)"
    assert (await server.post("/tasks/query", {"aggregate": []})).status == 200
    assert (await server.get("/nodes")).status == 200
    assert (await server.get("/openapi.json", user=None)).status == 200


@pytest_twisted.ensureDeferred
async def test_cors_under_a_prefix(start_server: StartServer, tmp_path: Any) -> None:
    server = await start_server(static_dir=_ui(tmp_path), cors_origins=["https://ui.example.org"])
    answer = await server.request("OPTIONS", "/tasks/query", user=None, headers=PREFLIGHT)
    assert answer.status == 204
    assert answer.header("access-control-allow-origin") == "https://ui.example.org"
