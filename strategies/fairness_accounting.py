"""Fairness accounting: per-round global/local disparity and its PID, around any strategy.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated
Learning Using Partial Information Decomposition" (ICLR 2024). Every evaluate reply
carries the client's count table ``[z, y, yhat]`` of its test split (only counts
leave a client, never samples). :class:`FairnessAccounting` wraps an inner Flower
strategy (composition: its sampling, aggregation and round loop are untouched),
pools the tables into ``counts[s, z, y, yhat]`` (``s``: the clients of the round in
partition-id order, so that P(S=k) = n_k / n) and reports, per round,

* global disparity I(Z;Ŷ) and local disparity I(Z;Ŷ|S), in bits;
* their decomposition Uni/Red/Syn (:func:`fairness.pid.decompose`);
* statistical-parity and equalized-odds differences and per-group accuracy of the
  pooled table;

and, per client, its own I(Z;Ŷ), SPD, EOD and group accuracies. The maths lives in
the pure functions :func:`pool_counts`, :func:`round_fairness` and
:func:`client_fairness`; the class is the Flower glue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from flwr.app import Message, MetricRecord
from flwr.serverapp.strategy import Strategy
from numpy.typing import NDArray

from clients import keys
from fairness.information import conditional_mutual_information, mutual_information
from fairness.metrics import (
    equalized_odds_difference,
    group_accuracy,
    statistical_parity_difference,
)
from fairness.pid import CLOSED_FORM, decompose
from fedsim.errors import DataError, SolverError
from strategies.wrapper import StrategyWrapper

__all__ = [
    "ClientTable",
    "FairnessAccounting",
    "MetricSink",
    "RoundFairness",
    "client_fairness",
    "pool_counts",
    "read_client_table",
    "round_fairness",
]

log = logging.getLogger(__name__)

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


class MetricSink(Protocol):
    """Where per-client rows go (fedsim's ``RunRecorder``)."""

    def add(self, server_round: int, client: str, metric: str, value: float) -> None: ...


# ------------------------------------------------------------------------------ maths


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
        res.global_disparity, res.local_disparity, res.unique, res.redundant, res.masked,
        res.status, spd, eod, accs,
    )  # fmt: skip


def client_fairness(counts: NDArray) -> list[dict[str, float]]:
    """Each client's own disparity I(Z;Ŷ) in bits, SPD, EOD and group accuracies.

    The same quantities as :mod:`fairness.information` and :mod:`fairness.metrics`
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

    As :mod:`fairness.metrics` defines it: groups without samples are skipped, so
    fewer than two groups with samples give 0.
    """
    totals = counts.sum(axis=2)
    present = totals > 0
    rates = counts / np.where(present, totals, 1.0)[:, :, None]
    high = np.where(present[:, :, None], rates, -np.inf).max(axis=1)
    low = np.where(present[:, :, None], rates, np.inf).min(axis=1)
    return (high - low).max(axis=1, initial=0.0, where=np.isfinite(high))


# ----------------------------------------------------------------------- Flower glue


@dataclass(frozen=True)
class ClientTable:
    """One usable evaluate reply: the client's partition id and its counts."""

    partition_id: int
    counts: NDArray[np.int64]  # [z, y, yhat]


def read_client_table(msg: Message) -> ClientTable | None:
    """The count table of an evaluate reply, or None when it has no usable one.

    A reply is unusable when it carries an error, lacks ``fair-counts``,
    ``num-groups`` or ``num-classes``, holds counts of the wrong length or invalid
    values, or has no test samples. ``partition-id`` falls back to the sender's node
    id, as the engine's recorder does.
    """
    if msg.has_error() or not msg.content.metric_records:
        return None
    metrics = next(iter(msg.content.metric_records.values()))
    if not all(k in metrics for k in (keys.FAIR_COUNTS, keys.NUM_GROUPS, keys.NUM_CLASSES)):
        return None
    groups, classes = _integer(metrics[keys.NUM_GROUPS]), _integer(metrics[keys.NUM_CLASSES])
    flat = np.asarray(metrics[keys.FAIR_COUNTS], dtype=np.float64)
    pid = _integer(metrics.get(keys.PARTITION_ID, msg.metadata.src_node_id))
    if pid is None:
        return None
    if not groups or not classes or flat.size != groups * classes * classes:
        log.warning(
            "client %d: fair-counts holds %d values, expected num-groups x num-classes^2 = "
            "%s x %s^2; client skipped in fairness accounting", pid, flat.size, groups, classes,
        )  # fmt: skip
        return None
    if not np.all(np.isfinite(flat)) or np.any(flat < 0) or np.any(flat != np.round(flat)):
        log.warning("client %d: fair-counts are not non-negative integers; skipped", pid)
        return None
    if flat.sum() == 0:
        return None  # no test samples: nothing to account for
    return ClientTable(pid, flat.astype(np.int64).reshape(groups, classes, classes))


def _integer(value: object) -> int | None:
    """``value`` as an int when it is a whole number, else None."""
    if isinstance(value, int | float) and float(value).is_integer():
        return int(value)
    return None


class FairnessAccounting(StrategyWrapper):
    """Account global and local disparity every round, around any Flower strategy.

    Parameters
    ----------
    inner
        Any Flower message-API strategy; its hooks and summary are called unchanged.
    recorder
        Receives the per-client rows ``(round, str(partition id), metric, value)``
        (names ``disparity``, ``spd``, ``eod``, ``acc-group-<z>``); none are kept
        without it.
    pid
        Decompose the disparities into unique, redundant and masked parts.

    Attributes
    ----------
    counts_history : dict of int to numpy.ndarray
        Pooled counts ``[s, z, y, yhat]`` of every accounted round.
    partition_history : dict of int to list of int
        The partition id of each ``s`` index of ``counts_history[round]``.
    history : dict of int to RoundFairness
        The server-level results of every round accounted in this process.
    seconds : float
        Time spent in the accounting itself (the inner strategy's aggregation not
        included), summed over rounds.
    """

    def __init__(self, inner: Strategy, *, recorder: MetricSink | None = None, pid: bool = True):
        super().__init__(inner)
        self.recorder = recorder
        self.pid = pid
        self.counts_history: dict[int, NDArray[np.int64]] = {}
        self.partition_history: dict[int, list[int]] = {}
        self.history: dict[int, RoundFairness] = {}
        self.seconds = 0.0

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The inner strategy's aggregated metrics plus this round's fairness metrics."""
        replies = list(replies)
        aggregated = self.inner.aggregate_evaluate(server_round, replies)
        start = time.perf_counter()
        try:
            ours = self._account(server_round, replies)
        finally:
            self.seconds += time.perf_counter() - start
        if not ours:
            return aggregated
        out = MetricRecord(dict(aggregated) if aggregated is not None else {})
        for key, value in ours.items():
            out[key] = float(value)
        return out

    def _account(self, server_round: int, replies: list[Message]) -> dict[str, float]:
        tables = [t for t in map(read_client_table, replies) if t is not None]
        tables.sort(key=lambda t: t.partition_id)
        if tables:  # clients whose table shape disagrees with the first cannot be pooled
            shape = tables[0].counts.shape
            odd = [t.partition_id for t in tables if t.counts.shape != shape]
            if odd:
                log.warning(
                    "round %d: clients %s report a table shape other than %s; skipped",
                    server_round, odd, shape,
                )  # fmt: skip
            tables = [t for t in tables if t.counts.shape == shape]
        if not tables:
            log.warning("round %d: no evaluate reply holds fair-counts to account", server_round)
            return {}
        counts = pool_counts(t.counts for t in tables)
        result = round_fairness(counts, pid=self.pid)
        if self.pid and not result.pid_solved:
            log.warning(
                "round %d: PID solve failed (%s); unique/redundant/masked recorded as NaN "
                "and pid-solved = 0", server_round, result.pid_status,
            )  # fmt: skip
        self.counts_history[server_round] = counts
        self.partition_history[server_round] = [t.partition_id for t in tables]
        self.history[server_round] = result
        if self.recorder is not None:
            for t, row in zip(tables, client_fairness(counts), strict=True):
                for name, value in row.items():
                    self.recorder.add(server_round, str(t.partition_id), name, value)
        return result.metrics(with_pid=self.pid)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, NDArray]:
        """The pooled count history as numpy arrays (``np.savez``-ready).

        Keys are ``counts/<round>`` ([s, z, y, yhat]) and ``partition-ids/<round>``.
        """
        out: dict[str, NDArray] = {}
        for r, counts in self.counts_history.items():
            out[f"counts/{r}"] = counts.copy()
            out[f"partition-ids/{r}"] = np.asarray(self.partition_history[r], dtype=np.int64)
        return out

    def load_state(self, state: Mapping[str, NDArray]) -> None:
        """Restore the count history written by :meth:`state`.

        ``history`` keeps only rounds accounted in this process: the PID of old
        rounds is not re-solved here (:func:`round_fairness` recomputes it on demand).

        Raises
        ------
        DataError
            If a key is not one :meth:`state` writes or the arrays disagree.
        """
        counts: dict[int, NDArray[np.int64]] = {}
        ids: dict[int, list[int]] = {}
        for key, value in state.items():
            kind, _, text = key.partition("/")
            if kind not in ("counts", "partition-ids") or not text.isdigit():
                raise DataError(
                    f"fairness-accounting state key {key!r} is not counts/<round> or "
                    "partition-ids/<round>; was the state written by FairnessAccounting.state?"
                )
            if kind == "counts":
                counts[int(text)] = np.asarray(value, dtype=np.int64)
            else:
                ids[int(text)] = [int(i) for i in np.asarray(value).ravel()]
        for r in counts.keys() | ids.keys():
            complete = r in counts and r in ids
            if not complete or counts[r].ndim != 4 or len(ids[r]) != len(counts[r]):
                raise DataError(
                    f"fairness-accounting state for round {r} needs counts/{r} (4-D) and "
                    f"partition-ids/{r} with one id per client"
                )
        self.counts_history = dict(sorted(counts.items()))
        self.partition_history = {r: ids[r] for r in self.counts_history}
