"""The pure parts behind the routes: masking, id conversion, pipeline vetting, body parsing."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from bson import Decimal128, ObjectId
from hypothesis import given, settings
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from ccserver.document_checks import convert_ids
from ccserver.documents import MASK, mask_secrets, masking_update, to_client
from ccserver.errors import BadId, Invalid, NotStorable, QueryRefused
from ccserver.queries import ALLOWED_STAGES, DENIED_OPERATORS, vet
from ccserver.tasks import Submitter
from ccserver.vault import Vault
from ccserver.web.bodies import parse, validate
from ccserver.web.openapi import document
from ccserver.web.schemas import FAST_VALIDATORS, REQUESTS, VALIDATORS
from tests.api.conftest import sample_task
from tests.api.strategies import body_for, json_values

COMPONENTS = document()["components"]["schemas"]


def test_to_client_masks_at_any_depth_and_converts_ids() -> None:
    oid = ObjectId()
    doc = {
        "_id": oid,
        "callback_key": "k",
        "input_file_keys": ["a", "b"],
        "a": [{"b": {"password": {"nested": 1}, "Api_KEY": 2, "ok": oid}}],
        "when": datetime.datetime(2020, 1, 2, 3, 4, 5),
        "d": Decimal128("1.5"),
        "f": float("nan"),
        "raw": b"\x00\x01",
    }
    assert to_client(doc) == {
        "_id": str(oid),
        "callback_key": MASK,
        "input_file_keys": MASK,
        "a": [{"b": {"password": MASK, "Api_KEY": MASK, "ok": str(oid)}}],
        "when": "2020-01-02T03:04:05",
        "d": "1.5",
        "f": None,
        "raw": "AAE=",
    }
    json.dumps(to_client(doc), allow_nan=False)


def test_mask_secrets_keeps_ids() -> None:
    oid = ObjectId()
    doc = {"_id": oid, "registry_auth": {"username": "u", "password": "p"}, "callback_key": "x"}
    assert mask_secrets(doc) == {"_id": oid, "registry_auth": {"username": "u", "password": MASK}, "callback_key": MASK}
    assert doc["registry_auth"]["password"] == "p"  # a copy


def test_masking_update_sets_only_secret_paths() -> None:
    task = sample_task()
    task["callback_key"] = "x"
    update = masking_update(task)
    assert update == {
        "$set": {
            "application_container_description.registry_auth.password": MASK,
            "notifications": mask_secrets(task["notifications"]),
            "callback_key": MASK,
        }
    }
    assert masking_update({"a": 1, "b": [1, {"c": 2}]}) == {}


@given(json_values)
def test_to_client_always_renders_as_strict_json(value: Any) -> None:
    json.dumps(to_client({"v": value}), allow_nan=False)


def test_convert_ids_below_id_keys_only() -> None:
    a, b = ObjectId(), ObjectId()
    body = {
        "_id": str(a),
        "task_ids": [str(a), str(b)],
        "x": str(a),
        "t": {"$in": [str(a)]},
        "task_group_id": {"$in": [str(b)]},
        "n": {"data_container_ids": {"$all": [str(a)]}},
    }
    assert convert_ids(body) == {
        "_id": a,
        "task_ids": [a, b],
        "x": str(a),
        "t": {"$in": [str(a)]},
        "task_group_id": {"$in": [b]},
        "n": {"data_container_ids": {"$all": [a]}},
    }
    with pytest.raises(BadId, match=r"tasks\[1\]\._id: 'nope' is not a valid id"):
        convert_ids({"tasks": [{"_id": str(a)}, {"_id": "nope"}]})


def test_vet_prepends_the_user_filter_for_standard_users() -> None:
    oid = ObjectId()
    # merged into a leading $match (MongoDB accepts $text only in the first stage)
    vetted = vet([{"$match": {"_id": str(oid)}}], "alice")
    assert vetted == [{"$match": {"$and": [{"username": "alice"}, {"_id": oid}]}}]
    assert vet([{"$limit": 1}], "alice") == [{"$match": {"username": "alice"}}, {"$limit": 1}]
    assert vet([], None) == []
    assert vet([{"$group": {"_id": "$username"}}], None) == [{"$group": {"_id": "$username"}}]


@pytest.mark.parametrize("operator", sorted(DENIED_OPERATORS))
def test_vet_refuses_each_denied_operator_at_depth(operator: str) -> None:
    nested = [{"$match": {"$and": [{"x": {"$elemMatch": {operator: 1}}}]}}]
    with pytest.raises(QueryRefused, match=operator.replace("$", r"\$")):
        vet(nested, None)
    with pytest.raises(QueryRefused):
        vet([{"$project": {"a": [[{"b": {operator: {}}}]]}}], "alice")


#: a well-formed argument of each stage that takes a count; the others take an object
_STAGE_ARGUMENTS: dict[str, Any] = {"$limit": 5, "$skip": 0, "$sample": {"size": 2}}


@pytest.mark.parametrize("stage", sorted(ALLOWED_STAGES))
def test_vet_accepts_each_allowed_stage(stage: str) -> None:
    argument = _STAGE_ARGUMENTS.get(stage, {})
    assert vet([{stage: argument}], None) == [{stage: argument}]


def test_vet_refuses_deep_nesting() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = {"a": deep}
    with pytest.raises(QueryRefused, match="deeper"):
        vet([{"$match": deep}], None)


def test_validation_message_names_the_path() -> None:
    body = {"tasks": [sample_task() for _ in range(4)]}
    body["tasks"][3]["application_container_description"]["container_ram"] = "x"
    with pytest.raises(Invalid) as info:
        validate("Tasks", body)
    assert info.value.message == "tasks[3].application_container_description.container_ram: 'x' is not of type 'number'"


def test_parse_accepts_64_bit_integers_and_refuses_larger() -> None:
    assert parse(b'{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.5e300}') == {
        "a": 2**63 - 1,
        "b": -(2**63),
        "c": 1.5e300,
    }
    with pytest.raises(Invalid):
        parse(b'{"a": 9223372036854775808}')
    assert parse(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


def test_the_fast_validators_are_there() -> None:
    assert set(FAST_VALIDATORS) == set(REQUESTS)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_fast_and_reference_validators_agree(name: str) -> None:
    """Where the compiled check accepts, the reference must accept too (the other way round
    the reference is asked anyway)."""
    fast, reference = FAST_VALIDATORS[name], VALIDATORS[name]

    @settings(max_examples=150, deadline=None, database=None)
    @given(body_for({"$ref": f"#/components/schemas/{name}"}, COMPONENTS))
    def agree(body: Any) -> None:
        try:
            fast(body)
        except Exception:  # noqa: BLE001
            return
        assert reference.is_valid(body), body

    agree()


class _SlowStore:
    """insert_many waits for the test; everything else is not needed here."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.pending: list[Deferred[list[Any]]] = []

    def insert_many(self, collection: str, docs: list[dict[str, Any]]) -> Deferred[list[Any]]:
        self.calls.append((collection, len(docs)))
        d: Deferred[list[Any]] = Deferred()
        if any(doc.get("tags") == ["bad"] for doc in docs):
            d.errback(ValueError("refused"))
            return d
        self.pending.append(d)
        return d

    def delete_many(self, collection: str, filter: Any) -> Deferred[int]:
        return succeed(0)

    def release(self) -> None:
        while self.pending:
            self.pending.pop(0).callback([])


class _User:
    username = "alice"
    is_admin = False


def test_submitter_groups_concurrent_submissions_and_survives_gone_clients() -> None:
    store = _SlowStore()
    submitter = Submitter(store, Clock(), Vault(store, b"k" * 32))  # type: ignore[arg-type]
    first = submitter.submit(_User(), sample_task())
    assert store.calls == [("secrets", 1)]  # the tasks' secrets first, then groups, then tasks
    waiting = [submitter.submit(_User(), sample_task()) for _ in range(5)]
    waiting[0].addErrback(lambda f: None)
    waiting[0].cancel()  # a client that went away
    for _ in range(3):  # the first write: its secrets, its groups, then its tasks
        store.release()
    assert isinstance(first.result["_id"], ObjectId)
    for _ in range(3):
        store.release()
    assert store.calls == [
        ("secrets", 1),
        ("task_groups", 1),
        ("tasks", 1),
        ("secrets", 5),
        ("task_groups", 5),
        ("tasks", 5),
    ]
    assert all(isinstance(d.result["_id"], ObjectId) for d in waiting[1:])


def test_submitter_isolates_a_failing_submission() -> None:
    store = _SlowStore()
    submitter = Submitter(store, Clock(), Vault(store, b"k" * 32))  # type: ignore[arg-type]
    first = submitter.submit(_User(), sample_task())
    good = submitter.submit(_User(), sample_task())
    bad = submitter.submit(_User(), sample_task(tags=["bad"]))
    store.release()
    store.release()
    assert "_id" in first.result
    store.release()  # combined write of good and bad: groups, then tasks fail; then one by one
    store.release()
    store.release()
    assert "_id" in good.result
    failures: list[Any] = []
    bad.addErrback(failures.append)
    assert failures and failures[0].check(ValueError)


def test_submitter_refuses_unstorable_bodies_at_once() -> None:
    submitter = Submitter(_SlowStore(), Clock(), Vault(_SlowStore(), b"k" * 32))  # type: ignore[arg-type]
    task = sample_task(input_files=[{"connector_type": "x", "connector_access": {"$bad": 1}}])
    failures: list[Any] = []
    submitter.submit(_User(), task).addErrback(failures.append)
    assert failures[0].check(NotStorable)
