"""``ccserver-admin demo-image``: its pure parts, and a clear refusal of a base that is not here
(the build itself runs in tests/dashboard/test_quickstart.py)."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

from ccserver.demo_image import build_context, debian_mirror


def test_the_mirror_comes_from_the_apt_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    )
    assert debian_mirror([deb822]) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("# a comment\ndeb [arch=amd64 signed-by=/k.gpg] https://other.example/debian bookworm main\n")
    assert debian_mirror([tmp_path / "missing", one_line]) == "https://other.example/debian"
    assert debian_mirror([]) == "http://deb.debian.org/debian"


def test_the_context_holds_the_worker_the_app_and_the_base() -> None:
    with tarfile.open(fileobj=io.BytesIO(build_context("some/base:2"))) as tar:
        names = set(tar.getnames())
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
    assert dockerfile.startswith("FROM some/base:2\n")
    assert {"app.py", "config.json", "container_worker/__main__.py", "container_worker/application.py"} <= names


def test_a_missing_base_image_is_a_one_line_error() -> None:
    admin = str(Path(sys.executable).with_name("ccserver-admin"))
    done = subprocess.run(
        [admin, "demo-image", "--from", "ccserver-test/no-such-image:0", "--tag", "ccserver-test/never:0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "ccserver-admin: no local image ccserver-test/no-such-image:0: pull it first "
        "(docker pull ccserver-test/no-such-image:0) or leave out --from"
    ]
