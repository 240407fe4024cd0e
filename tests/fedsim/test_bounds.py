"""AGLFOP glue: budget grids, scenario counts, the frontier stored with a run, `fedsim bounds`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim import bounds
from fedsim.cli import main
from fedsim.config import load_scenario
from fedsim.data.federated import build_federated
from fedsim.errors import ConfigError, DataError
from fedsim.fairness.aglfop import FRONTIER_COLUMNS
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
ACC_TOL = 1e-6
FAIR_RUN = {
    **SMALL,
    "fairness.enabled": True,
    "fairness.bounds": True,
    "fairness.bounds_grid": 4,
}


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _assert_monotone(table: pd.DataFrame) -> None:
    """Accuracy never decreases when either budget grows (the feasible set only grows)."""
    grid = table.pivot_table(index="eps_global", columns="eps_local", values="accuracy")
    values = grid.to_numpy()
    assert not np.isnan(values).any()
    assert np.all(np.diff(values, axis=0) >= -ACC_TOL), grid
    assert np.all(np.diff(values, axis=1) >= -ACC_TOL), grid


# ------------------------------------------------------------------------------ grids


@pytest.mark.parametrize("num", [2, 3, 6, 11])
def test_budget_grid_runs_from_zero_to_the_top(num: int) -> None:
    grid = bounds.budget_grid(0.8, num)
    assert grid.shape == (num,)
    assert grid[0] == 0.0 and grid[-1] == pytest.approx(0.8)
    assert np.all(np.diff(grid) > 0)
    positive = grid[1:]
    if num > 2:  # log-spaced: a constant ratio between neighbours
        ratios = positive[1:] / positive[:-1]
        assert np.allclose(ratios, ratios[0])
        assert positive[0] == pytest.approx(0.8 * 10.0 ** -min(3, num - 2))


def test_budget_grid_edges() -> None:
    assert bounds.budget_grid(0.0, 5).tolist() == [0.0]  # nothing to disclose
    for bad in (1, 0, 101):
        with pytest.raises(ConfigError, match="--grid"):
            bounds.budget_grid(1.0, bad)


def test_describe_counts_closed_forms() -> None:
    # Two identical clients, Z = Y exactly, balanced: H(Z) = I(Z;Y) = 1 bit, I(Z;S) = 0.
    counts = np.array([[[10, 0], [0, 10]], [[10, 0], [0, 10]]])
    info = bounds.describe_counts(counts)
    assert info["H(Z)"] == pytest.approx(1.0)
    assert info["H(Z|S)"] == pytest.approx(1.0)
    assert info["I(Z;Y)"] == pytest.approx(1.0)
    assert info["I(Z;S)"] == pytest.approx(0.0, abs=1e-12)
    # Each client holds one group: H(Z|S) = 0, I(Z;S) = H(Z) = 1 bit.
    split = np.array([[[10, 5], [0, 0]], [[0, 0], [5, 10]]])
    info = bounds.describe_counts(split)
    assert info["H(Z|S)"] == pytest.approx(0.0, abs=1e-12)
    assert info["I(Z;S)"] == pytest.approx(1.0)


def test_check_groups_rejects_a_single_group() -> None:
    with pytest.raises(DataError, match="1 sensitive group"):
        bounds.check_groups(np.ones((2, 1, 2)), "table")
    with pytest.raises(DataError, match="1 sensitive group"):  # a second group without rows
        bounds.check_groups(np.array([[[3, 4], [0, 0]]]), "table")


# ------------------------------------------------------------------- scenario counts


def test_scenario_counts_match_the_federated_rows() -> None:
    sc = load_scenario(DEFAULT, {"partition.num_clients": 4, "data.num_samples": 800})
    data = build_federated(sc.data, sc.partition, sc.seed)
    train = bounds.scenario_counts(sc, rows="train")
    test = bounds.scenario_counts(sc, rows="test")
    everything = bounds.scenario_counts(sc)
    np.testing.assert_array_equal(train, data.counts())
    np.testing.assert_array_equal(everything, train + test)
    assert everything.sum() == 800
    assert test.sum(axis=(1, 2)).tolist() == [len(c.y_test) for c in data.clients]


def test_scenario_without_a_sensitive_attribute_is_refused() -> None:
    sc = load_scenario(DEFAULT, {"data.dataset": "digits", "model.name": "logreg"})
    with pytest.raises(DataError, match="digits has no sensitive attribute"):
        bounds.scenario_counts(sc)
    with pytest.raises(ConfigError, match="--rows"):
        bounds.scenario_counts(load_scenario(DEFAULT), rows="validation")  # type: ignore[arg-type]


def test_compute_frontier_shape_monotonicity_and_ends() -> None:
    counts = np.array([[[40, 10], [5, 45]], [[30, 5], [20, 50]]])
    table = bounds.compute_frontier(counts, 4, compute_pid=False)
    assert list(table.columns) == list(FRONTIER_COLUMNS)
    assert len(table) == 16 and set(table.status) == {"optimal"}
    _assert_monotone(table)
    last = table.iloc[-1]  # budgets at H(Z) and H(Z|S) cannot bind: Ŷ = Y is allowed
    assert last.accuracy == pytest.approx(1.0, abs=ACC_TOL)
    first = table.iloc[0]  # zero budgets: Ŷ independent of Z globally and within clients
    assert first.accuracy < 1.0 - 1e-3
    assert first.global_disparity < 1e-6 and first.local_disparity < 1e-6


# --------------------------------------------------------------- frontier of a run


@pytest.fixture(scope="module")
def fair_run(tmp_path_factory: pytest.TempPathFactory) -> fedsim.runner.RunResult:
    return fedsim.run(DEFAULT, FAIR_RUN, out=tmp_path_factory.mktemp("fair") / "run")


def test_a_fairness_run_stores_a_monotone_frontier(fair_run) -> None:  # type: ignore[no-untyped-def]
    out = fair_run.out_dir
    table = pd.read_csv(out / bounds.FRONTIER_CSV)
    assert list(table.columns) == list(FRONTIER_COLUMNS)
    assert len(table) == 16 and set(table.status) == {"optimal"}
    _assert_monotone(table)
    assert table.accuracy.iloc[-1] == pytest.approx(1.0, abs=ACC_TOL)


def test_stored_frontier_uses_the_test_rows_of_the_achieved_point(fair_run) -> None:  # type: ignore[no-untyped-def]
    record = json.loads((fair_run.out_dir / bounds.FRONTIER_JSON).read_text())
    counts = np.asarray(record["counts"])
    assert record["counts_source"]["rows"] == "test"
    assert record["counts_source"]["round"] == FAIR_RUN["rounds"]
    # Every client was evaluated, so the counts are exactly the scenario's test split...
    sc = load_scenario(DEFAULT, FAIR_RUN)
    np.testing.assert_array_equal(counts, bounds.scenario_counts(sc, rows="test"))
    # ... and as many rows as the last round evaluated.
    m = fair_run.metrics
    last = m[(m["round"] == FAIR_RUN["rounds"]) & (m.metric == "num-examples-evaluate")]
    assert counts.sum() == last.value.sum()
    # The achieved point is the final round's server metrics.
    final = fair_run.summary["final"]
    achieved = record["achieved"]
    assert achieved["round"] == FAIR_RUN["rounds"]
    assert achieved["accuracy"] == final["eval-acc"]
    assert achieved["global_disparity"] == final["global-disparity"]
    assert achieved["local_disparity"] == final["local-disparity"]
    # The trained model is one feasible classifier of the AGLFOP at its own disparities.
    bound = record["bound_at_achieved"]
    assert bound["status"].startswith("optimal")
    assert achieved["accuracy"] - ACC_TOL <= bound["accuracy"] <= 1.0 + ACC_TOL
    assert record["eps_global_grid"][-1] == pytest.approx(record["information_bits"]["H(Z)"])


def test_run_counts_rebuilds_the_test_split_without_an_accounted_round() -> None:
    sc = load_scenario(DEFAULT, FAIR_RUN)
    run_config = {"scenario": sc.to_toml(), "data-dir": ""}
    counts, source = bounds.run_counts(SimpleNamespace(counts_history={}), run_config)
    assert source["from"] == "scenario"
    np.testing.assert_array_equal(counts, bounds.scenario_counts(sc, rows="test"))


def test_a_run_with_one_group_keeps_its_results(tmp_path: Path) -> None:
    overrides = {**FAIR_RUN, "data.dataset": "digits", "model.name": "logreg"}
    res = fedsim.run(DEFAULT, overrides, out=tmp_path / "run")
    assert (res.out_dir / "summary.json").is_file()
    assert not (res.out_dir / bounds.FRONTIER_CSV).exists()
    record = json.loads((res.out_dir / bounds.FRONTIER_JSON).read_text())
    assert "no sensitive attribute" in record["error"] or "1 sensitive group" in record["error"]


# ---------------------------------------------------------------------------- CLI


def test_cli_bounds_default_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "frontier.csv"
    code, out, err = _run_main(
        ["bounds", str(DEFAULT), "--grid", "3", "--out", str(target), "-q"], capsys
    )
    assert code == 0, err
    table = pd.read_csv(target)
    assert list(table.columns) == list(FRONTIER_COLUMNS) and len(table) == 9
    assert sorted(set(table.eps_global)) == sorted(table.eps_global.unique())
    assert table.eps_global.nunique() == 3 and table.eps_local.nunique() == 3
    _assert_monotone(table)
    assert table.unique.notna().all()  # PID terms are on by default
    lines = out.splitlines()
    assert lines[0].startswith("default: 4000 rows (all) of 10 clients, 2 groups")
    assert lines[1].startswith("eps_g \\ eps_l") and len(lines) == 1 + 1 + 3 + 1
    # The printed table is the CSV's accuracy, row by row.
    printed = [float(v) for v in lines[2].split()[1:]]
    first_row = table[table.eps_global == 0.0].sort_values("eps_local").accuracy
    np.testing.assert_allclose(printed, first_row, atol=1e-4)
    assert lines[-1].startswith(f"wrote {target}")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "data.dataset=digits", "--set", "model.name=logreg"], "no sensitive attribute"),
        (["--grid", "1"], "--grid: expected a grid size from 2 to 100"),
        (["--rows", "validation"], "--rows: expected one of all, train, test"),
        (["--set", "partition.num_clients=0"], "partition.num_clients"),
    ],
)
def test_cli_bounds_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    target = tmp_path / "frontier.csv"
    code, _, err = _run_main(["bounds", str(DEFAULT), *args, "--out", str(target)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: ")
    assert fragment in lines[0]
    assert not target.exists()


def test_cli_bounds_missing_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_main(["bounds", "no/such/scenario.toml", "--grid", "3"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("fedsim: error: ")


def test_shipped_paper_scenarios_enable_the_stored_frontier() -> None:
    files = sorted((REPO / "scenarios").glob("aglfop-*.toml"))
    assert len(files) == 5
    for path in files:
        sc = load_scenario(path)
        assert sc.fairness.enabled and sc.fairness.bounds, path.name
        assert sc.partition.num_clients == 2, path.name


@pytest.mark.parametrize(
    ("name", "share_z1", "share_z0"),
    [("aglfop-synthetic-zskew", 0.915, 0.088), ("aglfop-adult-zskew", 0.922, 0.128)],
)
def test_paper_skew_scenarios_give_the_documented_shares(
    data_dir: Path, name: str, share_z1: float, share_z0: float
) -> None:
    counts = bounds.scenario_counts(load_scenario(REPO / "scenarios" / f"{name}.toml"))
    per_group = counts.sum(axis=2)  # [s, z]
    shares = per_group[0] / per_group.sum(axis=0)  # client 0's share of each group
    assert shares[1] == pytest.approx(share_z1, abs=0.001)
    assert shares[0] == pytest.approx(share_z0, abs=0.001)
