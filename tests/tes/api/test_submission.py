"""Submission: secret masking (pure), and a task that was stored is never answered 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from ccserver.auth.guard import User
from ccserver.documents import MASK
from ccserver.storage.base import StorageUnavailable, Store
from ccserver.tes.submission import Storage, is_secret_env, mask_url, prepare
from ccserver.tes.tasks import TesTasks
from ccserver.vault import Vault
from tests.tes.api.conftest import sample_tes_task


@pytest.mark.parametrize(
    "url, masked",
    [
        ("ftp://user:pw@example.org/x", f"ftp://user:{MASK}@example.org/x"),
        ("https://u:p%40ss@h:8443/a?b=c#d", f"https://u:{MASK}@h:8443/a?b=c#d"),
        ("s3://key:secret@bucket/obj", f"s3://key:{MASK}@bucket/obj"),
        ("https://:only-password@h/x", f"https://:{MASK}@h/x"),
        ("https://user@h/x", "https://user@h/x"),
        ("https://h/x?token=abc", "https://h/x?token=abc"),
        ("http://[::1", "http://[::1"),  # not a URL: left alone (and refused elsewhere)
    ],
)
def test_passwords_in_urls_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "api_key", "GITHUB_TOKEN", "DB_PASS", "Authorization"])
def test_secret_looking_env_names(name: str) -> None:
    assert is_secret_env(name)


def test_plain_env_names_are_kept() -> None:
    assert not any(map(is_secret_env, ["HOME", "PATH", "GREETING", "THREADS"]))


def test_a_task_without_secrets_keeps_nothing_in_the_vault() -> None:
    body = sample_tes_task(inputs=[], outputs=[], executors=[{"image": "x", "command": ["true"], "env": {"A": "b"}}])
    assert prepare("alice", body, 1.0, Storage()).secrets is None


class InsertReportsAnError:
    """A real store whose next insert into tes_tasks reports a failure, after writing (the
    reply of the database lost) or without writing."""

    def __init__(self, store: Store, writes: bool) -> None:
        self.store = store
        self.writes = writes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def insert_one(self, collection: str, doc: dict[str, Any]) -> Any:
        if collection == "tes_tasks":
            if self.writes:
                await self.store.insert_one(collection, doc)
            raise StorageUnavailable("connection lost")
        return await self.store.insert_one(collection, doc)


@pytest_twisted.ensureDeferred
async def test_a_stored_task_is_answered_even_when_its_insert_reported_an_error(store: Store) -> None:
    vault = Vault(store, b"k" * 32)
    woken: list[int] = []
    tasks = TesTasks(InsertReportsAnError(store, writes=True), vault, reactor, lambda: woken.append(1))  # type: ignore[arg-type]
    prepared = prepare("alice", sample_tes_task(), reactor.seconds(), Storage())
    task_id = await tasks.submit(prepared)
    assert task_id == str(prepared.document["_id"])
    assert await store.count("tes_tasks", {}) == 1
    assert await vault.kept([prepared.document["_id"]]) == {prepared.document["_id"]}
    assert woken == [1]
    assert (await tasks.get(User("alice", False), task_id))["state"] == "QUEUED"


@pytest_twisted.ensureDeferred
async def test_a_task_that_was_not_stored_fails_and_leaves_no_secrets(store: Store) -> None:
    vault = Vault(store, b"k" * 32)
    tasks = TesTasks(InsertReportsAnError(store, writes=False), vault, reactor, lambda: None)  # type: ignore[arg-type]
    prepared = prepare("alice", sample_tes_task(), reactor.seconds(), Storage())
    with pytest.raises(StorageUnavailable):
        await tasks.submit(prepared)
    assert await store.count("tes_tasks", {}) == 0
    assert await vault.kept([prepared.document["_id"]]) == set()


def test_storage_and_defaults_come_from_the_configuration_when_it_has_them() -> None:
    from dataclasses import dataclass

    from ccserver.tes.submission import Defaults

    @dataclass
    class S3:
        endpoint_url: str

    @dataclass
    class Section:
        file_roots: tuple[str, ...]
        s3: S3 | None

    @dataclass
    class Tes:
        storage: Section
        default_ram_gb: float = 2.0
        default_cpu_cores: float = 0.5

    @dataclass
    class Config:
        tes: Any

    config = Config(Tes(Section(("/srv/data/",), S3("http://s3"))))
    assert Storage.from_config(config) == Storage(file_roots=("/srv/data",), s3=True)
    assert Defaults.from_config(config) == Defaults(ram_gb=2.0, cpu_cores=0.5)
    from ccserver.config import from_dict

    plain = from_dict({}, None, env={"HOME": "/nonexistent"})
    assert Storage.from_config(plain) == Storage() and Defaults.from_config(plain) == Defaults()
    doc = prepare(
        "alice", sample_tes_task(resources=None), 1.0, Storage(), Defaults(ram_gb=2.0, cpu_cores=0.5)
    ).document
    assert (doc["ram_mb"], doc["cpus"]) == (2048, 0.5)
