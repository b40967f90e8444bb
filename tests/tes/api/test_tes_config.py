"""``[tes]`` keys of the API: defaults, values, and errors that name the key."""

from __future__ import annotations

import pytest

from ccserver.config import ConfigError, TesConfig, from_dict


def test_defaults_serve_tes_without_an_anonymous_user() -> None:
    assert from_dict({}, None, env={"HOME": "/nonexistent"}).tes == TesConfig(enabled=True, anonymous_user=None)


def test_values_are_read() -> None:
    raw = {"tes": {"enabled": False, "anonymous_user": "workflows"}}
    assert from_dict(raw, "c.toml", env={"HOME": "/x"}).tes == TesConfig(enabled=False, anonymous_user="workflows")


@pytest.mark.parametrize(
    "tes, message",
    [
        ({"enabled": "yes"}, "c.toml: tes.enabled: expected boolean"),
        ({"anonymous_user": ""}, "c.toml: tes.anonymous_user:"),
        ({"anonymous": "x"}, "c.toml: tes.anonymous: unknown key"),
    ],
)
def test_errors_name_the_file_and_key(tes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict({"tes": tes}, "c.toml", env={"HOME": "/x"})
    assert str(caught.value).startswith(message)
