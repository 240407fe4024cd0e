"""Screening wrapper: failed or unusable client replies are counted, never aggregated.

:class:`Screened` wraps any Flower strategy (composition: the inner strategy's round
loop, sampling and aggregation are untouched). Before aggregation it drops replies
that carry an error, that hold non-finite arrays, or whose arrays do not match the
keys and shapes of the model that was sent (the rules are
:func:`fedsim.strategies.screening_rules.reply_problem`'s, shared with FedLD), and
records how many it dropped. With no usable reply the round keeps the current model
and says so. An aggregate that is not finite (a server optimiser that overflows, say)
is not applied either: the previous model is kept and the round counts one
``nonfinite-aggregate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsim.strategies.records import RecordView, all_finite, array_signature, records_of
from fedsim.strategies.screening_rules import NONFINITE as NONFINITE_RULE
from fedsim.strategies.screening_rules import reply_problem
from fedsim.strategies.wrapper import StrategyWrapper

log = logging.getLogger(__name__)

FAILED = "failed-replies"
NONFINITE = "nonfinite-replies"
MALFORMED = "malformed-replies"
USABLE = "usable-replies"
MODEL_KEPT = "model-kept"
NONFINITE_AGGREGATE = "nonfinite-aggregate"


@dataclass
class RoundRecord:
    """What happened in one phase ("train" or "evaluate") of one round."""

    server_round: int
    phase: str
    counts: dict[str, int] = field(default_factory=dict)
    aggregated: MetricRecord | None = None
    replies: list[Message] = field(default_factory=list)  # usable replies


class Screened(StrategyWrapper):
    """Drop and count unusable replies, then delegate to ``inner``.

    Parameters
    ----------
    inner
        Any Flower message-API strategy.
    on_phase
        Called with a :class:`RoundRecord` after every aggregation (the engine uses it
        to record per-client metrics and progress).
    """

    def __init__(self, inner: Strategy, on_phase: Callable[[RoundRecord], None] | None = None):
        super().__init__(inner)
        self.on_phase = on_phase or (lambda record: None)
        self._sent: dict[str, tuple[int, ...]] = {}
        self._warned_nonfinite = False

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = array_signature(arrays)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        usable, counts = self._screen(list(replies), train=True)
        arrays, metrics = (None, None)
        if usable:
            arrays, metrics = self.inner.aggregate_train(server_round, usable)
        counts[NONFINITE_AGGREGATE] = int(arrays is not None and not all_finite(arrays))
        if counts[NONFINITE_AGGREGATE]:  # e.g. a server learning rate that overflows
            arrays = None
            if not self._warned_nonfinite:
                self._warned_nonfinite = True
                log.warning(
                    "round %d: the aggregated model holds NaN or Inf; the previous model is "
                    "kept (counted as train-%s every round it happens; logged once)",
                    server_round,
                    NONFINITE_AGGREGATE,
                )
        elif arrays is None:
            log.warning("round %d: no usable train reply; the global model is kept", server_round)
        counts[MODEL_KEPT] = int(arrays is None)
        metrics = _with_counts(metrics, counts)
        self.on_phase(RoundRecord(server_round, "train", counts, metrics, usable))
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        usable, counts = self._screen(list(replies), train=False)
        metrics = self.inner.aggregate_evaluate(server_round, usable) if usable else None
        metrics = _with_counts(metrics, counts)
        self.on_phase(RoundRecord(server_round, "evaluate", counts, metrics, usable))
        return metrics

    def _screen(self, replies: list[Message], train: bool) -> tuple[list[Message], dict[str, int]]:
        counts = {FAILED: 0, NONFINITE: 0, MALFORMED: 0}
        usable = []
        for msg in replies:
            if msg.has_error():
                counts[FAILED] += 1
                continue
            array_records = records_of(msg.content, ArrayRecord)
            problem = reply_problem(
                len(array_records),
                records_of(msg.content, MetricRecord),
                RecordView(array_records[0]) if len(array_records) == 1 else None,
                self._sent if train else None,
            )
            if problem is None:
                usable.append(msg)
            else:
                counts[NONFINITE if problem.kind == NONFINITE_RULE else MALFORMED] += 1
        counts[USABLE] = len(usable)
        dropped = len(replies) - len(usable)
        if dropped:
            log.info("round screening dropped %d of %d replies: %s", dropped, len(replies), counts)
        return usable, counts


def _with_counts(metrics: MetricRecord | None, counts: dict[str, int]) -> MetricRecord:
    out = MetricRecord(dict(metrics) if metrics is not None else {})
    for key, value in counts.items():
        out[key] = value
    return out
