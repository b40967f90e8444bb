"""The token source's timing and failure rules on a fake clock (pure logic); the same against
real servers: tests/kubernetes/test_api.py (local HTTPS) and tests/kube/test_kube_node.py (a
real API server refusing a token whose bound object went)."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from ccserver.kubernetes.credentials import CredentialsError, token_text
from ccserver.kubernetes.tokens import REFRESH_SECONDS, TokenSource

WHERE = "kubernetes.clusters.k1.token_file"


class Files:
    def __init__(self, text: str) -> None:
        self.text = text
        self.reads = 0
        self.pending: list[Deferred[bytes]] = []
        self.hold = False
        self.error: Exception | None = None

    def read(self, path: str) -> Deferred[bytes]:
        assert path == "/run/token"
        self.reads += 1
        if self.error is not None:
            return fail(self.error)
        if self.hold:
            d: Deferred[bytes] = Deferred()
            self.pending.append(d)
            return d
        return succeed(self.text.encode())


def source(files: Files, clock: Clock, path: str | None = "/run/token") -> TokenSource:
    return TokenSource("one", path, WHERE, clock, token_text, read_file=files.read)


def test_the_file_is_read_again_once_a_period_has_passed() -> None:
    clock, files = Clock(), Files("two\n")
    tokens = source(files, clock)
    tokens.refresh_if_due()
    assert files.reads == 0 and tokens.token == "one"
    clock.advance(REFRESH_SECONDS - 1)
    tokens.refresh_if_due()
    assert files.reads == 0
    clock.advance(1)
    tokens.refresh_if_due()
    assert files.reads == 1 and tokens.token == "two"
    tokens.refresh_if_due()  # just read: not due
    assert files.reads == 1


def test_callers_during_a_read_share_it() -> None:
    clock, files = Clock(), Files("two")
    files.hold = True
    tokens = source(files, clock)
    results: list[bool] = []
    tokens.refresh().addCallback(results.append)
    tokens.refresh().addCallback(results.append)
    assert files.reads == 1 and results == []
    files.pending[0].callback(b"two\n")
    assert results == [True, True] and tokens.token == "two"
    files.hold = False
    tokens.refresh().addCallback(results.append)
    assert results == [True, True, False] and files.reads == 2  # read again: unchanged


def test_an_unreadable_or_empty_file_keeps_the_last_token_and_names_the_setting() -> None:
    clock, files = Clock(), Files("")
    tokens = source(files, clock)
    results: list[bool] = []
    tokens.refresh().addCallback(results.append)
    assert results == [False] and tokens.token == "one"
    assert tokens.problem is not None and tokens.problem.startswith(WHERE)
    files.error = FileNotFoundError(2, "No such file or directory", "/run/token")
    tokens.refresh().addCallback(results.append)
    assert results == [False, False] and tokens.token == "one"
    assert tokens.problem == f"{WHERE}: No such file or directory"
    files.error, files.text = None, "three"
    tokens.refresh().addCallback(results.append)
    assert results == [False, False, True] and tokens.token == "three" and tokens.problem is None


def test_an_inline_token_is_never_read() -> None:
    clock, files = Clock(), Files("two")
    tokens = source(files, clock, path=None)
    clock.advance(10 * REFRESH_SECONDS)
    tokens.refresh_if_due()
    results: list[bool] = []
    tokens.refresh().addCallback(results.append)
    assert results == [False] and files.reads == 0 and tokens.token == "one"


def test_token_text_rejects_two_tokens() -> None:
    try:
        token_text(b"a b\n", WHERE)
    except CredentialsError as e:
        assert str(e).startswith(WHERE)
    else:
        raise AssertionError("two words were taken for a token")
