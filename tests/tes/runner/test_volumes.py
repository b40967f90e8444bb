"""The volume rule of a TES attempt (pure)."""

from __future__ import annotations

import pytest

from ccserver.tes.volumes import VolumeError, mount_points


def test_declared_volumes_first_then_one_per_directory_not_under_them() -> None:
    inputs = [
        {"path": "/data/in/a.txt", "type": "FILE"},
        {"path": "/data/in/b.txt", "type": "FILE"},
        {"path": "/work/sub/x", "type": "FILE"},
        {"path": "/refs", "type": "DIRECTORY"},
    ]
    outputs = [{"path": "/data/out/result.txt", "type": "FILE"}, {"path": "/refs/index/i", "type": "FILE"}]
    assert mount_points(["/work"], inputs, outputs) == ["/work", "/refs", "/data/in", "/data/out"]


def test_a_directory_inside_another_shares_its_volume() -> None:
    inputs = [{"path": "/data/a", "type": "FILE"}, {"path": "/data/deeper/b", "type": "FILE"}]
    assert mount_points([], inputs, []) == ["/data"]


def test_stdio_files_and_output_prefixes_get_volumes_too() -> None:
    executors = [{"stdin": "/in/words", "stdout": "/out/log.txt", "stderr": "/out/err.txt"}]
    outputs = [{"path": "/results/*.csv", "path_prefix": "/results/", "type": "FILE"}]
    assert mount_points([], [], outputs, executors) == ["/in", "/out", "/results"]


@pytest.mark.parametrize(
    ("volumes", "inputs", "message"),
    [
        ([], [{"path": "/a.txt"}], "inputs[0].path: '/a.txt' is at the root"),
        (["/"], [], "volumes[0]: a volume cannot be mounted at /"),
        ([], [{"path": "relative/a"}], "inputs[0].path: an absolute path is required"),
    ],
)
def test_paths_that_cannot_be_volumes_are_refused_by_name(
    volumes: list[str], inputs: list[dict[str, str]], message: str
) -> None:
    with pytest.raises(VolumeError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        mount_points(volumes, inputs, [])
