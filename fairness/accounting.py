"""Fairness of pooled client count tables: disparities, their PID and group metrics.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated
Learning Using Partial Information Decomposition" (ICLR 2024). Each client reports
the count table ``[z, y, yhat]`` of its test split; the tables of one round, stacked
in partition-id order, form ``counts[s, z, y, yhat]`` (so that P(S=k) = n_k / n).
From them :func:`round_fairness` computes

* global disparity I(Z;Ŷ) and local disparity I(Z;Ŷ|S), in bits;
* their decomposition Uni/Red/Syn (:func:`fedsim.fairness.pid.decompose`);
* statistical-parity and equalized-odds differences and per-group accuracy of the
  pooled table;

and :func:`client_fairness` each client's own I(Z;Ŷ), SPD, EOD and group accuracies.
Pure numpy maths: the Flower wrapper that collects the tables every round is
:class:`fedsim.strategies.fairness_accounting.FairnessAccounting`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from fedsim.fairness.information import conditional_mutual_information, mutual_information
from fedsim.fairness.metrics import (
    equalized_odds_difference,
    group_accuracy,
    statistical_parity_difference,
)
from fedsim.fairness.pid import CLOSED_FORM, decompose
from numpy.typing import NDArray

from fedsim.errors import DataError, SolverError

__all__ = [
    "RoundFairness",
    "client_fairness",
    "pool_counts",
    "round_fairness",
]

# Server-level metric names (rows with client "server").
GLOBAL_DISPARITY = "global-disparity"
LOCAL_DISPARITY = "local-disparity"
UNIQUE = "unique"
REDUNDANT = "redundant"
MASKED = "masked"
SPD = "spd"
EOD = "eod"
PID_SOLVED = "pid-solved"
ACC_GROUP = "acc-group-"  # + the group index z
# Per-client metric names (rows with client str(partition id)).
DISPARITY = "disparity"


@dataclass(frozen=True)
class RoundFairness:
    """Fairness of one round's pooled counts; disparities and PID terms in bits.

    ``unique``, ``redundant`` and ``masked`` are NaN when the PID was not asked for
    or could not be solved (``pid_status`` says which).
    """

    global_disparity: float
    local_disparity: float
    unique: float
    redundant: float
    masked: float
    pid_status: str  # cvxpy status, "closed-form", "skipped" or "failed: ..."
    spd: float
    eod: float
    group_accuracy: dict[int, float] = field(default_factory=dict)

    @property
    def pid_solved(self) -> bool:
        return not math.isnan(self.unique)

    def metrics(self, with_pid: bool = True) -> dict[str, float]:
        """Server-level metrics under their record names."""
        out = {GLOBAL_DISPARITY: self.global_disparity, LOCAL_DISPARITY: self.local_disparity}
        if with_pid:
            out |= {UNIQUE: self.unique, REDUNDANT: self.redundant, MASKED: self.masked}
            out[PID_SOLVED] = float(self.pid_solved)
        out |= {SPD: self.spd, EOD: self.eod}
        out |= {f"{ACC_GROUP}{z}": acc for z, acc in self.group_accuracy.items()}
        return out


def pool_counts(tables: Iterable[NDArray]) -> NDArray[np.int64]:
    """Stack per-client count tables ``[z, y, yhat]`` into ``[s, z, y, yhat]``.

    Raises
    ------
    DataError
        If there is no table or the tables differ in shape.
    """
    tables = [np.asarray(t, dtype=np.int64) for t in tables]
    if not tables:
        raise DataError("no client count table to pool; at least one is needed")
    shapes = {t.shape for t in tables}
    if len(shapes) != 1 or tables[0].ndim != 3:
        raise DataError(f"client count tables must share one 3-D shape, got {sorted(shapes)}")
    return np.stack(tables)


def round_fairness(counts: NDArray, *, pid: bool = True) -> RoundFairness:
    """Disparities, PID, SPD, EOD and group accuracy of pooled counts ``[s, z, y, yhat]``.

    Parameters
    ----------
    counts : numpy.ndarray
        Non-negative counts with a positive total; ``s`` indexes clients, so the
        client weights P(S=k) are the clients' sample shares.
    pid : bool, default True
        Decompose I(Z;Ŷ,S) into unique, redundant and masked disparity.

    Returns
    -------
    RoundFairness
        With a single sensitive group every disparity is 0 (no solve). If the PID
        solve fails, its terms are NaN and ``pid_status`` starts with ``"failed"``.

    Raises
    ------
    DataError
        If ``counts`` is not a 4-D table of valid counts.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 4:
        raise DataError(f"pooled counts must be 4-D [s, z, y, yhat], got shape {counts.shape}")
    joint = counts.sum(axis=2).transpose(1, 2, 0)  # [z, yhat, s]
    table = counts.sum(axis=0)  # [z, y, yhat]
    spd, eod = statistical_parity_difference(table), equalized_odds_difference(table)
    accs = group_accuracy(table)
    nan = math.nan
    if joint.shape[0] == 1:  # no sensitive attribute: nothing to disclose
        return RoundFairness(0.0, 0.0, 0.0, 0.0, 0.0, CLOSED_FORM, spd, eod, accs)
    global_bits = mutual_information(joint.sum(axis=2))
    local_bits = conditional_mutual_information(joint)
    if not pid:
        return RoundFairness(global_bits, local_bits, nan, nan, nan, "skipped", spd, eod, accs)
    try:
        res = decompose(joint)
    except SolverError as exc:
        return RoundFairness(
            global_bits, local_bits, nan, nan, nan, f"failed: {exc}", spd, eod, accs
        )
    return RoundFairness(
        res.global_disparity,
        res.local_disparity,
        res.unique,
        res.redundant,
        res.masked,
        res.status,
        spd,
        eod,
        accs,
    )


def client_fairness(counts: NDArray) -> list[dict[str, float]]:
    """Each client's own disparity I(Z;Ŷ) in bits, SPD, EOD and group accuracies.

    The same quantities as :mod:`fedsim.fairness.information` and :mod:`fedsim.fairness.metrics`
    compute for one table, batched over clients: one call per client costs more
    than the whole round's PID solve once there are tens of clients.

    Parameters
    ----------
    counts : numpy.ndarray
        Pooled counts ``[s, z, y, yhat]``; every client has a positive total.

    Returns
    -------
    list of dict of str to float
        Per client ``s``: ``disparity``, ``spd``, ``eod`` and ``acc-group-<z>`` for
        every group the client has samples of.
    """
    counts = np.asarray(counts, dtype=np.float64)
    num_clients, num_groups, num_classes = counts.shape[:3]
    zyhat = counts.sum(axis=2)  # [s, z, yhat]
    disparity = _batched_mutual_information(zyhat) if num_groups > 1 else np.zeros(num_clients)
    spd = _batched_rate_spread(zyhat)
    by_label = counts.transpose(0, 2, 1, 3).reshape(-1, num_groups, counts.shape[3])
    eod = _batched_rate_spread(by_label).reshape(num_clients, num_classes).max(axis=1)
    group_totals = counts.sum(axis=(2, 3))
    classes = min(counts.shape[2:])
    correct = np.trace(counts[:, :, :classes, :classes], axis1=2, axis2=3)
    out = []
    for k in range(num_clients):
        row = {DISPARITY: float(disparity[k]), SPD: float(spd[k]), EOD: float(eod[k])}
        for z in np.flatnonzero(group_totals[k] > 0):
            row[f"{ACC_GROUP}{z}"] = float(correct[k, z] / group_totals[k, z])
        out.append(row)
    return out


def _batched_mutual_information(joint: NDArray) -> NDArray:
    """I(X;Y) in bits of every table ``joint[b, x, y]`` (each with a positive total)."""
    p = joint / joint.sum(axis=(1, 2), keepdims=True)
    p_x = np.broadcast_to(p.sum(axis=2, keepdims=True), p.shape)
    p_y = np.broadcast_to(p.sum(axis=1, keepdims=True), p.shape)
    mask = p > 0
    terms = np.zeros_like(p)
    terms[mask] = p[mask] * (np.log(p[mask]) - np.log(p_x[mask]) - np.log(p_y[mask]))
    return np.maximum(terms.sum(axis=(1, 2)), 0.0) / math.log(2)


def _batched_rate_spread(counts: NDArray) -> NDArray:
    """Per batch entry of ``counts[b, group, yhat]``: max over ŷ of the spread of P(ŷ|group).

    As :mod:`fedsim.fairness.metrics` defines it: groups without samples are skipped, so
    fewer than two groups with samples give 0.
    """
    totals = counts.sum(axis=2)
    present = totals > 0
    rates = counts / np.where(present, totals, 1.0)[:, :, None]
    high = np.where(present[:, :, None], rates, -np.inf).max(axis=1)
    low = np.where(present[:, :, None], rates, np.inf).min(axis=1)
    return (high - low).max(axis=1, initial=0.0, where=np.isfinite(high))
