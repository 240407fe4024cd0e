"""FedLD as a Flower strategy: FedAvg with principal-gradient aggregation.

Zeng et al., "Tackling Data Heterogeneity in Federated Learning via Loss
Decomposition", MICCAI 2024. The maths (principal gradients, fallbacks for warm-up
rounds, single clients and statistics buffers) lives in :mod:`fedsim.strategies.principal`;
this module is the Flower glue: it remembers the arrays sent each round, screens the
replies and hands their arrays to :func:`fedsim.strategies.principal.aggregate_principal`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from numpy.typing import NDArray

from fedsim.errors import AggregationError, CheckpointError, ConfigError
from fedsim.strategies.principal import DEFAULT_MEAN_ONLY, aggregate_principal
from fedsim.strategies.records import RecordView
from fedsim.strategies.screening_rules import reply_problem

__all__ = ["FedLD"]

logger = logging.getLogger(__name__)


def _name_patterns(mean_only: Iterable[str]) -> tuple[str, ...]:
    """``mean_only`` as a tuple of strings (parameter-name substrings)."""
    if isinstance(mean_only, str) or not all(isinstance(p, str) for p in mean_only):
        raise ConfigError(
            "FedLD mean_only must be a list of parameter-name substrings such as "
            f'["running_mean", "running_var"], got {mean_only!r}'
        )
    return tuple(mean_only)


def _check_options(keep_ratio: float, server_lr: float, weighting: str, warmup_rounds: int) -> None:
    if not 0.0 < keep_ratio <= 1.0:
        raise ConfigError(f"FedLD keep_ratio must lie in (0, 1], got {keep_ratio!r}")
    if not (math.isfinite(server_lr) and server_lr > 0.0):
        raise ConfigError(f"FedLD server_lr must be a positive number, got {server_lr!r}")
    if weighting not in ("equal", "num-examples"):
        raise ConfigError(f"FedLD weighting must be 'equal' or 'num-examples', got {weighting!r}")
    if isinstance(warmup_rounds, bool) or not isinstance(warmup_rounds, int) or warmup_rounds < 0:
        raise ConfigError(f"FedLD warmup_rounds must be an integer >= 0, got {warmup_rounds!r}")


class FedLD(FedAvg):
    """FedAvg with FedLD's principal-gradient aggregation.

    The maths lives in :mod:`fedsim.strategies.principal`.

    Parameters
    ----------
    keep_ratio : float (default: 0.8)
        ρ in (0, 1]: fraction of principal directions kept, at least one.
    server_lr : float (default: 1.0)
        Server learning rate applied to the aggregated parameter update.
    weighting : {"equal", "num-examples"} (default: "equal")
        Client weights of the average: equal (authors' code) or ``weighted_by_key``.
    warmup_rounds : int (default: 1)
        Rounds ``≤ warmup_rounds`` take the plain weighted mean (authors: 1).
    mean_only : iterable of str (default: ``DEFAULT_MEAN_ONLY``)
        Key substrings of float buffers that always take the plain weighted mean.
    **FedAvg options
        ``fraction_train`` … ``evaluate_metrics_aggr_fn`` as in Flower's FedAvg.

    Notes
    -----
    ``configure_train`` remembers the arrays it sends; ``aggregate_train`` needs them to
    form deltas, so whichever clients reply in a round (partial participation) are
    compared with the model they were sent. Before FedAvg's reply checks, a reply is
    dropped, logged and counted if its arrays hold NaN/Inf, its keys or shapes differ
    from the global arrays', or its ``weighted_by_key`` metric (needed by the metrics
    average even with equal weighting) is missing or not positive. Error replies are
    left to FedAvg's logging and not counted. The returned MetricRecord adds
    ``fedld-dropped`` and ``fedld-usable``; with no usable reply the arrays are None
    and the round keeps the current model. With ``weighting="num-examples"`` a
    warm-up round returns exactly FedAvg's arrays. Reply arrays are read as zero-copy
    views of their ``.npy`` bytes (``Array.numpy()`` otherwise).
    """

    def __init__(
        self,
        *,
        keep_ratio: float = 0.8,
        server_lr: float = 1.0,
        weighting: Literal["equal", "num-examples"] = "equal",
        warmup_rounds: int = 1,
        mean_only: Iterable[str] = DEFAULT_MEAN_ONLY,
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
        _check_options(keep_ratio, server_lr, weighting, warmup_rounds)
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
        self.keep_ratio = keep_ratio
        self.server_lr = server_lr
        self.weighting = weighting
        self.warmup_rounds = warmup_rounds
        self.mean_only = _name_patterns(mean_only)
        self._sent: tuple[int, ArrayRecord] | None = None

    def summary(self) -> None:
        """Log FedAvg's summary and the FedLD options."""
        super().summary()
        logger.info(
            "FedLD: keep_ratio=%s server_lr=%s weighting=%s warmup_rounds=%d mean_only=%s",
            self.keep_ratio,
            self.server_lr,
            self.weighting,
            self.warmup_rounds,
            self.mean_only,
        )

    def state(self) -> dict[str, NDArray[Any]]:
        """FedLD keeps nothing across rounds (``_sent`` is set anew by every configure)."""
        return {}

    def load_state(self, state: Mapping[str, NDArray[Any]]) -> None:
        """Accept only the empty state :meth:`state` writes.

        Raises
        ------
        CheckpointError
            If ``state`` names anything.
        """
        if state:
            raise CheckpointError(
                f"strategy state: FedLD keeps no state, got {', '.join(sorted(state))}"
            )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays of this round, then configure as FedAvg."""
        self._sent = (server_round, arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop unusable replies, then aggregate the rest with FedLD."""
        if self._sent is None or self._sent[0] != server_round:
            raise AggregationError(
                f"FedLD.aggregate_train(round {server_round}) needs the arrays sent by "
                "configure_train for that round; call configure_train first"
            )
        current = dict(RecordView(self._sent[1]))
        kept, dropped = self._screen(replies, current)
        valid, _ = self._check_and_log_replies(kept, is_train=True)
        if not valid:
            logger.warning(
                "FedLD: no usable reply in round %d (%d dropped); keeping the current model",
                server_round,
                dropped,
            )
            return None, MetricRecord({"fedld-dropped": dropped, "fedld-usable": 0})
        contents = [msg.content for msg in valid]
        aggregated = aggregate_principal(
            current,
            [RecordView(next(iter(c.array_records.values()))) for c in contents],
            self._weights(contents),
            keep_ratio=self.keep_ratio,
            server_lr=self.server_lr,
            mean_only=self.mean_only,
            principal=server_round > self.warmup_rounds,
        )
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) or MetricRecord()
        metrics["fedld-dropped"] = dropped
        metrics["fedld-usable"] = len(valid)
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in aggregated.items()})
        return arrays, metrics

    def _screen(
        self, replies: Iterable[Message], current: Mapping[str, NDArray[Any]]
    ) -> tuple[list[Message], int]:
        """Keep error replies (FedAvg logs them) and usable ones; count the rest."""
        kept: list[Message] = []
        dropped = 0
        expected = {key: tuple(array.shape) for key, array in current.items()}
        for msg in replies:
            problem = None
            if not msg.has_error():
                content = msg.content
                records = list(content.array_records.values())
                problem = reply_problem(
                    len(records),
                    list(content.metric_records.values()),
                    RecordView(records[0]) if len(records) == 1 else None,
                    expected,
                    weight_key=self.weighted_by_key,
                )
            if problem is None:
                kept.append(msg)
            else:
                dropped += 1
                node = msg.metadata.src_node_id
                logger.warning("FedLD: dropped reply from node %d: %s", node, problem.reason)
        return kept, dropped

    def _weights(self, contents: list[RecordDict]) -> list[float] | None:
        if self.weighting == "equal":
            return None
        metrics = [next(iter(c.metric_records.values())) for c in contents]
        return [float(m[self.weighted_by_key]) for m in metrics]  # type: ignore[arg-type]
