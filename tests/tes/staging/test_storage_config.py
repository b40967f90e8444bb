"""``[tes.storage]`` and ``[tes.storage.s3]`` read into :class:`StorageConfig`."""

from __future__ import annotations

import pytest

from ccserver.config import ConfigError, S3Config, StorageConfig, from_dict


def test_defaults_without_the_section() -> None:
    config = from_dict({}, None, env={"HOME": "/home/x"})
    assert config.tes.storage == StorageConfig(file_roots=(), transfer_threads=4, s3=None)


def test_every_key() -> None:
    raw = {
        "tes": {
            "storage": {
                "file_roots": ["/shared/data/", "~/work/../in"],
                "transfer_threads": 2,
                "s3": {
                    "endpoint_url": "http://127.0.0.1:9000",
                    "region": "eu-west-1",
                    "access_key_id": "AK",
                    "secret_access_key": "SK",
                },
            }
        }
    }
    storage = from_dict(raw, "c.toml", env={"HOME": "/home/x"}).tes.storage
    assert storage.file_roots == ("/shared/data", "/home/x/in")
    assert storage.transfer_threads == 2
    assert storage.s3 == S3Config("http://127.0.0.1:9000", "eu-west-1", "AK", "SK")
    assert "SK" not in repr(storage)
    plain = from_dict({"tes": {"storage": {"s3": {}}}}, "c.toml", env={}).tes.storage.s3
    assert plain == S3Config(endpoint_url=None, region="us-east-1", access_key_id=None, secret_access_key=None)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ({"file_roots": ["relative/dir"]}, "c.toml: tes.storage.file_roots[0]: expected an absolute directory"),
        ({"s3": {"access_key_id": "AK"}}, "c.toml: tes.storage.s3: give both access_key_id and secret_access_key"),
        ({"transfer_threads": 0}, "c.toml: tes.storage.transfer_threads: 0 is less than the minimum of 1"),
        ({"s3": {"endpoint": "x"}}, "c.toml: tes.storage.s3.endpoint: unknown key"),
        ({"s3": {"endpoint_url": "minio:9000"}}, "c.toml: tes.storage.s3.endpoint_url: 'minio:9000' does not match"),
    ],
)
def test_errors_name_the_key(storage: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict({"tes": {"storage": storage}}, "c.toml", env={})
    assert str(caught.value).startswith(expected)
