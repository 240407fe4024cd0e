"""Parameter studies: run_grid's rows, summarise's statistics, the table layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim.errors import ConfigError
from fedsim.study import METRIC_COLUMNS, format_table, run_grid, summarise, to_markdown

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "rounds": 1,
    "partition.num_clients": 3,
    "data.num_samples": 300,
    "fairness.enabled": False,
}
METHODS = {
    "fedavg": {"strategy.name": "fedavg"},
    "fedprox": {"strategy.name": "fedprox", "strategy.options.proximal_mu": 0.01},
}


def test_run_grid_rows_and_summary_match_numpy() -> None:
    runs = run_grid(
        REPO / "scenarios" / "default.toml", {"method": METHODS}, [0, 1], overrides=TINY
    )
    assert runs.shape == (4, 2 + len(METRIC_COLUMNS))
    assert list(runs.columns) == ["method", "seed", *METRIC_COLUMNS]
    assert list(runs.method) == ["fedavg", "fedavg", "fedprox", "fedprox"]
    assert list(runs.seed) == [0, 1, 0, 1]
    assert np.all(np.isfinite(runs["eval-acc"])) and np.all(runs["eval-acc"] > 0)

    summary = summarise(runs)
    assert list(summary.columns) == ["method", "mean", "std", "n"]
    assert summary.shape == (2, 4)
    for method, rec in summary.set_index("method").iterrows():
        values = runs.loc[runs.method == method, "eval-acc"].to_numpy()
        assert rec["n"] == 2
        assert rec["mean"] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
        assert rec["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15)

    table = format_table(summary, "method", "method")
    assert table.shape == (2, 2)


def test_run_grid_override_columns_hold_values_and_seeds_change_runs() -> None:
    runs = run_grid(
        REPO / "scenarios" / "default.toml", {"client.lr": [0.05, 0.2]}, [3], overrides=TINY
    )
    assert list(runs["client.lr"]) == [0.05, 0.2]
    assert runs["eval-loss"].nunique() == 2  # the override reached the runs


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = [
        {"method": m, "alpha": a, "seed": s, "eval-acc": rng.uniform(0.3, 0.6)}
        for m in ("b-method", "a-method")
        for a in (100.0, 0.5)
        for s in range(3)
    ]
    frame = pd.DataFrame(rows)
    for column in METRIC_COLUMNS[1:]:
        frame[column] = 0.0
    return frame


def test_summarise_two_grid_columns_against_numpy() -> None:
    frame = _frame()
    summary = summarise(frame)
    assert summary.shape == (4, 5)
    assert list(summary[["method", "alpha"]].itertuples(index=False, name=None)) == [
        ("b-method", 100.0),
        ("b-method", 0.5),
        ("a-method", 100.0),
        ("a-method", 0.5),
    ]
    for _, rec in summary.iterrows():
        values = frame.loc[
            (frame.method == rec["method"]) & (frame.alpha == rec["alpha"]), "eval-acc"
        ].to_numpy()
        assert rec["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert rec["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        assert rec["n"] == 3

    table = format_table(summary, "method", "alpha", scale=100.0, digits=2)
    assert table.shape == (2, 2)
    assert list(table.index) == ["b-method", "a-method"]
    assert list(table.columns) == [100.0, 0.5]
    first = summary.iloc[0]
    assert table.iloc[0, 0] == f"{100 * first['mean']:.2f} ± {100 * first['std']:.2f}"
    markdown = to_markdown(table).splitlines()
    assert len(markdown) == 2 + 2
    assert markdown[0] == "| method | 100.0 | 0.5 |"
    assert markdown[1] == "|---|---:|---:|"


def test_summarise_single_run_and_missing_values() -> None:
    frame = _frame().iloc[:4].copy()  # b-method: 3 runs at alpha 100, 1 at alpha 0.5
    frame.loc[1, "eval-acc"] = math.nan
    summary = summarise(frame)
    assert list(summary.n) == [2, 1]
    assert math.isnan(summary.loc[1, "std"])
    assert format_table(summary, "method", "alpha").iloc[0, 1] == f"{summary.loc[1, 'mean']:.1f}"


def test_bad_grids_and_columns_are_config_errors() -> None:
    base = REPO / "scenarios" / "default.toml"
    with pytest.raises(ConfigError, match="reserved"):
        run_grid(base, {"seed": [1, 2]}, [0])
    with pytest.raises(ConfigError, match="has no values"):
        run_grid(base, {"client.lr": []}, [0])
    with pytest.raises(ConfigError, match="list of values"):
        run_grid(base, {"client.lr": 0.1}, [0])
    with pytest.raises(ConfigError, match="at least one seed"):
        run_grid(base, {"client.lr": [0.1]}, [])
    with pytest.raises(ConfigError, match="no column 'nope'"):
        summarise(_frame(), value="nope")


def test_retina_scenario_fedld_full_smoke(data_dir: Path) -> None:
    result = fedsim.run(
        REPO / "scenarios" / "retina-fedld.toml",
        {
            "rounds": 1,
            "client.epochs": 1,
            "strategy.name": "fedld",
            "client.loss.margin_lambda": 0.1,
            "client.loss.margin_mode": "batch",
        },
        data_dir=data_dir,
    )
    assert result.scenario.data.dataset == "retinamnist"
    assert result.scenario.partition.num_clients == 5
    acc = result.summary["final"]["eval-acc"]
    assert math.isfinite(acc) and acc > 0


def test_sweep_rows_carry_the_final_fairness_of_each_run() -> None:
    # The trade-off axes of a sweep over a fairness penalty's weight: each row's
    # disparities are its run's final-round values.
    import fedsim

    over = {**TINY, "fairness.enabled": True, "fairness.bounds": False}
    grid = {"client.fairness.penalty": ["demographic-parity"], "client.fairness.weight": [0.0, 2.0]}
    runs = run_grid(REPO / "scenarios" / "default.toml", grid, [0], overrides=over)
    for _, row in runs.iterrows():
        cell = {**over, "client.fairness.penalty": "demographic-parity", "seed": 0}
        cell["client.fairness.weight"] = float(row["client.fairness.weight"])
        final = fedsim.run(REPO / "scenarios" / "default.toml", cell).summary["final"]
        for column in ("global-disparity", "local-disparity", "demographic_parity_difference"):
            assert row[column] == final[column], column
