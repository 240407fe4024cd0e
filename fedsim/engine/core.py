"""The round loop every engine shares: Flower's ``Strategy.start`` over some ``Grid``.

Engines differ only in the Grid they hand over (in process, a Ray actor pool, or
Flower's own runtime grid inside the ServerApp). This module builds the strategy
stack from the scenario, runs it, and collects what happened into long-form rows
``(round, client, metric, value)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsim.clients import keys
from fedsim.clients.models import scenario_model
from fedsim.config import Scenario
from fedsim.data import FederatedData
from fedsim.engine.deadline import Deadline, FailedReply
from fedsim.engine.global_eval import global_evaluator
from fedsim.strategies.records import records_of
from fedsim.strategies.registry import build_strategy
from fedsim.strategies.screening import RoundRecord, Screened
from fedsim.strategies.wrapper import StrategyWrapper

log = logging.getLogger(__name__)

Row = tuple[int, str, str, float]
RoundHook = Callable[[int, ArrayRecord, "RunRecorder"], None]


@dataclass
class RunRecorder:
    """Collects per-round metrics as long-form rows."""

    rows: list[Row] = field(default_factory=list)
    _latest: dict[str, float] = field(default_factory=dict, repr=False)
    _scanned: int = field(default=0, repr=False)

    def on_phase(self, record: RoundRecord) -> None:
        r, phase = record.server_round, record.phase
        prefix = "train-" if phase == "train" else "eval-"
        for key, value in (record.aggregated or {}).items():
            if isinstance(value, int | float):
                name = f"{prefix}{key}" if key in record.counts else key
                self.rows.append((r, "server", name, float(value)))
        for msg in record.replies:
            metrics = records_of(msg.content, MetricRecord)[0]
            client = str(metrics.get(keys.PARTITION_ID, msg.metadata.src_node_id))
            for key, value in metrics.items():
                if key not in keys.PER_CLIENT and isinstance(value, int | float):
                    name = keys.NUM_EXAMPLES + f"-{phase}" if key == keys.NUM_EXAMPLES else key
                    self.rows.append((r, client, name, float(value)))

    def add(self, server_round: int, client: str, metric: str, value: float) -> None:
        self.rows.append((server_round, client, metric, float(value)))

    def latest(self) -> dict[str, float]:
        """The newest server-level value of every metric.

        Only rows added since the last call are scanned, so a progress bar costs
        O(new rows) per round rather than O(all rows so far).
        """
        for _, client, metric, value in self.rows[self._scanned :]:
            if client == "server":
                self._latest[metric] = value
        self._scanned = len(self.rows)
        return dict(self._latest)


def initial_arrays(scenario: Scenario, data: FederatedData) -> ArrayRecord:
    """The global model's starting weights, drawn from the scenario seed."""
    model = scenario_model(scenario, data.raw.input_shape, data.raw.num_classes)
    return ArrayRecord(model.state_dict())


def build_stack(
    scenario: Scenario, data: FederatedData, recorder: RunRecorder
) -> tuple[Screened, Strategy]:
    """The scenario's strategy, wrapped for fairness accounting and reply screening."""
    inner = build_strategy(scenario.strategy, data.num_clients, scenario.client.lr)
    core: Strategy = inner
    if scenario.fairness.enabled:
        from fedsim.strategies.fairness_accounting import FairnessAccounting  # cvxpy: start-up

        core = FairnessAccounting(
            inner,
            recorder=recorder,
            pid=scenario.fairness.pid,
            group_names=data.raw.group_names,
            seed=scenario.seed,
            bootstrap=scenario.fairness.client_bootstrap,
        )
    return Screened(core, on_phase=recorder.on_phase), inner


@dataclass
class Execution:
    """Outcome of :func:`execute`."""

    arrays: ArrayRecord
    recorder: RunRecorder
    wall_time: float
    strategy: Strategy
    round_times: list[float] = field(default_factory=list)  # seconds per round, as run
    failed: list[FailedReply] = field(default_factory=list)  # replies that failed, by node


def execute(
    scenario: Scenario,
    data: FederatedData,
    grid: Grid,
    *,
    start_round: int = 0,
    arrays: ArrayRecord | None = None,
    recorder: RunRecorder | None = None,
    stack: tuple[Screened, Strategy] | None = None,
    on_round: RoundHook | None = None,
) -> Execution:
    """Run ``scenario.rounds − start_round`` rounds of the strategy over ``grid``.

    Each phase of a round waits at most ``scenario.round_timeout`` seconds for its
    replies; a node that sent none counts as a failed reply (:mod:`.deadline`).

    ``on_round(round, arrays, recorder)`` runs after every round (progress bars,
    checkpoints). Flower's node sampling uses Python's global ``random`` module, so a
    fresh run seeds it here from the scenario seed.
    """
    recorder = recorder or RunRecorder()
    outer, inner = stack or build_stack(scenario, data, recorder)
    arrays = arrays if arrays is not None else initial_arrays(scenario, data)
    if start_round == 0:  # a resumed run has restored the checkpointed state instead
        random.seed(scenario.seed)
    t0 = time.perf_counter()

    round_times: list[float] = []
    last = [t0]
    global_eval = global_evaluator(scenario, data)

    def after_round(server_round: int, current: ArrayRecord) -> MetricRecord | None:
        if server_round > 0:
            if global_eval is not None:  # server-side, on the held-out global test set
                for name, value in global_eval(current).items():
                    recorder.add(start_round + server_round, "server", name, value)
            now = time.perf_counter()
            round_times.append(now - last[0])
            last[0] = now
            if on_round is not None:
                on_round(start_round + server_round, current, recorder)
                last[0] = time.perf_counter()  # hooks (checkpoints, progress) are not rounds
        return None

    deadline = Deadline(outer, scenario.round_timeout)  # missing replies count as failed
    offset = _RoundOffset(deadline, start_round)
    with flower_log_level():
        result = offset.start(
            grid=grid,
            initial_arrays=arrays,
            num_rounds=scenario.rounds - start_round,
            timeout=scenario.round_timeout,
            train_config=ConfigRecord(),
            evaluate_fn=after_round,
        )
    final = result.arrays if result.arrays is not None and len(result.arrays) else arrays
    wall = time.perf_counter() - t0
    return Execution(final, recorder, wall, inner, round_times, deadline.failed)


@contextlib.contextmanager
def flower_log_level() -> Iterator[None]:
    """Flower logs every message at INFO; fedsim reports rounds itself.

    ``FEDSIM_FLOWER_LOG=INFO`` (or any level name) shows Flower's own log again.
    """
    logger = logging.getLogger("flwr")
    saved = logger.level
    logger.setLevel(os.environ.get("FEDSIM_FLOWER_LOG", "WARNING").upper())
    try:
        yield
    finally:
        logger.setLevel(saved)


class _RoundOffset(StrategyWrapper):
    """Shift round numbers by ``offset`` so that a resumed run continues its count."""

    def __init__(self, inner: Strategy, offset: int) -> None:
        super().__init__(inner)
        self.offset = offset

    def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        return self.inner.configure_train(server_round + self.offset, arrays, config, grid)

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        return self.inner.aggregate_train(server_round + self.offset, replies)

    def configure_evaluate(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        return self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):  # type: ignore[no-untyped-def]
        return self.inner.aggregate_evaluate(server_round + self.offset, replies)
