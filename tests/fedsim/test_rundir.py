"""Run folders: refused targets, --overwrite limits, the lock, file modes, live metrics."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedsim import results, rundir
from fedsim.errors import ConfigError


@pytest.mark.parametrize("target", ["/dev/null", "/proc/fedsim-run", "/sys/x"])
def test_system_paths_are_refused(target: str) -> None:
    with pytest.raises(ConfigError, match="system path"):
        rundir.check_target(Path(target))


def test_a_file_or_a_path_below_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        rundir.check_target(file)
    with pytest.raises(ConfigError, match="lies below the file"):
        rundir.check_target(file / "sub" / "run")


def test_non_empty_folder_needs_overwrite_and_overwrite_needs_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rundir.check_target(run)  # empty: fine
    (run / results.CONFIG).write_text("rounds = 1\n")
    (run / "report.html").write_text("old")
    (run / "report_accuracy.csv").write_text("old")
    with pytest.raises(ConfigError, match="not empty"):
        rundir.check_target(run)
    rundir.check_target(run, overwrite=True)
    rundir.check_target(run, resume=True)
    (run / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="refusing to delete"):
        rundir.check_target(run, overwrite=True)


def test_overwrite_empties_the_run_folder_under_the_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in (results.CONFIG, "report.html", "frontier.csv", ".summary.json.abc.tmp"):
        (run / name).write_text("old")
    with rundir.RunLock(run).acquire(overwrite=True):
        assert [p.name for p in run.iterdir()] == [rundir.LOCK]


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path: Path) -> None:
    first = rundir.RunLock(tmp_path / "run").acquire()
    try:
        with pytest.raises(ConfigError, match="in use by another fedsim process"):
            rundir.RunLock(tmp_path / "run").acquire()
    finally:
        first.release()
    rundir.RunLock(tmp_path / "run").acquire().release()  # free again


def test_default_out_refuses_a_run_folders_own_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / results.CONFIG).write_text("rounds = 1\n")
    (run / results.SUMMARY).write_text("{}")
    with pytest.raises(ConfigError, match="--resume"):
        rundir.default_out(run / results.CONFIG)
    plain = tmp_path / "mine" / "config.toml"  # a scenario that happens to be named so
    plain.parent.mkdir()
    plain.write_text("rounds = 1\n")
    (plain.parent / "notes.txt").write_text("x")
    assert rundir.default_out(plain) == Path("runs/config")
    assert rundir.default_out(Path("scenarios/default.toml")) == Path("runs/default")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    saved = os.umask(umask)
    try:
        results.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode


def test_live_metrics_append_and_truncate_to_the_checkpointed_round(tmp_path: Path) -> None:
    for r in (1, 2, 3):
        results.append_live_metrics(tmp_path, r, {"eval-acc": 0.5 + r / 10}, round_time=r / 100)
    lines = (tmp_path / results.LIVE_METRICS).read_text().splitlines()
    assert lines[0] == "round,metric,value" and "3,eval-acc,0.8" in lines
    assert results.truncate_live_metrics(tmp_path, 2) == [0.01, 0.02]
    kept = (tmp_path / results.LIVE_METRICS).read_text().splitlines()
    assert not [line for line in kept if line.startswith("3,")]
    assert len(kept) == 5
