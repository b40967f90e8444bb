"""``check_url`` (what the API refuses at submission) and the URL helpers: pure functions."""

from __future__ import annotations

import pytest

from ccserver.config import S3Config, StorageConfig
from ccserver.tes.locations import check_url, file_path, join_url, redact
from ccserver.tes.staging import check_url as exported

ROOTS = StorageConfig(file_roots=("/shared/data", "/scratch/"), s3=S3Config(endpoint_url="http://s3.local:9000"))
NO_S3 = StorageConfig(file_roots=("/shared/data",))


def test_the_staging_module_exports_it() -> None:
    assert exported is check_url


@pytest.mark.parametrize(
    "url",
    [
        "http://host/x",
        "https://user:pw@host:8443/a/b?sig=1",
        "ftp://host/dir/file",
        "s3://bucket/key/part",
        "file:///shared/data/in.txt",
        "file:///shared/data",
        "file://localhost/scratch/x/y",
        "file:///shared/data/sub/../other.txt",
        "file:///shared/data/with%20space.txt",
    ],
)
def test_accepted(url: str) -> None:
    assert check_url(url, ROOTS) is None


@pytest.mark.parametrize(
    ("url", "kwargs", "reason"),
    [
        ("gs://bucket/key", {}, "unsupported URL scheme gs://; supported: http://, https://, ftp://, s3://, file://"),
        ("/just/a/path", {}, "unsupported URL scheme (none)"),
        ("http:///nohost", {}, "http:// URL names no host"),
        ("http://host:99999/x", {}, "not a valid URL"),
        ("http://host/d", {"kind": "DIRECTORY"}, "DIRECTORY inputs cannot come from http(s)://"),
        ("s3://bucket/key", {"storage": NO_S3}, "s3:// is not configured on this server ([tes.storage.s3])"),
        ("s3:///key", {}, "s3:// URL names no bucket"),
        ("s3://bucket", {}, "s3:// URL names no object key"),
        ("file:///etc/passwd", {}, "/etc/passwd is outside the allowed directories ([tes.storage] file_roots)"),
        ("file:///shared/data/../../etc/passwd", {}, "/etc/passwd is outside the allowed directories"),
        ("file:///shared/database/x", {}, "/shared/database/x is outside the allowed directories"),
        ("file:///shared/data%2F..%2F..%2Fetc/passwd", {}, "/etc/passwd is outside the allowed directories"),
        ("file://otherhost/shared/data/x", {}, "file:// URL names host 'otherhost'; only local paths are allowed"),
        ("file:relative/path", {}, "file:// URL needs an absolute path"),
        (
            "file:///x",
            {"storage": StorageConfig()},
            "file:// is not allowed on this server ([tes.storage] file_roots is empty)",
        ),
    ],
)
def test_refused_with_a_reason(url: str, kwargs: dict[str, object], reason: str) -> None:
    storage = kwargs.pop("storage", ROOTS)
    result = check_url(url, storage, **kwargs)  # type: ignore[arg-type]
    assert result is not None and result.startswith(reason), result


def test_directory_outputs_may_go_to_http() -> None:
    assert check_url("http://host/d/", ROOTS, kind="DIRECTORY", output=True) is None
    assert check_url("s3://bucket", ROOTS, kind="DIRECTORY") is None  # a whole bucket


def test_redact_removes_only_the_password() -> None:
    assert redact("ftp://user:s3cret@host:21/x?y=1") == "ftp://user@host:21/x?y=1"
    assert redact("https://:tok@host/x") == "https://host/x"
    assert redact("http://[::1]:8080/x") == "http://[::1]:8080/x"
    assert redact("https://u:p@[2001:db8::1]/x") == "https://u@[2001:db8::1]/x"
    assert redact("s3://bucket/key") == "s3://bucket/key"


def test_file_path_and_join_url() -> None:
    assert file_path("file:///a/./b/../c%20d") == "/a/c d"
    assert file_path("file:////double") == "/double"
    assert join_url("s3://b/prefix/", "sub/x y.txt") == "s3://b/prefix/sub/x%20y.txt"
    assert join_url("http://h/up", "/a") == "http://h/up/a"
    assert join_url("ftp://u:p@h/d", "") == "ftp://u:p@h/d"


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("/d/*.txt", ["/d/a.txt", "/d/.txt"], ["/d/a.txt/x", "/d/sub/a.txt", "/d/a.txtx"]),
        ("/d/*/*.txt", ["/d/a/b.txt"], ["/d/a/b/c.txt", "/d/b.txt"]),
        ("/d/?.log", ["/d/a.log"], ["/d/ab.log", "/d//.log"]),
        ("/d/[ab]*", ["/d/a", "/d/bcd"], ["/d/c"]),
        ("/d/[!ab]*", ["/d/c"], ["/d/a"]),
        ("/d/a+b(1).txt", ["/d/a+b(1).txt"], ["/d/aab(1).txt"]),
    ],
)
def test_wildcards_match_like_a_shell(pattern: str, matches: list[str], misses: list[str]) -> None:
    from ccserver.tes.output_archive import _pattern

    compiled = _pattern(pattern)
    assert [p for p in matches if compiled.match(p)] == matches
    assert [p for p in misses if compiled.match(p)] == []


def test_advertised_storage_for_service_info() -> None:
    from ccserver.tes.locations import advertised_storage

    assert advertised_storage(ROOTS) == [
        "http://",
        "https://",
        "ftp://",
        "s3://",
        "file:///shared/data",
        "file:///scratch/",
    ]
    assert advertised_storage(StorageConfig()) == ["http://", "https://", "ftp://"]
