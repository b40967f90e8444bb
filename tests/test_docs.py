"""The admin guide builds without a warning (Sphinx ``-W``): every page is in the toctree,
every included section exists, every cross-reference resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_documentation_builds_without_warnings(tmp_path: Path) -> None:
    sphinx = Path(sys.executable).with_name("sphinx-build")
    result = subprocess.run(
        [str(sphinx), "-W", "--keep-going", "-q", "-b", "html", str(REPO / "docs"), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "security.html").exists()
