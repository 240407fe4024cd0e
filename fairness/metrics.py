"""Group-fairness and accuracy metrics from a count table.

Every function takes one count (or probability) table indexed ``[z, y, yhat]``:
sensitive-attribute value, true label, prediction. Labels and predictions share
one index space (class ``k`` of ``y`` is class ``k`` of ``yhat``). A group (or a
group-and-label cell) with no samples has no rate and is skipped; when fewer
than two groups have a rate, the difference is 0.

Definitions follow fairlearn's ``demographic_parity_difference`` and
``equalized_odds_difference`` (``agg="worst_case"``) for binary predictions,
with class 1 as the positive prediction.
"""

from __future__ import annotations

import numpy as np
from fedsim.fairness.information import validate_table
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "accuracy",
    "equalized_odds_difference",
    "group_accuracy",
    "statistical_parity_difference",
]

_NAME = "count table [z, y, yhat]"


def _rate_spread(counts: NDArray) -> float:
    """Largest max-minus-min over groups of P(Ŷ = k | group), over classes k.

    ``counts`` has groups on axis 0 and predictions on the last axis; groups
    with no samples are skipped.
    """
    totals = counts.sum(axis=-1)
    present = totals > 0
    if present.sum() < 2:
        return 0.0
    rates = counts[present] / totals[present][:, None]
    return float(np.max(rates.max(axis=0) - rates.min(axis=0)))


def statistical_parity_difference(table: ArrayLike) -> float:
    """Statistical (demographic) parity difference.

    Parameters
    ----------
    table : array_like
        Counts indexed ``[z, y, yhat]``.

    Returns
    -------
    float
        For binary predictions, ``max_z P(Ŷ=1|Z=z) - min_z P(Ŷ=1|Z=z)``; for
        more classes, the largest such spread over the predicted classes
        (which for two classes is the same number). Empty groups are skipped.

    Raises
    ------
    DataError
        If the table is not 3-D, has negative or non-finite cells, or is all zero.
    """
    counts = validate_table(table, 3, _NAME)
    return _rate_spread(counts.sum(axis=1))


def equalized_odds_difference(table: ArrayLike) -> float:
    """Equalized-odds difference (worst case over true labels).

    Parameters
    ----------
    table : array_like
        Counts indexed ``[z, y, yhat]``.

    Returns
    -------
    float
        For binary labels and predictions, ``max(TPR spread, FPR spread)`` where
        a spread is max minus min over groups, i.e. the largest over ``y`` of
        the spread of ``P(Ŷ=1|Y=y,Z=z)``; for more classes, the largest spread
        over ``y`` and predicted class. (z, y) cells with no samples are skipped.

    Raises
    ------
    DataError
        If the table is not 3-D, has negative or non-finite cells, or is all zero.
    """
    counts = validate_table(table, 3, _NAME)
    return max(_rate_spread(counts[:, y, :]) for y in range(counts.shape[1]))


def accuracy(table: ArrayLike) -> float:
    """Fraction of samples whose prediction equals the true label.

    Parameters
    ----------
    table : array_like
        Counts indexed ``[z, y, yhat]``.

    Returns
    -------
    float
        ``sum_{z,k} n[z,k,k] / sum n``.

    Raises
    ------
    DataError
        If the table is not 3-D, has negative or non-finite cells, or is all zero.
    """
    counts = validate_table(table, 3, _NAME)
    return float(_correct(counts).sum() / counts.sum())


def group_accuracy(table: ArrayLike) -> dict[int, float]:
    """Accuracy within each sensitive group.

    Parameters
    ----------
    table : array_like
        Counts indexed ``[z, y, yhat]``.

    Returns
    -------
    dict of int to float
        Group index ``z`` to the fraction of its samples predicted correctly;
        groups with no samples are left out.

    Raises
    ------
    DataError
        If the table is not 3-D, has negative or non-finite cells, or is all zero.
    """
    counts = validate_table(table, 3, _NAME)
    correct = _correct(counts)
    totals = counts.sum(axis=(1, 2))
    return {int(z): float(correct[z] / totals[z]) for z in np.flatnonzero(totals > 0)}


def _correct(counts: NDArray) -> NDArray:
    """Correctly predicted count of each group (diagonal of each [y, yhat] block)."""
    classes = min(counts.shape[1], counts.shape[2])
    return np.trace(counts[:, :classes, :classes], axis1=1, axis2=2)
