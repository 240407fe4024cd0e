"""Group-fairness and accuracy metrics from a count table, and their record names.

Every function takes one count (or probability) table indexed ``[z, y, yhat]``:
sensitive-attribute value, true label, prediction. Labels and predictions share
one index space (class ``k`` of ``y`` is class ``k`` of ``yhat``). A group (or a
group-and-label cell) with no samples has no rate and is skipped; when fewer
than two groups have a rate, the difference is 0 and the ratio 1.

Names and definitions follow fairlearn (``fairlearn.metrics``) for binary predictions
with class 1 as the positive prediction (``pos_label=1``): demographic parity
difference and ratio, equalized odds difference and ratio (``agg="worst_case"``),
per-group selection rate, true- and false-positive rate. Two deliberate differences:

* **Equalized odds when a group lacks a label value.** fairlearn counts the undefined
  rate (e.g. the TPR of a group with no positives) as 0, so such a group shows a
  spurious gap; fedsim skips the undefined (group, label) cell. On tables where every
  group has both labels the values agree with fairlearn's to rounding.
* **Ratios when every group's rate is 0.** fairlearn returns NaN (0/0); fedsim returns
  1 (the rates are equal, so parity holds).

For more than two classes the differences take the largest spread and the ratios the
smallest ratio over predicted classes (one-vs-rest); fairlearn has no such case.

The metric-name constants below are the one place these names are spelled: the server
and per-client rows, the report tables and the global evaluation use them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedsim.errors import DataError
from fedsim.fairness.information import validate_table

__all__ = [
    "ACCURACY",
    "DEMOGRAPHIC_PARITY_DIFFERENCE",
    "DEMOGRAPHIC_PARITY_RATIO",
    "EQUALIZED_ODDS_DIFFERENCE",
    "EQUALIZED_ODDS_RATIO",
    "FALSE_POSITIVE_RATE",
    "PER_GROUP",
    "SELECTION_RATE",
    "TRUE_POSITIVE_RATE",
    "accuracy",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "group_accuracy",
    "group_metric",
    "group_rates",
    "statistical_parity_difference",
    "table_metrics",
]

# Record names (fairlearn's vocabulary).
DEMOGRAPHIC_PARITY_DIFFERENCE = "demographic_parity_difference"
DEMOGRAPHIC_PARITY_RATIO = "demographic_parity_ratio"
EQUALIZED_ODDS_DIFFERENCE = "equalized_odds_difference"
EQUALIZED_ODDS_RATIO = "equalized_odds_ratio"
# Per-group names: ``<name>-<group name>``, e.g. ``selection_rate-Female``.
SELECTION_RATE = "selection_rate"
TRUE_POSITIVE_RATE = "true_positive_rate"
FALSE_POSITIVE_RATE = "false_positive_rate"
ACCURACY = "accuracy"
#: The per-group metric names, in report order.
PER_GROUP = (ACCURACY, SELECTION_RATE, TRUE_POSITIVE_RATE, FALSE_POSITIVE_RATE)

_NAME = "count table [z, y, yhat]"


def group_metric(metric: str, group: str) -> str:
    """The record name of a per-group metric: ``group_metric("selection_rate", "Female")``
    is ``"selection_rate-Female"``."""
    return f"{metric}-{group}"


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


def _rate_ratio(counts: NDArray) -> float:
    """Smallest min-over-max ratio over groups of P(Ŷ = k | group): k = 1 for two
    predicted classes (fairlearn's ``pos_label=1``), else the worst class.

    Groups with no samples are skipped; fewer than two groups, or every rate 0, give 1.
    """
    totals = counts.sum(axis=-1)
    present = totals > 0
    if present.sum() < 2:
        return 1.0
    rates = counts[present] / totals[present][:, None]
    if rates.shape[1] == 2:
        rates = rates[:, 1:]
    high, low = rates.max(axis=0), rates.min(axis=0)
    ratios = np.where(high > 0, low / np.where(high > 0, high, 1.0), 1.0)
    return float(ratios.min())


def demographic_parity_ratio(table: ArrayLike) -> float:
    """Demographic parity ratio: ``min_z P(Ŷ=1|Z=z) / max_z P(Ŷ=1|Z=z)``.

    Parameters
    ----------
    table : array_like
        Counts indexed ``[z, y, yhat]``.

    Returns
    -------
    float
        In [0, 1]; 1 when fewer than two groups have samples or every group's
        selection rate is 0 (fairlearn: NaN). More classes: the smallest ratio over
        predicted classes.

    Raises
    ------
    DataError
        If the table is not 3-D, has negative or non-finite cells, or is all zero.
    """
    counts = validate_table(table, 3, _NAME)
    return _rate_ratio(counts.sum(axis=1))


def equalized_odds_ratio(table: ArrayLike) -> float:
    """Equalized-odds ratio: the smaller of the TPR ratio and the FPR ratio over groups.

    Parameters
    ----------
    table : array_like
        Counts indexed ``[z, y, yhat]``.

    Returns
    -------
    float
        The smallest over true labels ``y`` of ``min_z / max_z`` of ``P(Ŷ=1|Y=y,Z=z)``
        (more classes: over predicted classes too). (z, y) cells with no samples are
        skipped (fairlearn counts their rate as 0, giving ratio 0).

    Raises
    ------
    DataError
        If the table is not 3-D, has negative or non-finite cells, or is all zero.
    """
    counts = validate_table(table, 3, _NAME)
    return min(_rate_ratio(counts[:, y, :]) for y in range(counts.shape[1]))


def group_rates(table: ArrayLike) -> dict[str, dict[int, float]]:
    """Per-group selection rate, true-positive rate and false-positive rate (binary).

    Parameters
    ----------
    table : array_like
        Counts indexed ``[z, 2, 2]`` (class 1 is the positive prediction).

    Returns
    -------
    dict
        ``{SELECTION_RATE: {z: P(Ŷ=1|Z=z)}, TRUE_POSITIVE_RATE: {z: P(Ŷ=1|Y=1,Z=z)},
        FALSE_POSITIVE_RATE: {z: P(Ŷ=1|Y=0,Z=z)}}``; a group without the rows a rate
        needs is left out of that rate. Empty for more than two classes.

    Raises
    ------
    DataError
        If the table is not 3-D, has negative or non-finite cells, or is all zero.
    """
    counts = validate_table(table, 3, _NAME)
    if counts.shape[1:] != (2, 2):
        return {}

    def rate(block: NDArray) -> dict[int, float]:  # block [z, yhat]
        totals = block.sum(axis=1)
        return {int(z): float(block[z, 1] / totals[z]) for z in np.flatnonzero(totals > 0)}

    return {
        SELECTION_RATE: rate(counts.sum(axis=1)),
        TRUE_POSITIVE_RATE: rate(counts[:, 1, :]),
        FALSE_POSITIVE_RATE: rate(counts[:, 0, :]),
    }


def demographic_parity_difference(table: ArrayLike) -> float:
    """Demographic (statistical) parity difference.

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


#: The earlier name of :func:`demographic_parity_difference`.
statistical_parity_difference = demographic_parity_difference


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
        over ``y`` and predicted class. (z, y) cells with no samples are skipped
        (fairlearn counts their rate as 0: see the module docstring).

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


def _names(group_names: Sequence[str] | None, num_groups: int) -> list[str]:
    if group_names is None:
        return [str(z) for z in range(num_groups)]
    if len(group_names) != num_groups:
        raise DataError(
            f"{len(group_names)} group names for a table of {num_groups} groups; pass one "
            "name per sensitive group (RawDataset.group_names)"
        )
    return [str(n) for n in group_names]


def table_metrics(table: ArrayLike, group_names: Sequence[str] | None = None) -> dict[str, float]:
    """fairlearn's group metrics of one count table ``[z, y, yhat]``, by record name.

    Parameters
    ----------
    table : numpy.ndarray
        Counts indexed ``[z, y, yhat]`` with a positive total.
    group_names : sequence of str, optional
        Name of each group ``z`` (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    dict of str to float
        ``demographic_parity_difference``/``_ratio``, ``equalized_odds_difference``/
        ``_ratio``, and per group with samples ``accuracy-<name>`` and (binary labels)
        ``selection_rate-<name>``, ``true_positive_rate-<name>``,
        ``false_positive_rate-<name>`` (a rate the group has no rows for is left out).

    Raises
    ------
    DataError
        For an invalid table or a wrong number of group names.
    """
    names = _names(group_names, np.shape(table)[0])
    out = {
        DEMOGRAPHIC_PARITY_DIFFERENCE: demographic_parity_difference(table),
        DEMOGRAPHIC_PARITY_RATIO: demographic_parity_ratio(table),
        EQUALIZED_ODDS_DIFFERENCE: equalized_odds_difference(table),
        EQUALIZED_ODDS_RATIO: equalized_odds_ratio(table),
    }
    per_group = {ACCURACY: group_accuracy(table)} | group_rates(table)
    for metric in PER_GROUP:
        for z, value in per_group.get(metric, {}).items():
            out[group_metric(metric, names[z])] = value
    return out
