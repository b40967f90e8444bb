"""A plain (not editable) `pip install .` into a fresh venv gives `twistd ccserver` and
`ccserver-admin`; the plugin lands in site-packages."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_plain_install_gives_the_plugin_and_the_admin_command(tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    py = target / "bin" / "python"
    # a copy of the files git knows (not .venv, not build output), so the build starts clean
    src = tmp_path / "src"
    src.mkdir()
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout
    existing = b"\0".join(f for f in files.split(b"\0") if f and (REPO / f.decode()).exists())
    subprocess.run(["tar", "-C", str(REPO), "--null", "-T", "-", "-c", "-f", str(tmp_path / "src.tar")],
                   input=existing, check=True)
    subprocess.run(["tar", "-C", str(src), "-x", "-f", str(tmp_path / "src.tar")], check=True)
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    site = subprocess.run(
        [str(py), "-c", "import twisted.plugins.ccserver_plugin as m, ccserver; print(m.__file__, ccserver.__file__)"],
        capture_output=True, text=True, cwd=str(tmp_path), check=True,
    ).stdout.split()
    assert all("/site-packages/" in path for path in site), site

    help_text = subprocess.run(
        [str(target / "bin" / "twistd"), "ccserver", "--help"],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=60,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "--config=" in help_text.stdout and "--listen=" in help_text.stdout
    listed = subprocess.run(
        [str(target / "bin" / "twistd"), "--help"], capture_output=True, text=True, cwd=str(tmp_path), timeout=60
    )
    assert "ccserver" in listed.stdout

    admin = subprocess.run(
        [str(target / "bin" / "ccserver-admin"), "--config", str(REPO / "conf" / "sample_local_docker_config.toml"),
         "check-config"],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=60,
    )
    assert admin.returncode == 0, admin.stderr
    assert "OK" in admin.stdout
