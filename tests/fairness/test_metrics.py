"""Group-fairness metrics: hand-computed values and per-sample recomputation."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.errors import DataError
from fedsim.fairness.metrics import (
    accuracy,
    equalized_odds_difference,
    group_accuracy,
    statistical_parity_difference,
)

# [z, y, yhat]
HAND = np.array(
    [
        [[30, 10], [5, 55]],  # z=0: P(Ŷ=1)=0.65, FPR=0.25, TPR=55/60, correct 85/100
        [[40, 20], [10, 30]],  # z=1: P(Ŷ=1)=0.50, FPR=1/3, TPR=0.75, correct 70/100
    ],
    dtype=float,
)


def test_hand_computed_values() -> None:
    assert statistical_parity_difference(HAND) == pytest.approx(0.15, abs=1e-12)
    tpr_gap, fpr_gap = 55 / 60 - 0.75, 1 / 3 - 0.25
    assert equalized_odds_difference(HAND) == pytest.approx(max(tpr_gap, fpr_gap), abs=1e-12)
    assert accuracy(HAND) == pytest.approx(155 / 200, abs=1e-12)
    assert group_accuracy(HAND) == pytest.approx({0: 0.85, 1: 0.70}, abs=1e-12)


def test_fair_classifier_scores_zero() -> None:
    table = np.stack([HAND[0], 3 * HAND[0]])
    assert statistical_parity_difference(table) == pytest.approx(0.0, abs=1e-12)
    assert equalized_odds_difference(table) == pytest.approx(0.0, abs=1e-12)


def test_multiclass_takes_worst_class() -> None:
    table = np.zeros((2, 3, 3))
    table[0, 0] = [6, 2, 2]  # group 0 predicts 0.6/0.2/0.2
    table[1, 0] = [5, 5, 0]  # group 1 predicts 0.5/0.5/0.0
    assert statistical_parity_difference(table) == pytest.approx(0.3, abs=1e-12)
    assert equalized_odds_difference(table) == pytest.approx(0.3, abs=1e-12)  # only y=0 present
    assert accuracy(table) == pytest.approx(11 / 20, abs=1e-12)


def test_empty_groups_are_skipped() -> None:
    padded = np.concatenate([HAND, np.zeros((1, 2, 2))])
    assert statistical_parity_difference(padded) == statistical_parity_difference(HAND)
    assert equalized_odds_difference(padded) == equalized_odds_difference(HAND)
    assert group_accuracy(padded) == group_accuracy(HAND)
    assert statistical_parity_difference(padded[:1]) == 0.0  # one group: no disparity
    no_positives = HAND.copy()
    no_positives[1, 1] = 0  # group 1 has no Y=1 samples: TPR gap is undefined, skipped
    assert equalized_odds_difference(no_positives) == pytest.approx(1 / 3 - 0.25, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_matches_per_sample_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    z = rng.integers(0, 3, n)
    y = (rng.random(n) < 0.3 + 0.1 * z).astype(int)
    yhat = np.where(rng.random(n) < 0.8, y, 1 - y) * (rng.random(n) < 0.9 - 0.1 * z)
    table = np.zeros((3, 2, 2))
    np.add.at(table, (z, y, yhat), 1)

    rate = [yhat[z == g].mean() for g in range(3)]
    assert statistical_parity_difference(table) == pytest.approx(max(rate) - min(rate))
    gaps = []
    for label in (0, 1):
        rates = [yhat[(z == g) & (y == label)].mean() for g in range(3)]
        gaps.append(max(rates) - min(rates))
    assert equalized_odds_difference(table) == pytest.approx(max(gaps))
    assert accuracy(table) == pytest.approx(np.mean(y == yhat))
    expected = {g: np.mean(y[z == g] == yhat[z == g]) for g in range(3)}
    assert group_accuracy(table) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (np.zeros((2, 2, 2)), "sums to zero"),
        (np.ones((2, 2)), "3 axes"),
        (-np.ones((2, 2, 2)), "negative"),
        (np.full((2, 2, 2), np.nan), "NaN"),
    ],
)
@pytest.mark.parametrize(
    "metric",
    [statistical_parity_difference, equalized_odds_difference, accuracy, group_accuracy],
)
def test_bad_tables_raise_data_error(table: np.ndarray, message: str, metric: object) -> None:
    with pytest.raises(DataError, match=message):
        metric(table)  # type: ignore[operator]
