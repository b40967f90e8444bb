"""``ccserver-admin`` user commands, run for real (as a subprocess, and through a terminal),
and accounts in the 0.10 layout."""

from __future__ import annotations

import errno
import hashlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from ccserver.auth import users
from ccserver.auth.guard import Authenticator, User
from ccserver.config import EmbeddedConfig
from ccserver.storage import Store
from ccserver.storage.embedded import EmbeddedStore
from tests.auth import CountingPool, make_config, make_request, within

ADMIN = str(Path(sys.executable).with_name("ccserver-admin"))
COMMAND_SECONDS = 60.0


@pytest.fixture(params=["embedded", "ferretdb"])
def config_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    if request.param == "embedded":
        path.write_text(f'[embedded]\npath = "{tmp_path}/db/ccserver.sqlite3"\n')
    else:
        uri = request.getfixturevalue("ferretdb").uri
        path.write_text(f'[mongo]\nuri = "{uri}"\ndb = "cctest_{uuid.uuid4().hex[:16]}"\n')
    return path


def admin(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ADMIN, "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )


def test_create_list_set_password_delete(config_file: Path) -> None:
    created = admin(config_file, "create-user", "alice", "--password-stdin", stdin="pw-alice\n")
    assert (created.returncode, created.stdout) == (0, "created standard user alice\n"), created.stderr
    assert admin(config_file, "create-user", "carol", "--admin", "--password-stdin", stdin="pw-c\n").returncode == 0
    listed = admin(config_file, "list-users")
    assert (listed.returncode, listed.stdout) == (0, "alice\tuser\ncarol\tadmin\n")
    replaced = admin(config_file, "create-user", "alice", "--admin", "--password-stdin", stdin="pw2\n")
    assert replaced.stdout == "replaced admin alice\n"
    changed = admin(config_file, "set-password", "carol", "--password-stdin", stdin="new\n")
    assert changed.returncode == 0 and "pw" not in changed.stdout + changed.stderr
    deleted = admin(config_file, "delete-user", "carol")
    assert (deleted.returncode, deleted.stdout) == (0, "deleted user carol\n")
    assert admin(config_file, "list-users").stdout == "alice\tadmin\n"


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (("delete-user", "nobody"), "", "no such user: nobody"),
        (("set-password", "nobody", "--password-stdin"), "pw\n", "no such user: nobody"),
        (("create-user", "a:b", "--password-stdin"), "pw\n", "cannot contain ':'"),
        (("create-user", "alice", "--password-stdin"), "\n", "the password is empty"),
    ],
)
def test_errors_exit_2_with_one_line(config_file: Path, args: tuple[str, ...], stdin: str, message: str) -> None:
    result = admin(config_file, *args, stdin=stdin)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = admin(tmp_path / "missing.toml", "list-users")
    assert result.returncode == 2 and "configuration file not found" in result.stderr


# --- the interactive prompt, through a pseudo-terminal -------------------------------------------


class Terminal:
    """``ccserver-admin`` on a pseudo-terminal that is its controlling tty, as a person runs it."""

    def __init__(self, *argv: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            try:
                os.execv(ADMIN, [ADMIN, *argv])
            finally:
                os._exit(127)
        self.output = b""

    def expect(self, text: str, seconds: float = COMMAND_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while text.encode() not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} within {seconds}s; got {self.output!r}"
            if not self._read(remaining):
                raise AssertionError(f"the command ended before {text!r}; got {self.output!r}")

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def finish(self, seconds: float = COMMAND_SECONDS) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"the command did not end within {seconds}s; got {self.output!r}")

    def _read(self, seconds: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(seconds, 0))
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError as e:  # EIO: the child closed the terminal
            if e.errno != errno.EIO:
                raise
            return False
        self.output += chunk
        return bool(chunk)


@pytest.fixture
def embedded_config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "config.toml"
    path.write_text(f'[embedded]\npath = "{tmp_path}/db/ccserver.sqlite3"\n')
    yield path


def test_prompt_asks_twice_without_echo(embedded_config: Path) -> None:
    term = Terminal("--config", str(embedded_config), "create-user", "dave", "--admin")
    term.expect("Password: ")
    term.send("typed secret")
    term.expect("Repeat password: ")
    term.send("typed secret")
    assert term.finish() == 0
    assert b"created admin dave" in term.output
    assert b"typed secret" not in term.output  # not echoed, not printed
    assert admin(embedded_config, "list-users").stdout == "dave\tadmin\n"


def test_prompt_mismatch_is_an_error(embedded_config: Path) -> None:
    term = Terminal("--config", str(embedded_config), "create-user", "erin")
    term.expect("Password: ")
    term.send("one")
    term.expect("Repeat password: ")
    term.send("two")
    assert term.finish() == 2
    assert b"the passwords do not match" in term.output
    assert admin(embedded_config, "list-users").stdout == ""


# --- accounts the daemon will see ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cli_created_user_verifies_through_the_authenticator(embedded_config: Path, tmp_path: Path) -> None:
    assert admin(embedded_config, "create-user", "frank", "--password-stdin", stdin="frank's pw\n").returncode == 0
    store = EmbeddedStore(EmbeddedConfig(path=f"{tmp_path}/db/ccserver.sqlite3", synchronous="normal"), reactor)
    pool = CountingPool(reactor)
    await within(store.startService())
    pool.startService()
    try:
        auth = Authenticator(store, make_config(), reactor, pool)
        user = await within(auth.authenticate(make_request(("frank", "frank's pw"))))
        assert user == User("frank", False)
    finally:
        pool.pool.stop()
        await within(store.stopService())


@pytest_twisted.ensureDeferred
async def test_accounts_keep_the_0_10_layout(store: Store) -> None:
    pool = CountingPool(reactor)
    pool.startService()
    try:
        # written the way 0.10 did: raw PBKDF2 bytes, no help from ccserver
        salt = os.urandom(16)
        key = hashlib.pbkdf2_hmac("sha256", b"old pw", salt, 100000, 32)
        legacy = {"username": "old", "password": key, "salt": salt, "hash_function": "SHA256", "is_admin": True}
        await within(store.insert_one("users", legacy))
        auth = Authenticator(store, make_config(), reactor, pool)
        assert await within(auth.authenticate(make_request(("old", "old pw")))) == User("old", True)

        # and what ccserver writes, 0.10 could read
        assert await within(users.create_user(store, pool, "new", "new pw", False))
        doc = await within(store.find_one("users", {"username": "new"}))
        assert doc is not None
        assert (doc["hash_function"], doc["is_admin"], len(doc["salt"])) == ("SHA256", False, 16)
        assert doc["password"] == hashlib.pbkdf2_hmac("sha256", b"new pw", doc["salt"], 100000, 32)
        assert [u.username for u in await within(users.list_users(store))] == ["new", "old"]
    finally:
        pool.pool.stop()
