"""Request bodies must be declared ``application/json`` (415 otherwise), and a 401 carries no
``WWW-Authenticate`` challenge: the two halves of the defence against cross-site form posts
riding on credentials a browser remembered (docs/security/browsers.inc).

The rule's pure function is tested on its own; the API tests run a real ``CCSite`` on a real
socket against every storage backend (tests/api/conftest.py)."""

from __future__ import annotations

import base64
import json

import pytest
import pytest_twisted

from ccserver.web.content_type import UnsupportedMediaType, check, is_json_type
from ccserver.web.errors import answer_for
from tests.api import conftest as api_fixtures
from tests.api.conftest import ADMIN, ALICE, Server, sample_task

# the fixtures of tests/api: a real CCSite on a real socket, real accounts, every store backend
hash_pool = api_fixtures.hash_pool
accounts = api_fixtures.accounts
start_server = api_fixtures.start_server
api_server = api_fixtures.api_server

ACCEPTED = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"Application/JSON; Charset=UTF-8",
    b'application/json;charset="utf-8"',
    b"application/json; charset=utf8",
    b"application/vnd.ccserver.task+json",
    b"application/merge-patch+json; charset=utf-8",
    b"  application/json  ",
    b"application/json; odata=verbose",
]

REFUSED = [
    (b"text/plain", "not 'text/plain'"),
    (b"text/plain; charset=utf-8", "not 'text/plain; charset=utf-8'"),
    (b"application/x-www-form-urlencoded", "not 'application/x-www-form-urlencoded'"),
    (b"multipart/form-data; boundary=xyz", "not 'multipart/form-data; boundary=xyz'"),
    (b"text/json", "not 'text/json'"),
    (b"application/jsonx", "not 'application/jsonx'"),
    (b"application/+json", "not 'application/+json'"),
    (b"text/x+json", "not 'text/x+json'"),
    (b"application/json, text/plain", "not 'application/json, text/plain'"),
    (b"", "not ''"),
    (b"application/json; charset=iso-8859-1", "charset='iso-8859-1'"),
    (b"application/json; charset=utf-16", "charset='utf-16'"),
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_json_types_are_accepted(value: bytes) -> None:
    check([value])


@pytest.mark.parametrize(("value", "message"), REFUSED)
def test_other_types_are_refused_naming_the_expected_one(value: bytes, message: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        check([value])
    assert answer_for(refused.value) == (415, refused.value.message)
    assert "application/json" in refused.value.message
    assert message in refused.value.message


def test_missing_and_repeated_headers_are_refused() -> None:
    for values in (None, []):
        with pytest.raises(UnsupportedMediaType, match="none was given"):
            check(values)
    with pytest.raises(UnsupportedMediaType, match="2 Content-Type headers"):
        check([b"application/json", b"text/plain"])


def test_is_json_type() -> None:
    assert is_json_type("application/json")
    assert is_json_type("application/problem+json")
    assert not is_json_type("application/json+xml")
    assert not is_json_type("application/a/b+json")


# --- through the real site ---------------------------------------------------------------------------

POST_ENDPOINTS = [
    "/tasks",
    "/tasks/cancel",
    "/tasks/query",
    "/task-groups/query",
    "/application-containers/query",
    "/data-containers/query",
    "/nodes",
    "/application-containers/callback",
    "/data-containers/callback",
]

#: what a cross-site HTML form can send without a preflight (and no type at all)
FORM_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b", None]


def text_plain_form_body() -> bytes:
    """The body a ``<form enctype="text/plain">`` with one field sends: ``name=value`` and a
    line break.  The attacker splits a JSON task inside a string (a tag), so that the whole
    body is a valid task with the tag ``experiment=1``."""
    task = json.dumps(sample_task(tags=["experiment1"]))
    cut = task.index('"experiment1"') + len('"experiment')
    name, value = task[:cut], task[cut:]
    return f"{name}={value}\r\n".encode()


@pytest_twisted.ensureDeferred
async def test_every_post_endpoint_refuses_other_types_with_415(api_server: Server) -> None:
    for path in POST_ENDPOINTS:
        for content_type in FORM_TYPES:
            answer = await api_server.request("POST", path, raw=b"{}", user=ADMIN, content_type=content_type)
            assert answer.status == 415, (path, content_type, answer.raw)
            assert answer.header("content-type") == "application/json"
            error = answer.json["error"]
            assert "Content-Type: application/json" in error, error


@pytest_twisted.ensureDeferred
async def test_a_text_plain_form_carrying_a_valid_task_creates_nothing(api_server: Server) -> None:
    raw = text_plain_form_body()
    assert "tasks" not in json.loads(raw)  # the body is a valid single task ...
    answer = await api_server.request("POST", "/tasks", raw=raw, user=ALICE, content_type="text/plain")
    assert answer.status == 415, answer.raw
    assert await api_server.store.count("tasks", {}) == 0
    # ... which is accepted when declared as JSON: the 415 is the only thing that refused it
    accepted = await api_server.request("POST", "/tasks", raw=raw, user=ALICE)
    assert accepted.status == 200, accepted.raw
    assert await api_server.store.count("tasks", {"tags": "experiment=1"}) == 1


@pytest_twisted.ensureDeferred
async def test_json_with_utf8_charset_and_json_suffix_types_work(api_server: Server) -> None:
    for content_type in ["application/json; charset=utf-8", "application/vnd.example+json"]:
        answer = await api_server.request("POST", "/tasks/query", {"aggregate": []}, content_type=content_type)
        assert answer.status == 200, (content_type, answer.raw)


@pytest_twisted.ensureDeferred
async def test_the_415_comes_after_authentication(api_server: Server) -> None:
    # no credentials: the 401 says so first, and tells nothing about the body
    answer = await api_server.request("POST", "/tasks", raw=b"a=b", user=None, content_type="text/plain")
    assert answer.status == 401


@pytest_twisted.ensureDeferred
async def test_no_401_carries_a_challenge(api_server: Server) -> None:
    null = "Basic " + base64.b64encode(b"null").decode()  # CC-UI's first request
    cases = [
        ("GET", "/token", {"Authorization": null}),
        ("GET", "/nodes", {"Authorization": null}),
        ("GET", "/token", {}),
        ("POST", "/tasks/query", {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}),
        ("GET", "/nodes", {"Authorization": "Bearer x"}),
    ]
    for method, path, headers in cases:
        body = {"aggregate": []} if method == "POST" else None
        answer = await api_server.request(method, path, body, user=None, headers=headers)
        assert answer.status == 401, (method, path)
        assert answer.header("www-authenticate") is None, (method, path)
        assert "error" in answer.json
    # a callback with a wrong key is a 401 as well
    answer = await api_server.post(
        "/application-containers/callback",
        {
            "callback_key": "k",
            "callback_type": 0,
            "container_id": "0" * 24,
            "content": {"state": 0, "description": "x"},
        },
        user=None,
    )
    assert answer.status == 401, answer.raw
    assert answer.header("www-authenticate") is None


@pytest_twisted.ensureDeferred
async def test_what_the_0_10_worker_sends_passes(api_server: Server) -> None:
    """CC-Container-Worker 0.10 posts its callbacks with ``requests.post(url, json=...)``;
    the same call, through the real ``requests``, reaches the callback check (a wrong key's
    401), not the 415."""
    import requests
    from twisted.internet.threads import deferToThread

    body = {
        "callback_key": "wrong",
        "callback_type": 0,
        "container_id": "0" * 24,
        "content": {"state": 0, "description": "Container started.", "exception": None, "telemetry": None},
    }
    url = api_server.api_url + "/application-containers/callback"
    answer = await deferToThread(requests.post, url, json=body, timeout=30)
    assert answer.request.headers["Content-Type"] == "application/json"
    assert answer.status_code == 401, answer.text
    assert answer.json() == {"error": "unknown container or wrong callback key"}
