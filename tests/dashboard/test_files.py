"""The dashboard's files are served at <prefix>/ui/ from the package, with their content types
and a strict Content-Security-Policy; CC-UI's static directory keeps "/"."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from ccserver.web import dashboard_files
from tests.api.conftest import Server, StartServer

UI = Path(dashboard_files.__file__).resolve().parent / "ui"


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_modules_with_their_types(api_server: Server) -> None:
    page = await api_server.get("/ui/", user=None)
    assert page.status == 200
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert page.raw == (UI / "index.html").read_bytes()
    csp = page.header("content-security-policy") or ""
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.header("x-content-type-options") == "nosniff"
    for name, kind in (("app.js", "text/javascript"), ("pages/task.js", "text/javascript"), ("states.css", "text/css")):
        answer = await api_server.get("/ui/" + name, user=None)
        assert answer.status == 200, name
        assert (answer.header("content-type") or "").startswith(kind), name
        assert answer.raw == (UI / name).read_bytes()
        assert answer.header("content-security-policy") == csp


@pytest_twisted.ensureDeferred
async def test_unknown_files_methods_and_the_missing_slash(api_server: Server) -> None:
    for path in ("/ui/nothing.js", "/ui/../setup.py", "/ui/pages", "/ui/%2e%2e/api.py"):
        answer = await api_server.get(path, user=None)
        assert answer.status == 404, path
        assert "error" in answer.json
    posted = await api_server.post("/ui/app.js", {}, user=None)
    assert posted.status == 405
    bare = await api_server.http.get(api_server.api_url + "/ui", allow_redirects=False)
    await bare.content()
    assert bare.code == 301
    assert bare.headers.getRawHeaders("location") == ["ui/"]


@pytest_twisted.ensureDeferred
async def test_under_the_prefix_next_to_cc_ui(start_server: StartServer, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>CC-UI</p>")
    server = await start_server(static_dir=str(site))
    assert server.config.server.api_prefix == "/cc"
    root = await server.get("/", user=None, root=True)
    assert (root.status, root.raw) == (200, b"<p>CC-UI</p>")
    page = await server.get("/cc/ui/", user=None, root=True)
    assert page.status == 200 and page.raw == (UI / "index.html").read_bytes()
    module = await server.get("/cc/ui/session.js", user=None, root=True)
    assert module.status == 200 and module.raw == (UI / "session.js").read_bytes()


def test_every_file_is_in_the_package_data() -> None:
    # setup.py's package_data globs must cover every file load() serves, or `pip install .`
    # ships a dashboard with missing modules
    import ast
    import fnmatch

    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    tree = ast.parse(setup)
    globs: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "package_data":
            globs = [g.value for g in node.value.values[0].elts]  # type: ignore[attr-defined]
    served = dashboard_files.load()
    assert served
    for name in served:
        assert any(fnmatch.fnmatch("web/ui/" + name, g) for g in globs), name
