"""Second attack pass on publishing: staging directories a killed run left behind, and a full
disk while a run writes its bundle."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

import bundle
from bundle.versions import STALE_STAGING_SECONDS, lock_staging, remove_stale_staging
from training import __main__ as cli
from training.publish import staging_area

OLD = time.time() - 2 * STALE_STAGING_SECONDS


def _aged(path: Path) -> Path:
    os.utime(path, (OLD, OLD))
    return path


def _leftovers(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith(bundle.TEMP_PREFIX))


# -- 11. stale staging directories ---------------------------------------------------------------


def test_the_next_run_removes_stale_staging_directories_only(tmp_path: Path) -> None:
    model_dir = tmp_path / "iris"
    killed = model_dir / ".tmp-killed"
    (killed / "report").mkdir(parents=True)
    (killed / "model.keras").write_bytes(b"half")
    _aged(killed)
    fresh = model_dir / ".tmp-fresh"  # a concurrent run that just started
    fresh.mkdir()
    in_use = model_dir / ".tmp-long-run"  # a concurrent run training for hours
    in_use.mkdir()
    _aged(in_use)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not ours")
    link = model_dir / ".tmp-link"
    link.symlink_to(outside, target_is_directory=True)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    serving_temp = model_dir / ".tmp-serving-x"
    serving_temp.write_text("{}")
    _aged(serving_temp)
    lock = lock_staging(in_use)
    assert lock is not None
    try:
        staging = bundle.new_staging_dir(model_dir)
    finally:
        os.close(lock)
    left = _leftovers(model_dir)
    assert ".tmp-killed" not in left
    assert {".tmp-fresh", ".tmp-long-run", ".tmp-link", ".tmp-serving-x", staging.name} == set(left)
    assert (outside / "keep").read_text() == "not ours"  # a link is never followed
    # The lock released (the holder finished or was killed), the old one goes too.
    assert remove_stale_staging(model_dir) == [in_use]


def test_a_run_holds_its_staging_directory_however_long_it_takes(tmp_path: Path) -> None:
    with staging_area(tmp_path, "iris") as staging:
        later = time.time() + 100 * STALE_STAGING_SECONDS
        assert remove_stale_staging(tmp_path / "iris", now=later) == []
        assert staging.is_dir()
    assert _leftovers(tmp_path / "iris") == []


# -- 12. a full disk is one line and exit code 2 --------------------------------------------------


def _full_disk(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/artifacts/iris/.tmp-x/model.keras")


def test_a_full_disk_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.pipeline

    monkeypatch.setattr(training.pipeline, "run", _full_disk)
    assert cli.main(["--artifacts", str(tmp_path), "--quiet"]) == cli.EXIT_BAD_INPUT == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "training: error: No space left on device (/artifacts/iris/.tmp-x/model.keras); "
        "the run stopped and its staging directory was removed\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize("where", ["bundle file", "manifest"])
def test_a_full_disk_while_writing_the_bundle_publishes_nothing(
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real run through ``main`` whose disk fills up while it writes its report (inside the
    staging directory) or its manifest (while publishing): exit 2, one line, no version and no
    staging directory left."""
    from training import evaluate

    if where == "manifest":
        monkeypatch.setattr(bundle, "write_manifest", _full_disk)
    else:
        monkeypatch.setattr(evaluate, "save", _full_disk)
    artifacts = tmp_path / "artifacts"
    code = cli.main(["--artifacts", str(artifacts), "--epochs", "2", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("training: error: ") and err.count("\n") == 1
    assert "No space left on device" in err
    assert bundle.list_versions(artifacts / "iris") == []
    assert _leftovers(artifacts / "iris") == []
