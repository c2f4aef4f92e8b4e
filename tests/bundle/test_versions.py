"""Version directories: listing, staging and atomic publishing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bundle import TEMP_PREFIX, list_versions, model_dir, new_staging_dir, publish_version


def _noop(_staging: Path, _version: int) -> None:
    return None


def test_model_dir_accepts_strings_and_paths(tmp_path: Path) -> None:
    assert model_dir(tmp_path, "iris") == tmp_path / "iris"
    assert model_dir(str(tmp_path), "iris") == tmp_path / "iris"


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_list_versions_without_a_directory(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "iris"
    if kind == "file":
        path.write_text("not a directory")
    assert list_versions(path) == []


def test_list_versions_only_counts_integer_directories(tmp_path: Path) -> None:
    for name in ["1", "2", "10", "3"]:
        (tmp_path / name).mkdir()
    for name in [f"{TEMP_PREFIX}abc123", "0", "007", "-1", "1.5", "v4", "latest", "\u0665"]:
        (tmp_path / name).mkdir()
    (tmp_path / "11").write_text("a file, not a version")
    assert list_versions(tmp_path) == [1, 2, 3, 10]


def test_new_staging_dir(tmp_path: Path) -> None:
    directory = tmp_path / "artifacts" / "iris"
    staging = new_staging_dir(directory)
    assert staging.parent == directory
    assert staging.name.startswith(TEMP_PREFIX)
    assert staging.is_dir()
    assert list(staging.iterdir()) == []
    assert list_versions(directory) == []
    other = new_staging_dir(directory)
    assert other != staging


def test_new_staging_dir_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "artifacts").write_text("oops")
    with pytest.raises(OSError):
        new_staging_dir(tmp_path / "artifacts" / "iris")


def _stage(directory: Path, payload: str) -> Path:
    staging = new_staging_dir(directory)
    (staging / "sub").mkdir()
    (staging / "sub" / "payload.txt").write_text(payload)
    return staging


def test_publish_numbers_versions_from_one(tmp_path: Path) -> None:
    directory = tmp_path / "iris"
    seen: list[int] = []

    def finalize(staging: Path, version: int) -> None:
        assert staging.name.startswith(TEMP_PREFIX)
        seen.append(version)
        (staging / "version.txt").write_text(str(version))

    for expected in (1, 2, 3):
        staging = _stage(directory, f"run {expected}")
        assert publish_version(staging, directory, finalize) == expected
        assert not staging.exists()
        published = directory / str(expected)
        assert (published / "version.txt").read_text() == str(expected)
        assert (published / "sub" / "payload.txt").read_text() == f"run {expected}"
        assert stat.S_IMODE(published.stat().st_mode) == 0o755
    assert seen == [1, 2, 3]
    assert list_versions(directory) == [1, 2, 3]
    assert [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)] == []


def test_publish_continues_after_the_highest_version(tmp_path: Path) -> None:
    directory = tmp_path / "iris"
    (directory / "7").mkdir(parents=True)
    (directory / f"{TEMP_PREFIX}stale").mkdir()
    assert publish_version(_stage(directory, "x"), directory, _noop) == 8


def test_publish_that_loses_a_race_takes_the_next_number(tmp_path: Path) -> None:
    directory = tmp_path / "iris"
    calls: list[int] = []

    def finalize(staging: Path, version: int) -> None:
        calls.append(version)
        (staging / "version.txt").write_text(str(version))
        if len(calls) == 1:
            # Another publisher takes this number between our finalize and our rename.
            rival = directory / str(version)
            rival.mkdir()
            (rival / "theirs.txt").write_text("rival")

    assert publish_version(_stage(directory, "ours"), directory, finalize) == 2
    assert calls == [1, 2]
    assert (directory / "1" / "theirs.txt").read_text() == "rival"
    assert not (directory / "1" / "version.txt").exists()
    assert (directory / "2" / "version.txt").read_text() == "2"
    assert (directory / "2" / "sub" / "payload.txt").read_text() == "ours"


def test_publish_failure_removes_staging_and_raises(tmp_path: Path) -> None:
    directory = tmp_path / "iris"
    directory.mkdir()
    (directory / "1").write_text("a regular file where version 1 would go")
    staging = _stage(directory, "x")
    with pytest.raises(NotADirectoryError):
        publish_version(staging, directory, _noop)
    assert not staging.exists()
    assert list_versions(directory) == []


def test_publish_finalize_failure_leaves_no_version(tmp_path: Path) -> None:
    directory = tmp_path / "iris"
    staging = _stage(directory, "x")

    def finalize(_staging: Path, _version: int) -> None:
        raise RuntimeError("metadata could not be written")

    with pytest.raises(RuntimeError):
        publish_version(staging, directory, finalize)
    assert list_versions(directory) == []
