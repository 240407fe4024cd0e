"""FairFed as a Flower strategy: FedAvg with fairness-aware aggregation weights.

Ezzeldin et al., "FairFed: Enabling Group Fairness in Federated Learning", AAAI 2023.
The maths lives in :mod:`fedsim.strategies.fairfed_weights`; this module is the Flower
glue. The weights are updated from the count tables ``[z, y, yhat]`` the clients already
send in their evaluate replies (only counts leave clients), so the aggregation of round
``t`` uses the tables of the evaluation of round ``t − 1``, i.e. of the global model
the clients start round ``t`` from -- the model Algorithm 1 measures. Round 1 (no
evaluation yet) aggregates as FedAvg. Unlike the paper, the local metrics come from
each client's *test* split (the rows fedsim evaluates), not its training rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from numpy.typing import NDArray

from fedsim.clients import keys
from fedsim.errors import ConfigError, DataError
from fedsim.strategies.fairfed_weights import METRICS, fairfed_deltas, update_weights
from fedsim.strategies.fairness_accounting import read_client_table

__all__ = ["FairFed"]

logger = logging.getLogger(__name__)


class FairFed(FedAvg):
    """FedAvg whose client weights follow FairFed's fairness-gap update.

    Parameters
    ----------
    beta : float (default: 1.0)
        Step size β ≥ 0 of the weight update; 0 is FedAvg.
    metric : {"demographic-parity", "equal-opportunity", "equalized-odds"}
        The group-fairness metric whose local-vs-global gap drives the weights (see
        :mod:`fedsim.strategies.fairfed_weights`).
    **FedAvg options
        ``fraction_train`` … ``evaluate_metrics_aggr_fn`` as in Flower's FedAvg.

    Attributes
    ----------
    partition_ids, weights : numpy.ndarray
        Every client seen in training and its current (unnormalised, in examples)
        aggregation weight ω_k; a client starts at its ``num-examples`` n_k.

    Notes
    -----
    Each round's aggregation uses the weights of the replying clients, normalised over
    them. An update touches the clients that have a weight and a usable count table
    in that evaluation (Δ's mean is over those); it keeps their total weight, so with
    full participation it is the paper's update on ω = n_k/n. The aggregated training
    metrics stay weighted by ``num-examples``; the evaluate MetricRecord adds
    ``fairfed-max-share`` and ``fairfed-min-share`` (the extreme normalised weights).
    """

    def __init__(
        self,
        *,
        beta: float = 1.0,
        metric: str = "demographic-parity",
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
    ) -> None:
        if isinstance(beta, bool) or not (isinstance(beta, int | float) and math.isfinite(beta)):
            raise ConfigError(f"FairFed beta must be a finite number >= 0, got {beta!r}")
        if beta < 0:
            raise ConfigError(f"FairFed beta must be >= 0, got {beta!r}")
        if metric not in METRICS:
            raise ConfigError(f"FairFed metric must be one of {', '.join(METRICS)}, got {metric!r}")
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.beta = float(beta)
        self.metric = metric
        self.partition_ids: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.weights: NDArray[np.float64] = np.zeros(0, dtype=np.float64)

    def summary(self) -> None:
        """Log FedAvg's summary and the FairFed options."""
        super().summary()
        logger.info("FairFed: beta=%s metric=%s", self.beta, self.metric)

    # ------------------------------------------------------------------ hooks

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's aggregation with each reply weighted by its client's ω_k."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [msg.content for msg in valid]
        reweighted = []
        for msg in valid:
            metrics = next(iter(msg.content.metric_records.values()))
            n_k = metrics[self.weighted_by_key]
            weight = self._weight_of(_partition_id(msg), n_k)  # type: ignore[arg-type]
            reweighted.append(_with_weight(msg.content, self.weighted_by_key, weight))
        arrays = aggregate_arrayrecords(reweighted, self.weighted_by_key)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """FedAvg's metrics; the count tables update the weights for the next round."""
        replies = list(replies)
        aggregated = super().aggregate_evaluate(server_round, replies)
        self._update(server_round, replies)
        if len(self.weights) == 0:
            return aggregated
        out = MetricRecord(dict(aggregated) if aggregated is not None else {})
        shares = self.weights / self.weights.sum()
        out["fairfed-max-share"] = float(shares.max())
        out["fairfed-min-share"] = float(shares.min())
        return out

    # ------------------------------------------------------------------ weights

    def _weight_of(self, pid: int, n_k: float) -> float:
        """ω_k of a client; a client seen for the first time starts at n_k."""
        hit = np.flatnonzero(self.partition_ids == pid)
        if hit.size:
            return float(self.weights[hit[0]])
        self.partition_ids = np.append(self.partition_ids, np.int64(pid))
        self.weights = np.append(self.weights, n_k)
        return n_k

    def _update(self, server_round: int, replies: list[Message]) -> None:
        tables = [t for t in map(read_client_table, replies) if t is not None]
        tables = [t for t in tables if t.partition_id in set(self.partition_ids.tolist())]
        if tables:
            shape = tables[0].counts.shape
            tables = [t for t in tables if t.counts.shape == shape]
        if self.beta == 0 or not tables:
            return
        index = [int(np.flatnonzero(self.partition_ids == t.partition_id)[0]) for t in tables]
        deltas = fairfed_deltas(np.stack([t.counts for t in tables]), self.metric)
        self.weights[index] = update_weights(self.weights[index], deltas, self.beta)
        logger.debug("FairFed round %d: deltas %s, weights %s", server_round, deltas, self.weights)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, NDArray]:
        """``{"partition-ids": int64 [k], "weights": float64 [k]}`` (``np.savez``-ready)."""
        return {"partition-ids": self.partition_ids.copy(), "weights": self.weights.copy()}

    def load_state(self, state: Mapping[str, NDArray]) -> None:
        """Restore the weights written by :meth:`state`.

        Raises
        ------
        DataError
            If keys are missing or extra, or the arrays disagree in length or hold
            negative or non-finite weights.
        """
        if set(state) != {"partition-ids", "weights"}:
            raise DataError(
                f"FairFed state needs exactly 'partition-ids' and 'weights', got {sorted(state)}"
            )
        ids = np.asarray(state["partition-ids"], dtype=np.int64).ravel()
        weights = np.asarray(state["weights"], dtype=np.float64).ravel()
        if ids.shape != weights.shape or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise DataError(
                "FairFed state: one finite, non-negative weight per partition id is needed "
                f"(got {ids.size} ids and weights {weights.tolist()})"
            )
        self.partition_ids, self.weights = ids, weights


def _partition_id(msg: Message) -> int:
    metrics = next(iter(msg.content.metric_records.values()))
    return int(metrics.get(keys.PARTITION_ID, msg.metadata.src_node_id))  # type: ignore[arg-type]


def _with_weight(content: RecordDict, key: str, weight: float) -> RecordDict:
    """A shallow copy of a reply whose (only) MetricRecord has ``key`` = ``weight``."""
    out = RecordDict()
    for name, record in content.items():
        if isinstance(record, MetricRecord):
            record = MetricRecord({**dict(record), key: weight})
        out[name] = record
    return out
