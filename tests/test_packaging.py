"""A plain (not editable) `pip install .` into a fresh venv gives `twistd ccserver` and
`ccserver-admin`; the plugin lands in site-packages.  The lock files (requirements/*.txt, written
by scripts/lock) name every dependency of setup.py, pinned to a version it accepts, with hashes."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCKS = REPO / "requirements"
# what the locks are compiled for (scripts/lock: --python-version 3.11, linux x86_64)
TARGET = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}


def declared(setup_py: Path) -> dict[str, list[Requirement]]:
    """The requirements of setup.py's setup() call: "" for install_requires, else the extra's name."""
    tree = ast.parse(setup_py.read_text(encoding="utf-8"))
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setup"
    )
    keywords = {k.arg: k.value for k in call.keywords}
    groups: dict[str, list[str]] = {"": ast.literal_eval(keywords["install_requires"])}
    if "extras_require" in keywords:
        groups.update(ast.literal_eval(keywords["extras_require"]))
    return {name: [Requirement(r) for r in reqs] for name, reqs in groups.items()}


def pinned(lock: Path) -> dict[str, tuple[Version, list[str]]]:
    """Canonical name -> (pinned version, hashes) of a `pip --require-hashes` lock file."""
    text = re.sub(r"\\\n", " ", lock.read_text(encoding="utf-8"))
    pins: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", spec)
        assert match, f"{lock.name}: {spec!r} is not pinned with =="
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
        assert len(hashes) == len(options), f"{lock.name}: {spec} has options other than sha256 hashes: {options}"
        pins[canonicalize_name(match[1])] = (Version(match[2]), hashes)
    return pins


def unlocked(requirements: list[Requirement], pins: dict[str, tuple[Version, list[str]]]) -> list[str]:
    """The requirements a lock lacks, or pins at a version the requirement does not accept."""
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate({**TARGET, "extra": ""}):
            continue
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pin[0], prereleases=True):
            problems.append(f"{req} does not accept the locked {pin[0]}")
    return problems


def test_the_daemon_lock_has_every_install_requirement() -> None:
    problems = unlocked(declared(REPO / "setup.py")[""], pinned(LOCKS / "daemon.txt"))
    assert not problems, f"run scripts/lock: {problems}"


def test_the_dev_lock_has_every_requirement_and_every_extra() -> None:
    groups = declared(REPO / "setup.py")
    assert set(groups) >= {"", "test", "lint", "docs"}
    problems = unlocked([r for reqs in groups.values() for r in reqs], pinned(LOCKS / "dev.txt"))
    assert not problems, f"run scripts/lock: {problems}"


def test_the_locks_pin_the_build_backend_of_pyproject() -> None:
    build = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    listed = [line.strip() for line in (LOCKS / "build.in").read_text(encoding="utf-8").splitlines()]
    assert sorted(build) == sorted(line for line in listed if line and not line.startswith("#"))
    for lock in ("daemon.txt", "dev.txt"):
        assert not unlocked([Requirement(r) for r in build], pinned(LOCKS / lock)), lock


@pytest.mark.parametrize("lock", ["daemon.txt", "dev.txt"])
def test_every_pin_carries_sha256_hashes(lock: str) -> None:
    pins = pinned(LOCKS / lock)
    assert len(pins) > 10
    for name, (_, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_the_daemon_runs_with_the_versions_the_tests_ran_with() -> None:
    daemon, dev = pinned(LOCKS / "daemon.txt"), pinned(LOCKS / "dev.txt")
    assert {name: pin[0] for name, pin in daemon.items()} == {name: dev[name][0] for name in daemon}


def test_a_dependency_added_to_setup_py_without_a_refresh_is_caught(tmp_path: Path) -> None:
    setup_py = (REPO / "setup.py").read_text(encoding="utf-8")
    added = setup_py.replace("install_requires=[", 'install_requires=["No_Such.Dependency>=1", "DOCKER>=999",', 1)
    assert added != setup_py
    (tmp_path / "setup.py").write_text(added, encoding="utf-8")
    problems = unlocked(declared(tmp_path / "setup.py")[""], pinned(LOCKS / "daemon.txt"))
    assert any(p.startswith("No_Such.Dependency>=1 is not in the lock") for p in problems), problems
    assert any(p.startswith("DOCKER>=999 does not accept") for p in problems), problems
    assert len(problems) == 2, problems


def test_plain_install_gives_the_plugin_and_the_admin_command(tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    py = target / "bin" / "python"
    # a copy of the files git knows (not .venv, not build output), so the build starts clean
    src = tmp_path / "src"
    src.mkdir()
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    existing = b"\0".join(f for f in files.split(b"\0") if f and (REPO / f.decode()).exists())
    subprocess.run(
        ["tar", "-C", str(REPO), "--null", "-T", "-", "-c", "-f", str(tmp_path / "src.tar")], input=existing, check=True
    )
    subprocess.run(["tar", "-C", str(src), "-x", "-f", str(tmp_path / "src.tar")], check=True)
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    site = subprocess.run(
        [str(py), "-c", "import twisted.plugins.ccserver_plugin as m, ccserver; print(m.__file__, ccserver.__file__)"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        check=True,
    ).stdout.split()
    assert all("/site-packages/" in path for path in site), site

    help_text = subprocess.run(
        [str(target / "bin" / "twistd"), "ccserver", "--help"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "--config=" in help_text.stdout and "--listen=" in help_text.stdout
    listed = subprocess.run(
        [str(target / "bin" / "twistd"), "--help"], capture_output=True, text=True, cwd=str(tmp_path), timeout=60
    )
    assert "ccserver" in listed.stdout

    admin = subprocess.run(
        [
            str(target / "bin" / "ccserver-admin"),
            "--config",
            str(REPO / "conf" / "sample_local_docker_config.toml"),
            "check-config",
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert admin.returncode == 0, admin.stderr
    assert "OK" in admin.stdout

    # the dashboard's files are package data: the installed package serves the same files
    served = subprocess.run(
        [str(py), "-c", "from ccserver.web.dashboard_files import load; print(' '.join(sorted(load())))"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert served.returncode == 0, served.stderr
    ui = REPO / "ccserver" / "web" / "ui"
    expected = sorted(p.relative_to(ui).as_posix() for p in ui.rglob("*") if p.is_file())
    assert served.stdout.split() == expected
