"""Parallel sweeps (--jobs, --ray-address) equal the sequential sweep, row for row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedsim.errors import ConfigError
from fedsim.study import METRIC_COLUMNS, run_grid

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
TINY = {
    "rounds": 2,
    "partition.num_clients": 3,
    "data.num_samples": 400,
    "fairness.enabled": False,
}
GRID = {"client.lr": [0.05, 0.2]}
RESULTS = [c for c in METRIC_COLUMNS if c != "wall-time-s"]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return run_grid(DEFAULT, GRID, [0, 1], overrides=TINY)


def test_jobs_sweep_equals_the_sequential_sweep_and_streams_rows_in_grid_order(
    sequential: pd.DataFrame, tmp_path: Path
) -> None:
    csv = tmp_path / "sweep.csv"
    seen: list[int] = []
    frame = run_grid(
        DEFAULT,
        GRID,
        [0, 1],
        overrides=TINY,
        jobs=2,
        csv_path=csv,
        progress=lambda done, total, row: seen.append(done),
    )
    pd.testing.assert_frame_equal(
        frame[["client.lr", "seed", *RESULTS]], sequential[["client.lr", "seed", *RESULTS]]
    )
    assert seen == [1, 2, 3, 4]
    written = pd.read_csv(csv)
    assert list(zip(written["client.lr"], written["seed"], strict=True)) == [
        (0.05, 0),
        (0.05, 1),
        (0.2, 0),
        (0.2, 1),
    ]
    assert (frame["wall-time-s"] > 0).all()


@pytest.mark.e2e
def test_ray_sweep_equals_the_sequential_sweep(sequential: pd.DataFrame) -> None:
    frame = run_grid(DEFAULT, GRID, [0, 1], overrides=TINY, ray_address="local")
    pd.testing.assert_frame_equal(
        frame[["client.lr", "seed", *RESULTS]], sequential[["client.lr", "seed", *RESULTS]]
    )


def test_parallel_sweep_refuses_other_engines_and_bad_job_counts() -> None:
    with pytest.raises(ConfigError, match="local engine"):
        run_grid(DEFAULT, GRID, [0], overrides={**TINY, "engine": "ray"}, jobs=2)
    with pytest.raises(ConfigError, match="--jobs: expected at least 1"):
        run_grid(DEFAULT, GRID, [0], overrides=TINY, jobs=0)


def test_threads_per_job_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedsim.study as study

    monkeypatch.setattr(study.os, "cpu_count", lambda: 16)
    assert [study._threads_per_job(j) for j in (1, 2, 4, 32)] == [16, 8, 4, 1]
