"""Fairness of pooled client count tables: disparities, their PID and group metrics.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated
Learning Using Partial Information Decomposition" (ICLR 2024). Each client reports
the count table ``[z, y, yhat]`` of its test split; the tables of one round, stacked
in partition-id order, form ``counts[s, z, y, yhat]`` (so that P(S=k) = n_k / n).
From them :func:`round_fairness` computes

* global disparity I(Z;Ŷ) and local disparity I(Z;Ŷ|S), in bits;
* their decomposition Uni/Red/Syn (:func:`fedsim.fairness.pid.decompose`);
* fairlearn's group metrics of the pooled table (:mod:`fedsim.fairness.metrics`);
* client-level performance fairness as q-FFL (Li et al., ICLR 2020) reports it: the
  worst client's accuracy and the spread (max − min, standard deviation) of the
  clients' accuracies, every client weighing the same;

and :func:`client_fairness` each client's own I(Z;Ŷ), group metrics and bootstrap
confidence intervals. Pure numpy maths: the Flower wrapper that collects the tables
every round is :class:`fedsim.strategies.fairness_accounting.FairnessAccounting`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedsim.errors import DataError, SolverError
from fedsim.fairness import metrics as fm
from fedsim.fairness.client_metrics import CLIENT_CI_METRICS, DISPARITY, client_fairness
from fedsim.fairness.information import conditional_mutual_information, mutual_information
from fedsim.fairness.pid import CLOSED_FORM, decompose

__all__ = [
    "CLIENT_CI_METRICS",
    "DISPARITY",
    "RoundFairness",
    "client_fairness",
    "pool_counts",
    "round_fairness",
]

# Server-level metric names (rows with client "server"); fairlearn's names are in
# fedsim.fairness.metrics.
GLOBAL_DISPARITY = "global-disparity"
LOCAL_DISPARITY = "local-disparity"
UNIQUE = "unique"
REDUNDANT = "redundant"
MASKED = "masked"
PID_SOLVED = "pid-solved"
WORST_CLIENT_ACCURACY = "worst-client-accuracy"
CLIENT_ACCURACY_SPREAD = "client-accuracy-spread"  # max - min over clients
CLIENT_ACCURACY_STD = "client-accuracy-std"  # population std over clients


@dataclass(frozen=True)
class RoundFairness:
    """Fairness of one round's pooled counts; disparities and PID terms in bits.

    ``unique``, ``redundant`` and ``masked`` are NaN when the PID was not asked for
    or could not be solved (``pid_status`` says which). ``group`` holds the pooled
    table's fairlearn metrics (:func:`fedsim.fairness.metrics.table_metrics`) and
    ``clients`` the client-level accuracy statistics (worst, spread, std).
    """

    global_disparity: float
    local_disparity: float
    unique: float
    redundant: float
    masked: float
    pid_status: str  # cvxpy status, "closed-form", "skipped" or "failed: ..."
    group: dict[str, float] = field(default_factory=dict)
    clients: dict[str, float] = field(default_factory=dict)

    @property
    def pid_solved(self) -> bool:
        return not math.isnan(self.unique)

    def metrics(self, with_pid: bool = True) -> dict[str, float]:
        """Server-level metrics under their record names."""
        out = {GLOBAL_DISPARITY: self.global_disparity, LOCAL_DISPARITY: self.local_disparity}
        if with_pid:
            out |= {UNIQUE: self.unique, REDUNDANT: self.redundant, MASKED: self.masked}
            out[PID_SOLVED] = float(self.pid_solved)
        return out | self.group | self.clients


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


def client_accuracy_spread(counts: NDArray) -> dict[str, float]:
    """Worst client accuracy and the spread of client accuracies (q-FFL's measures).

    Parameters
    ----------
    counts : numpy.ndarray
        Pooled counts ``[s, z, y, yhat]``; clients with no samples are left out.

    Returns
    -------
    dict of str to float
        ``worst-client-accuracy`` (min), ``client-accuracy-spread`` (max − min) and
        ``client-accuracy-std`` (population standard deviation), every client weighing
        the same; empty when no client has samples.
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=(1, 2, 3))
    classes = min(counts.shape[2:])
    correct = np.trace(counts[:, :, :classes, :classes], axis1=2, axis2=3).sum(axis=1)
    acc = correct[totals > 0] / totals[totals > 0]
    if acc.size == 0:
        return {}
    return {
        WORST_CLIENT_ACCURACY: float(acc.min()),
        CLIENT_ACCURACY_SPREAD: float(acc.max() - acc.min()),
        CLIENT_ACCURACY_STD: float(acc.std()),
    }


def round_fairness(
    counts: NDArray, *, pid: bool = True, group_names: Sequence[str] | None = None
) -> RoundFairness:
    """Disparities, PID, group metrics and client accuracy spread of ``[s, z, y, yhat]``.

    Parameters
    ----------
    counts : numpy.ndarray
        Non-negative counts with a positive total; ``s`` indexes clients, so the
        client weights P(S=k) are the clients' sample shares.
    pid : bool, default True
        Decompose I(Z;Ŷ,S) into unique, redundant and masked disparity.
    group_names : sequence of str, optional
        Name of each group ``z`` in the per-group metric names (default its index).

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
    group = fm.table_metrics(counts.sum(axis=0), group_names)
    spread = client_accuracy_spread(counts)
    nan = math.nan
    if joint.shape[0] == 1:  # no sensitive attribute: nothing to disclose
        return RoundFairness(0.0, 0.0, 0.0, 0.0, 0.0, CLOSED_FORM, group, spread)
    global_bits = mutual_information(joint.sum(axis=2))
    local_bits = conditional_mutual_information(joint)
    if not pid:
        return RoundFairness(global_bits, local_bits, nan, nan, nan, "skipped", group, spread)
    try:
        res = decompose(joint)
    except SolverError as exc:
        status = f"failed: {exc}"
        return RoundFairness(global_bits, local_bits, nan, nan, nan, status, group, spread)
    return RoundFairness(
        res.global_disparity,
        res.local_disparity,
        res.unique,
        res.redundant,
        res.masked,
        res.status,
        group,
        spread,
    )
