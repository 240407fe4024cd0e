"""FairFed's fairness-aware aggregation weights (pure numpy).

Ezzeldin, He, Ferrara, Avestimehr, "FairFed: Enabling Group Fairness in Federated
Learning", AAAI 2023, Algorithm 1. Client ``k`` starts at ``ω_k = n_k / n``; each round,
with ``F`` a signed group-fairness metric of the current global model,

    Δ_k = |F_global − F_k|            (|Acc_global − Acc_k| where F_k is undefined)
    ω_k ← ω_k − β (Δ_k − mean_j Δ_j)
    ω_k ← ω_k / Σ_j ω_j

so clients whose local fairness is closer to the global one gain weight. Metrics are
computed from count tables ``[z, y, yhat]`` (only counts leave clients). With two
groups and two classes they are the paper's signed differences:

* ``demographic-parity``: SPD = P(Ŷ=1 | Z=0) − P(Ŷ=1 | Z=1);
* ``equal-opportunity``: the paper's EOD = P(Ŷ=1 | Z=0, Y=1) − P(Ŷ=1 | Z=1, Y=1);
* ``equalized-odds`` (a fedsim extension): the TPR and the FPR differences, with
  ``Δ_k`` the larger of the two absolute gaps.

With more groups or classes, each metric is the vector of differences between group 0
and every other group, for every predicted class (class 1 only for binary tasks), and
``Δ_k`` is the largest absolute component gap. Weights driven below zero by a large
``β`` are clipped at zero before renormalising (the paper does not say; a negative
aggregation weight has no meaning).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from fedsim.errors import ConfigError, DataError

__all__ = ["METRICS", "FairFedMetric", "fairfed_deltas", "fairness_vector", "update_weights"]

FairFedMetric = Literal["demographic-parity", "equal-opportunity", "equalized-odds"]
METRICS: tuple[str, ...] = get_args(FairFedMetric)


def _rates(counts: NDArray[np.float64], condition: int | None) -> NDArray[np.float64] | None:
    """``P(Ŷ=c | Z=a[, Y=condition])`` as ``[a, c]``; None if a group has no rows."""
    cell = counts.sum(axis=1) if condition is None else counts[:, condition, :]
    totals = cell.sum(axis=1)
    if np.any(totals == 0):
        return None
    return cell / totals[:, None]


def fairness_vector(counts: NDArray, metric: str) -> NDArray[np.float64] | None:
    """The signed fairness metric of one count table, or None where it is undefined.

    Parameters
    ----------
    counts : numpy.ndarray
        Counts ``[z, y, yhat]`` (labels and predictions share their class index).
    metric : {"demographic-parity", "equal-opportunity", "equalized-odds"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray or None
        The components ``rate[0, c] − rate[a, c]`` for ``a ≥ 1``; None when a group
        (or, for the odds metrics, a group-and-label cell) holds no rows.

    Raises
    ------
    ConfigError
        For an unknown metric.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if metric not in METRICS:
        raise ConfigError(f"FairFed metric must be one of {', '.join(METRICS)}, got {metric!r}")
    num_classes = counts.shape[2]
    positive = [1] if num_classes == 2 else list(range(num_classes))
    parts: list[NDArray[np.float64]] = []
    if metric == "demographic-parity":
        conditions: list[tuple[int | None, list[int]]] = [(None, positive)]
    elif metric == "equal-opportunity":
        conditions = [(c, [c]) for c in positive]
    else:
        conditions = [(y, positive) for y in range(num_classes)]
    for condition, classes in conditions:
        rates = _rates(counts, condition)
        if rates is None:
            return None
        parts.append((rates[0, classes][None, :] - rates[1:, classes]).ravel())
    return np.concatenate(parts)


def _accuracy(counts: NDArray[np.float64]) -> float:
    total = counts.sum()
    return float(np.trace(counts.sum(axis=0)) / total) if total > 0 else 0.0


def fairfed_deltas(tables: NDArray, metric: str) -> NDArray[np.float64]:
    """Each client's ``Δ_k``: the gap between its local and the global fairness metric.

    Parameters
    ----------
    tables : numpy.ndarray
        Per-client counts ``[k, z, y, yhat]`` evaluated on the same global model; the
        global metric is that of their sum.
    metric : str
        One of :data:`METRICS`.

    Returns
    -------
    numpy.ndarray
        ``Δ_k = max |F_global − F_k|`` over the metric's components, or
        ``|Acc_global − Acc_k|`` for a client whose metric is undefined (or every
        client, when the global metric is undefined), as in the paper.

    Raises
    ------
    DataError
        If ``tables`` is not 4-D.
    """
    tables = np.asarray(tables, dtype=np.float64)
    if tables.ndim != 4:
        raise DataError(f"FairFed needs count tables [k, z, y, yhat], got shape {tables.shape}")
    pooled = tables.sum(axis=0)
    global_f = fairness_vector(pooled, metric)
    global_acc = _accuracy(pooled)
    deltas = np.empty(len(tables))
    for k, table in enumerate(tables):
        local_f = fairness_vector(table, metric) if global_f is not None else None
        if global_f is None or local_f is None:
            deltas[k] = abs(global_acc - _accuracy(table))
        else:
            deltas[k] = float(np.max(np.abs(global_f - local_f)))
    return deltas


def update_weights(weights: NDArray, deltas: NDArray, beta: float) -> NDArray[np.float64]:
    """One FairFed step ``ω ← normalise(ω/Σω − β (Δ − mean Δ))``, keeping ``Σω``.

    Parameters
    ----------
    weights : numpy.ndarray
        Current non-negative weights of the clients being updated, in any unit (fedsim
        keeps them in examples, so clients outside the update keep a comparable scale).
    deltas : numpy.ndarray
        Their ``Δ_k``, same order.
    beta : float
        Step size ``β ≥ 0``; ``β = 0`` returns the weights unchanged (bit for bit).

    Returns
    -------
    numpy.ndarray
        The updated weights, clipped at zero, with the same total as ``weights``.

    Raises
    ------
    DataError
        If the arrays differ in length or the weights do not have a positive total.
    """
    weights = np.asarray(weights, dtype=np.float64)
    deltas = np.asarray(deltas, dtype=np.float64)
    if weights.shape != deltas.shape or weights.ndim != 1:
        raise DataError(f"FairFed weights {weights.shape} and deltas {deltas.shape} differ")
    if beta == 0 or len(weights) == 0:
        return weights.copy()
    total = weights.sum()
    if not total > 0:
        raise DataError(f"FairFed weights must have a positive total, got {weights.tolist()}")
    share = np.clip(weights / total - beta * (deltas - deltas.mean()), 0.0, None)
    return share / share.sum() * total
