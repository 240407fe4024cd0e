"""Fairness accounting around any Flower strategy: per-round disparity and its PID.

Every evaluate reply carries the client's count table ``[z, y, yhat]`` of its test
split (only counts leave a client, never samples). :class:`FairnessAccounting` wraps
an inner Flower strategy (composition: its sampling, aggregation and round loop are
untouched), pools the usable tables of each round in partition-id order and reports
the round's fairness metrics next to the inner strategy's, and each client's own
metrics through a :class:`MetricSink`. The maths (Hamman & Dutta, ICLR 2024) lives
in :mod:`fedsim.fairness.accounting`; this module is the Flower glue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from flwr.app import Message, MetricRecord
from flwr.serverapp.strategy import Strategy
from numpy.typing import NDArray

from fedsim.clients import keys
from fedsim.errors import DataError
from fedsim.fairness.accounting import RoundFairness, client_fairness, pool_counts, round_fairness
from fedsim.fairness.client_metrics import RESAMPLES
from fedsim.seeds import Stream
from fedsim.strategies.records import records_of
from fedsim.strategies.wrapper import StrategyWrapper

__all__ = [
    "ClientTable",
    "FairnessAccounting",
    "MetricSink",
    "read_client_table",
]

log = logging.getLogger(__name__)


class MetricSink(Protocol):
    """Where per-client rows go (fedsim's ``RunRecorder``)."""

    def add(self, server_round: int, client: str, metric: str, value: float) -> None: ...


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
    found = [] if msg.has_error() else records_of(msg.content, MetricRecord)
    if not found:
        return None
    metrics = found[0]
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
            "%s x %s^2; client skipped in fairness accounting",
            pid,
            flat.size,
            groups,
            classes,
        )
        return None
    raw = metrics[keys.FAIR_COUNTS]
    whole = isinstance(raw, list) and all(type(v) is int and v >= 0 for v in raw)  # the usual
    if not whole and (
        not np.all(np.isfinite(flat)) or np.any(flat < 0) or np.any(flat != np.round(flat))
    ):
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
        (:func:`fedsim.fairness.client_metrics.client_fairness`: ``disparity``,
        fairlearn's differences and ratios, ``accuracy-<group>``, ``selection_rate-<group>``
        ..., and bootstrap intervals); none are kept without it.
    pid
        Decompose the disparities into unique, redundant and masked parts.
    group_names
        The sensitive groups' names (``RawDataset.group_names``), used in the per-group
        metric names (``selection_rate-Female``); default the group index.
    seed
        The scenario seed: each round's bootstrap resamples are drawn from
        ``(seed, Stream.BOOTSTRAP, round)``.

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

    def __init__(
        self,
        inner: Strategy,
        *,
        recorder: MetricSink | None = None,
        pid: bool = True,
        group_names: Sequence[str] | None = None,
        seed: int = 0,
        bootstrap: int = RESAMPLES,
    ):
        super().__init__(inner)
        self.recorder = recorder
        self.pid = pid
        self.group_names = tuple(group_names) if group_names is not None else None
        self.seed = seed
        self.bootstrap = bootstrap
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
                    server_round,
                    odd,
                    shape,
                )
            tables = [t for t in tables if t.counts.shape == shape]
        if not tables:
            log.warning("round %d: no evaluate reply holds fair-counts to account", server_round)
            return {}
        counts = pool_counts(t.counts for t in tables)
        names = self.group_names
        if names is not None and len(names) != counts.shape[1]:
            log.warning("group names %s do not fit %d groups; indices used", names, counts.shape[1])
            names = None
        result = round_fairness(counts, pid=self.pid, group_names=names)
        if self.pid and not result.pid_solved:
            log.warning(
                "round %d: PID solve failed (%s); unique/redundant/masked recorded as NaN "
                "and pid-solved = 0",
                server_round,
                result.pid_status,
            )
        self.counts_history[server_round] = counts
        self.partition_history[server_round] = [t.partition_id for t in tables]
        self.history[server_round] = result
        if self.recorder is not None:
            rng = None
            if self.bootstrap > 0:
                rng = np.random.default_rng([self.seed, Stream.BOOTSTRAP, server_round])
            rows = client_fairness(counts, names, rng=rng, resamples=max(self.bootstrap, 1))
            for t, row in zip(tables, rows, strict=True):
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
            value = np.asarray(value)
            whole = value.dtype.kind in "iu" or (
                value.dtype.kind == "f" and bool(np.all(np.isfinite(value) & (value % 1 == 0)))
            )
            if not whole or (value.size and value.min() < 0):
                raise DataError(
                    f"fairness-accounting state {key!r} must hold non-negative whole numbers"
                )
            if kind == "counts":
                counts[int(text)] = value.astype(np.int64)
            else:
                ids[int(text)] = [int(i) for i in value.ravel()]
        for r in counts.keys() | ids.keys():
            complete = r in counts and r in ids
            if not complete or counts[r].ndim != 4 or len(ids[r]) != len(counts[r]):
                raise DataError(
                    f"fairness-accounting state for round {r} needs counts/{r} (4-D) and "
                    f"partition-ids/{r} with one id per client"
                )
        self.counts_history = dict(sorted(counts.items()))
        self.partition_history = {r: ids[r] for r in self.counts_history}
