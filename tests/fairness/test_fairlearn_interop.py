"""fedsim's group metrics against fairlearn itself, on random predictions and on a run."""

from __future__ import annotations

import math
from pathlib import Path

import fairlearn.metrics as flm
import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim.fairness.client_metrics import client_fairness
from fedsim.fairness.metrics import (
    equalized_odds_difference,
    equalized_odds_ratio,
    table_metrics,
)
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
NAMES = ("Female", "Male", "Other")
RATES = {
    "selection_rate": flm.selection_rate,
    "true_positive_rate": flm.true_positive_rate,
    "false_positive_rate": flm.false_positive_rate,
    "accuracy": lambda y, p: float(np.mean(y == p)),
}


def _table(y: np.ndarray, p: np.ndarray, z: np.ndarray, groups: int) -> np.ndarray:
    table = np.zeros((groups, 2, 2))
    np.add.at(table, (z, y, p), 1)
    return table


def _fairlearn(y: np.ndarray, p: np.ndarray, z: np.ndarray) -> dict[str, float]:
    names = np.asarray(NAMES, dtype=object)[z]
    out = {
        "demographic_parity_difference": flm.demographic_parity_difference(
            y, p, sensitive_features=names
        ),
        "demographic_parity_ratio": flm.demographic_parity_ratio(y, p, sensitive_features=names),
        "equalized_odds_difference": flm.equalized_odds_difference(y, p, sensitive_features=names),
        "equalized_odds_ratio": flm.equalized_odds_ratio(y, p, sensitive_features=names),
    }
    frame = flm.MetricFrame(metrics=RATES, y_true=y, y_pred=p, sensitive_features=names)
    for group, row in frame.by_group.iterrows():
        out |= {f"{metric}-{group}": float(value) for metric, value in row.items()}
    return out


@pytest.mark.parametrize("seed", range(6))
def test_group_metrics_equal_fairlearn_on_random_predictions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups, n = 2 + seed % 2, 300
    y, p, z = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, groups, n)
    p[z == 0] = np.where(rng.random((z == 0).sum()) < 0.3, 1, p[z == 0])  # a real gap
    table = _table(y, p, z, groups)
    expected = _fairlearn(y, p, z)
    got = table_metrics(table, NAMES[:groups])
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    # The batched per-client path gives the same numbers.
    (row,) = client_fairness(table[None], NAMES[:groups])
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-12), name


def test_equalized_odds_skips_a_group_without_positives_where_fairlearn_counts_zero() -> None:
    # Group Male has no positives: its TPR is undefined. fairlearn counts it as 0.
    y = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    p = np.array([0, 1, 1, 1, 0, 1, 0, 0])
    z = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    table = _table(y, p, z, 2)
    fpr_gap = abs(0.5 - 0.25)
    assert equalized_odds_difference(table) == pytest.approx(fpr_gap, abs=1e-12)
    assert flm.equalized_odds_difference(y, p, sensitive_features=z) == pytest.approx(1.0)
    assert equalized_odds_ratio(table) == pytest.approx(0.25 / 0.5, abs=1e-12)
    assert flm.equalized_odds_ratio(y, p, sensitive_features=z) == pytest.approx(0.0)


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_more_rows() -> None:
    rng = np.random.default_rng(3)
    small = _table(rng.integers(0, 2, 20), rng.integers(0, 2, 20), rng.integers(0, 2, 20), 2)
    large = small * 50
    rows = client_fairness(np.stack([small, large]), rng=np.random.default_rng(0))
    for row in rows:
        for name in ("disparity", "demographic_parity_difference", "accuracy"):
            value = row[name] if name != "accuracy" else row["accuracy-ci-low"]
            assert row[f"{name}-ci-low"] <= value <= row[f"{name}-ci-high"] + 1e-12, name
    width = [r["accuracy-ci-high"] - r["accuracy-ci-low"] for r in rows]
    assert width[1] < width[0] / 3  # sqrt(50) ~ 7 times narrower
    again = client_fairness(np.stack([small, large]), rng=np.random.default_rng(0))
    assert again == rows  # seeded: the same intervals every time
    one_group = client_fairness(small[None, :1], rng=np.random.default_rng(0))[0]
    assert math.isnan(one_group["disparity-ci-low"]) and math.isnan(one_group["disparity"])


@pytest.fixture(scope="module")
def fair_run() -> fedsim.RunResult:
    over = {**SMALL, "rounds": 2, "fairness.enabled": True, "fairness.bounds": False}
    return fedsim.run(REPO / "scenarios" / "default.toml", over)


def test_predictions_reproduce_the_final_metrics_through_fairlearn(fair_run) -> None:  # type: ignore[no-untyped-def]
    df = fair_run.predictions()
    assert list(df.columns) == ["client", "y_true", "y_pred", "sensitive", "group"]
    final = fair_run.server_metrics().iloc[-1]
    m = fair_run.metrics
    evaluated = m[(m.client != "server") & (m.metric == "num-examples-evaluate")]
    last = evaluated[evaluated["round"] == evaluated["round"].max()]
    assert len(df) == int(last.value.sum())
    y, p, g = df.y_true.to_numpy(), df.y_pred.to_numpy(), df.group.to_numpy()
    for name in ("demographic_parity_difference", "equalized_odds_difference"):
        reference = getattr(flm, name)(y, p, sensitive_features=g)
        assert final[name] == pytest.approx(reference, abs=1e-12), name
    frame = flm.MetricFrame(metrics=RATES, y_true=y, y_pred=p, sensitive_features=g)
    for group, row in frame.by_group.iterrows():
        for metric, value in row.items():
            assert final[f"{metric}-{group}"] == pytest.approx(value, abs=1e-12)
    assert final["eval-acc"] == pytest.approx(float(np.mean(y == p)), abs=1e-6)  # float32 means
    per_client = df.groupby("client").apply(lambda d: float(np.mean(d.y_true == d.y_pred)))
    assert final["worst-client-accuracy"] == pytest.approx(per_client.min(), abs=1e-12)
    assert final["client-accuracy-spread"] == pytest.approx(np.ptp(per_client), abs=1e-12)
    assert final["client-accuracy-std"] == pytest.approx(per_client.std(ddof=0), abs=1e-12)


def test_per_client_rows_carry_group_names_and_equal_fairlearn(fair_run) -> None:  # type: ignore[no-untyped-def]
    df = fair_run.predictions()
    m = fair_run.metrics
    last = m[(m["round"] == m["round"].max()) & (m.client != "server")]
    wide = last.pivot_table(index="client", columns="metric", values="value")
    for client, rows in df.groupby("client"):
        frame = flm.MetricFrame(
            metrics=RATES, y_true=rows.y_true, y_pred=rows.y_pred, sensitive_features=rows.group
        )
        for group, row in frame.by_group.iterrows():
            labels = set(rows.y_true[rows.group == group])
            for metric, value in row.items():
                got = wide.loc[str(client), f"{metric}-{group}"]
                needs = {"true_positive_rate": 1, "false_positive_rate": 0}.get(metric)
                if needs is not None and needs not in labels:  # undefined: fairlearn says 0
                    assert math.isnan(got) and value == 0.0
                else:
                    assert got == pytest.approx(value, abs=1e-12)
    assert not any(c.startswith(("acc-group", "spd", "eod")) for c in m.metric.unique())
    assert pd.api.types.is_float_dtype(wide["disparity-ci-low"])
