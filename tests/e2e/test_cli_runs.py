"""`fedsim run --resume`, signals, locks and sweeps through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim import checkpoint, results, rundir
from fedsim.cli import main
from fedsim.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios/default.toml"
SMALL = {
    "partition.num_clients": 4,
    "data.num_samples": 800,
    "strategy.name": "fedadam",
    "strategy.options": {"eta": 0.01},
    "strategy.fraction_train": 0.5,
    "fairness.enabled": False,
}


def _argv_set(over: dict[str, object]) -> list[str]:
    argv = []
    for key, value in over.items():
        if isinstance(value, dict):
            text = "{" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + "}"
        else:
            text = repr(value).lower() if isinstance(value, bool) else repr(value)
        argv += ["--set", f"{key}={text}"]
    return argv


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _checkpoint_round(run_dir: Path) -> int:
    try:
        return int(checkpoint.load(run_dir)[0]["round"])
    except CheckpointError:  # none yet, or being replaced right now
        return 0


def _same_weights(run_dir: Path, reference: fedsim.runner.RunResult) -> None:
    weights = results.load_weights(run_dir)
    for key, value in reference.arrays.items():
        assert np.array_equal(weights[key], value), key


class _Crash(Exception):
    pass


def test_cli_resume_continues_in_place_and_equals_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    over = {**SMALL, "rounds": 4}

    def crash_after_round_2(done: int, total: int, latest: object) -> None:
        if done == 2:
            raise _Crash

    with pytest.raises(_Crash):
        fedsim.run(DEFAULT, over, out=tmp_path / "run", progress=crash_after_round_2)
    code, out, _ = _main(["run", "--resume", str(tmp_path / "run"), "-q"], capsys)
    assert code == 0 and f"results in {tmp_path / 'run'}" in out
    summary = json.loads((tmp_path / "run" / results.SUMMARY).read_text())
    assert summary["rounds"] == 4 and summary["resumed_at_rounds"] == [2]
    assert len(summary["round_times_s"]) == 4
    _same_weights(tmp_path / "run", fedsim.run(DEFAULT, over))


def test_resume_extends_rounds_and_keeps_recorded_timings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert (
        _main(
            ["run", str(DEFAULT), "--out", str(run), "-q", *_argv_set(SMALL), "--set", "rounds=2"],
            capsys,
        )[0]
        == 0
    )
    first = json.loads((run / results.SUMMARY).read_text())
    assert _main(["run", "--resume", str(run), "-q"], capsys)[0] == 0  # finished: no-op
    assert json.loads((run / results.SUMMARY).read_text()) == first
    for bad, fragment in (("rounds=2", "give more rounds"), ("seed=1", "only --set rounds")):
        code, _, err = _main(["run", "--resume", str(run), "-q", "--set", bad], capsys)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert _main(["run", "--resume", str(run), "-q", "--set", "rounds=3"], capsys)[0] == 0
    extended = json.loads((run / results.SUMMARY).read_text())
    assert extended["rounds"] == 3
    assert extended["round_times_s"][:2] == first["round_times_s"]
    assert extended["wall_time_s"] > first["wall_time_s"]
    assert "rounds = 3" in (run / results.CONFIG).read_text()
    _same_weights(run, fedsim.run(DEFAULT, {**SMALL, "rounds": 3}))


def test_a_locked_run_folder_refuses_a_second_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    fedsim.run(DEFAULT, {**SMALL, "rounds": 1}, out=run)
    lock = rundir.RunLock(run).acquire()
    try:
        code, _, err = _main(["run", "--resume", str(run), "--set", "rounds=2", "-q"], capsys)
        assert code == 2 and "in use by another fedsim process" in err
        code, _, err = _main(["run", str(DEFAULT), "--out", str(run), "--overwrite", "-q"], capsys)
        assert code == 2 and "in use" in err
    finally:
        lock.release()
    assert json.loads((run / results.SUMMARY).read_text())["rounds"] == 1


# Stragglers slow the rounds down (changing no result) so that the signal lands mid-run.
SLOW = {**SMALL, "rounds": 8, "faults.straggler_prob": 1.0, "faults.straggler_delay": 0.5}


@pytest.mark.e2e
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_after_a_checkpoint_and_resume_matches(
    tmp_path: Path, sig: int, code: int
) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "fedsim.cli", "run", str(DEFAULT), "--out", str(run), "-q"]
    proc = subprocess.Popen(
        argv + _argv_set(SLOW), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while _checkpoint_round(run) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    stopped = _checkpoint_round(run)
    assert proc.returncode == code, err
    assert err.decode().strip().splitlines() == [
        f"fedsim: interrupted after round {stopped}; resume with: fedsim run --resume {run}"
    ]
    assert 2 <= stopped < 8 and not (run / results.SUMMARY).exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", "--resume", str(run), "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr
    _same_weights(run, fedsim.run(DEFAULT, {**SLOW, "faults.straggler_prob": 0.0}))


def test_sweep_validates_every_cell_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "runs.csv"
    argv = ["sweep", str(DEFAULT), "-g", "rounds=1,x", "--seeds", "1", "--out", str(csv)]
    code, out, err = _main(argv, capsys)
    assert code == 2 and "rounds: expected an integer" in err
    assert "run 1/" not in out + err and not csv.exists()


def test_sweep_writes_rows_as_they_finish_and_skips_them_on_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedsim.runner

    csv = tmp_path / "runs.csv"
    argv = ["sweep", str(DEFAULT), "-g", "client.lr=0.05,0.1", "--seeds", "2", "--out", str(csv)]
    argv += ["--set", "rounds=1", "--set", "partition.num_clients=2"]
    argv += ["--set", "fairness.enabled=false"]
    real_run, calls = fedsim.runner.run, []

    def stop_at_third(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(fedsim.runner, "run", stop_at_third)
    code, _, _ = _main(argv, capsys)
    assert code == 130
    assert len(pd.read_csv(csv)) == 2  # the two finished runs are on disk
    monkeypatch.setattr(fedsim.runner, "run", real_run)
    code, out, err = _main(argv, capsys)
    assert code == 0 and err.count("run ") == 2  # only the two missing runs ran
    rows = pd.read_csv(csv)
    assert len(rows) == 4 and list(rows.seed) == [0, 1, 0, 1]
    assert list(rows["client.lr"]) == [0.05, 0.05, 0.1, 0.1]
