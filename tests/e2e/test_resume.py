"""Checkpoints: a run killed with SIGKILL and resumed equals an uninterrupted run."""

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
from fedsim import checkpoint, results
from fedsim.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parents[2]
# FedAdam keeps server-optimiser moments and fraction_train < 1 makes Flower sample
# clients with Python's `random`: both must survive the restart. Stragglers slow the
# rounds down (without changing any result) so that the kill lands mid-run.
SETTINGS = [
    "rounds=6",
    "partition.num_clients=6",
    "data.num_samples=1200",
    "strategy.name='fedadam'",
    "strategy.options={eta=0.01}",
    "strategy.fraction_train=0.5",
    "fairness.enabled=false",
    "faults.straggler_prob=1.0",
    "faults.straggler_delay=0.15",
]


def _overrides() -> dict[str, object]:
    from fedsim.config import parse_assignment

    return dict(parse_assignment(s) for s in SETTINGS)


def _checkpoint_round(run_dir: Path) -> int:
    try:
        header, _ = checkpoint.load(run_dir)
    except CheckpointError:
        return 0
    return int(header["round"])


@pytest.mark.e2e
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "fedsim.cli",
        "run",
        str(REPO / "scenarios/default.toml"),
        "--out",
        str(run_dir),
        "-q",
    ]
    for s in SETTINGS:
        argv += ["--set", s]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _checkpoint_round(run_dir) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_round(run_dir)
    assert 2 <= killed_at < 6, f"kill landed at round {killed_at}"
    assert not (run_dir / results.SUMMARY).exists()  # an unfinished run does not look complete
    assert not list(run_dir.glob(".*.tmp"))  # no temporary file left visible as a result

    resumed = fedsim.resume(run_dir)
    reference = fedsim.run(REPO / "scenarios/default.toml", _overrides())

    for key, value in reference.arrays.items():
        assert np.array_equal(resumed.arrays[key], value), key
    _assert_same_metrics(resumed.metrics, reference.metrics)
    summary = json.loads((run_dir / results.SUMMARY).read_text())
    assert summary["rounds"] == 6


def test_resume_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no config.toml"):
        fedsim.resume(tmp_path)
    (tmp_path / "config.toml").write_text("rounds = 2\n")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fedsim.resume(tmp_path)
    (tmp_path / checkpoint.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a fedsim checkpoint"):
        fedsim.resume(tmp_path)
    with pytest.raises(ConfigError, match="only --set rounds=N"):
        fedsim.resume(tmp_path, overrides={"client.lr": 3})


class _Crash(Exception):
    pass


def _assert_same_metrics(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Bit for bit: every value equal, NaN where NaN (no tolerance)."""
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True
    )


def _crash_after_round_2(out: Path, over: dict[str, object]) -> None:
    def crash(done: int, total: int, latest: object) -> None:
        if done == 2:
            raise _Crash  # the checkpoint of round 2 is already on disk

    with pytest.raises(_Crash):
        fedsim.run(REPO / "scenarios/default.toml", over, out=out, progress=crash)
    assert _checkpoint_round(out) == 2


def test_resume_with_fairness_accounting_is_bit_for_bit_uninterrupted(tmp_path: Path) -> None:
    # Uni/Red/Masked come from cvxpy solves: they match only if no solve depends on
    # the solves before it (no warm start), since the resumed process starts cold.
    over = {**_overrides(), "fairness.enabled": True, "faults.straggler_prob": 0.0, "rounds": 4}
    _crash_after_round_2(tmp_path, over)
    resumed = fedsim.resume(tmp_path)
    reference = fedsim.run(REPO / "scenarios/default.toml", over)
    for key, value in reference.arrays.items():
        assert np.array_equal(resumed.arrays[key], value), key
    _assert_same_metrics(resumed.metrics, reference.metrics)
    assert {"global-disparity", "unique"} <= set(resumed.metrics.metric)


@pytest.mark.e2e
def test_ray_resume_of_a_local_checkpoint_is_bit_for_bit_uninterrupted(tmp_path: Path) -> None:
    # Starting Ray draws from Python's global `random`, which Flower samples nodes
    # with (fraction_train < 1); the engine must put the restored state back.
    over = {**_overrides(), "faults.straggler_prob": 0.0, "rounds": 4, "ray.num_actors": 2}
    _crash_after_round_2(tmp_path, over)
    resumed = fedsim.resume(tmp_path, engine="ray")
    reference = fedsim.run(REPO / "scenarios/default.toml", over)
    for key, value in reference.arrays.items():
        assert np.array_equal(resumed.arrays[key], value), key
    _assert_same_metrics(resumed.metrics, reference.metrics)
