"""Each client's own fairness metrics, batched over clients, with bootstrap intervals.

The quantities of :mod:`fedsim.fairness.information` (I(Z;Ŷ) in bits) and
:mod:`fedsim.fairness.metrics` (fairlearn's group metrics) for every client's count
table ``[z, y, yhat]`` at once: one call per client costs more than the whole round's
PID solve once there are tens of clients. A client with fewer than two sensitive
groups in its test split has no disparity to speak of: its disparity, parity and odds
metrics are NaN (shown as "n/a"), not 0, which would read as perfectly fair.

Each client also gets a percentile bootstrap interval for its disparity, demographic
parity difference and accuracy: its test rows are resampled with replacement
(a multinomial draw of its count table), :data:`RESAMPLES` times, from an explicit
generator, so that a small client's number comes with its uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from fedsim.fairness import metrics as fm

__all__ = [
    "CI_HIGH",
    "CI_LOW",
    "CLIENT_CI_METRICS",
    "COVERAGE",
    "DISPARITY",
    "RESAMPLES",
    "client_fairness",
]

DISPARITY = "disparity"  # the client's own I(Z;Ŷ) in bits
CI_LOW, CI_HIGH = "-ci-low", "-ci-high"  # suffixes of a bootstrap interval's two ends
#: Per-client metrics that get a bootstrap interval (``<name>-ci-low``, ``<name>-ci-high``).
CLIENT_CI_METRICS = (DISPARITY, fm.DEMOGRAPHIC_PARITY_DIFFERENCE, fm.ACCURACY)
#: Bootstrap resamples per client and the interval's coverage.
RESAMPLES, COVERAGE = 200, 0.95
_DISPARITIES = (
    DISPARITY,
    fm.DEMOGRAPHIC_PARITY_DIFFERENCE,
    fm.DEMOGRAPHIC_PARITY_RATIO,
    fm.EQUALIZED_ODDS_DIFFERENCE,
    fm.EQUALIZED_ODDS_RATIO,
)


def client_fairness(
    counts: NDArray,
    group_names: Sequence[str] | None = None,
    *,
    rng: np.random.Generator | None = None,
    resamples: int = RESAMPLES,
) -> list[dict[str, float]]:
    """Each client's disparity, fairlearn group metrics and (with ``rng``) intervals.

    Parameters
    ----------
    counts : numpy.ndarray
        Pooled counts ``[s, z, y, yhat]``; every client has a positive total.
    group_names : sequence of str, optional
        Name of each group ``z`` in the per-group names (default its index).
    rng : numpy.random.Generator, optional
        Draws the bootstrap resamples; without it there are no intervals.
    resamples : int, default RESAMPLES
        Bootstrap resamples per client.

    Returns
    -------
    list of dict of str to float
        Per client ``s``: ``disparity`` (bits) and the four fairlearn differences and
        ratios (NaN with fewer than two groups), ``accuracy-<group>`` and, for binary
        labels, ``selection_rate-``, ``true_positive_rate-``, ``false_positive_rate-<group>``
        where defined; with ``rng``, ``<m>-ci-low`` and ``<m>-ci-high`` for every ``m`` in
        :data:`CLIENT_CI_METRICS` (the accuracy's is the client's overall accuracy).
    """
    counts = np.asarray(counts, dtype=np.float64)
    num_groups = counts.shape[1]
    names = [str(n) for n in group_names] if group_names is not None else None
    names = names or [str(z) for z in range(num_groups)]
    table = _batched(counts)
    binary = counts.shape[2:] == (2, 2)
    intervals = _bootstrap(counts, rng, resamples) if rng is not None else {}
    out = []
    for k in range(len(counts)):
        row = {m: float(table[m][k]) if table["two-groups"][k] else math.nan for m in _DISPARITIES}
        per_group = {fm.ACCURACY: (table["group-correct"], table["group-totals"])}
        if binary:
            per_group |= {
                fm.SELECTION_RATE: (counts[:, :, :, 1].sum(axis=2), table["group-totals"]),
                fm.TRUE_POSITIVE_RATE: (counts[:, :, 1, 1], counts[:, :, 1, :].sum(axis=2)),
                fm.FALSE_POSITIVE_RATE: (counts[:, :, 0, 1], counts[:, :, 0, :].sum(axis=2)),
            }
        for metric, (hits, totals) in per_group.items():
            for z in np.flatnonzero(totals[k] > 0):
                row[fm.group_metric(metric, names[z])] = float(hits[k, z] / totals[k, z])
        for name, (low, high) in intervals.items():
            row[name + CI_LOW], row[name + CI_HIGH] = float(low[k]), float(high[k])
        out.append(row)
    return out


def _batched(counts: NDArray) -> dict[str, NDArray]:
    """Per table of ``counts[b, z, y, yhat]``: disparities, ratios and accuracies."""
    num_tables, num_groups, num_classes = counts.shape[:3]
    zyhat = counts.sum(axis=2)  # [b, z, yhat]
    group_totals = zyhat.sum(axis=2)
    by_label = counts.transpose(0, 2, 1, 3).reshape(-1, num_groups, counts.shape[3])
    classes = min(counts.shape[2:])
    correct = np.trace(counts[:, :, :classes, :classes], axis1=2, axis2=3)  # [b, z]
    return {
        DISPARITY: _mutual_information(zyhat) if num_groups > 1 else np.zeros(num_tables),
        fm.DEMOGRAPHIC_PARITY_DIFFERENCE: _rate_spread(zyhat),
        fm.DEMOGRAPHIC_PARITY_RATIO: _rate_ratio(zyhat),
        fm.EQUALIZED_ODDS_DIFFERENCE: _rate_spread(by_label).reshape(num_tables, -1).max(axis=1),
        fm.EQUALIZED_ODDS_RATIO: _rate_ratio(by_label).reshape(num_tables, -1).min(axis=1),
        fm.ACCURACY: correct.sum(axis=1) / np.maximum(group_totals.sum(axis=1), 1.0),
        "two-groups": (group_totals > 0).sum(axis=1) >= 2,
        "group-correct": correct,
        "group-totals": group_totals,
    }


def _bootstrap(
    counts: NDArray, rng: np.random.Generator, resamples: int
) -> dict[str, tuple[NDArray, NDArray]]:
    """Percentile intervals of :data:`CLIENT_CI_METRICS` per client (NaN where undefined)."""
    shape = counts.shape
    flat = counts.reshape(shape[0], -1)
    totals = flat.sum(axis=1).astype(np.int64)
    pvals = flat / flat.sum(axis=1, keepdims=True)
    draws = rng.multinomial(totals, pvals, size=(resamples, shape[0]))
    draws = draws.reshape(resamples * shape[0], *shape[1:]).astype(np.float64)
    zyhat = draws.sum(axis=2)  # only what the intervals need: ~3x cheaper than _batched
    classes = min(shape[2:])
    correct = np.trace(draws[:, :, :classes, :classes], axis1=2, axis2=3).sum(axis=1)
    table = {
        DISPARITY: _mutual_information(zyhat) if shape[1] > 1 else np.zeros(len(draws)),
        fm.DEMOGRAPHIC_PARITY_DIFFERENCE: _rate_spread(zyhat),
        fm.ACCURACY: correct / np.maximum(zyhat.sum(axis=(1, 2)), 1.0),
    }
    two_groups = (counts.sum(axis=(2, 3)) > 0).sum(axis=1) >= 2
    tail = (1.0 - COVERAGE) / 2
    out = {}
    for name in CLIENT_CI_METRICS:
        values = table[name].reshape(resamples, shape[0])
        low, high = np.quantile(values, [tail, 1.0 - tail], axis=0)
        if name != fm.ACCURACY:
            low, high = np.where(two_groups, low, np.nan), np.where(two_groups, high, np.nan)
        out[name] = (low, high)
    return out


def _mutual_information(joint: NDArray) -> NDArray:
    """I(X;Y) in bits of every table ``joint[b, x, y]`` (each with a positive total)."""
    p = joint / joint.sum(axis=(1, 2), keepdims=True)
    p_x = np.broadcast_to(p.sum(axis=2, keepdims=True), p.shape)
    p_y = np.broadcast_to(p.sum(axis=1, keepdims=True), p.shape)
    mask = p > 0
    terms = np.zeros_like(p)
    terms[mask] = p[mask] * (np.log(p[mask]) - np.log(p_x[mask]) - np.log(p_y[mask]))
    return np.maximum(terms.sum(axis=(1, 2)), 0.0) / math.log(2)


def _rates(counts: NDArray) -> tuple[NDArray, NDArray]:
    """P(ŷ | group) of every ``counts[b, group, yhat]`` and which groups have samples."""
    totals = counts.sum(axis=2)
    present = totals > 0
    return counts / np.where(present, totals, 1.0)[:, :, None], present


def _rate_spread(counts: NDArray) -> NDArray:
    """Per batch entry of ``counts[b, group, yhat]``: max over ŷ of the spread of P(ŷ|group).

    As :mod:`fedsim.fairness.metrics` defines it: groups without samples are skipped, so
    fewer than two groups with samples give 0.
    """
    rates, present = _rates(counts)
    high = np.where(present[:, :, None], rates, -np.inf).max(axis=1)
    low = np.where(present[:, :, None], rates, np.inf).min(axis=1)
    return (high - low).max(axis=1, initial=0.0, where=np.isfinite(high))


def _rate_ratio(counts: NDArray) -> NDArray:
    """Per batch entry of ``counts[b, group, yhat]``: the min-over-max ratio of P(ŷ=1|group)
    (two classes) or the smallest over ŷ, as :mod:`fedsim.fairness.metrics` defines it."""
    rates, present = _rates(counts)
    if rates.shape[2] == 2:
        rates = rates[:, :, 1:]
    high = np.where(present[:, :, None], rates, -np.inf).max(axis=1)
    low = np.where(present[:, :, None], rates, np.inf).min(axis=1)
    positive = np.isfinite(high) & (high > 0)
    ratio = np.divide(low, high, out=np.ones_like(high), where=positive)
    ratio = np.where(present.sum(axis=1)[:, None] >= 2, ratio, 1.0)
    return ratio.min(axis=1)
