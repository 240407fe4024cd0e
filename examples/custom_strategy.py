"""A strategy of your own: a Flower message-API ``FedAvg`` subclass with an option.

``ClippedFedAvg`` averages the clients' models as FedAvg does, then shortens the
server's update (new global model minus old) to at most ``max_update_norm`` in L2
norm, a guard against rounds that move the model too far. It records the update's
norm before clipping (``update-norm``) and the factor applied (``update-scale``) as
server metrics. The scenario selects it by reference, ``strategy.name =
"custom_strategy:ClippedFedAvg"``, and ``[strategy.options]`` are checked against
its constructor's signature.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


def clip_update(
    old: dict[str, np.ndarray], new: dict[str, np.ndarray], max_norm: float
) -> tuple[dict[str, np.ndarray], float, float]:
    """``old + scale · (new − old)`` with ``scale = min(1, max_norm / ‖new − old‖₂)``."""
    norm = float(np.sqrt(sum(np.sum((new[k] - old[k]) ** 2) for k in old)))
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    clipped = {k: (old[k] + scale * (new[k] - old[k])).astype(new[k].dtype) for k in old}
    return clipped, norm, scale


class ClippedFedAvg(FedAvg):
    """FedAvg whose global update is at most ``max_update_norm`` long."""

    def __init__(self, max_update_norm: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_update_norm = max_update_norm
        self._current: dict[str, np.ndarray] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._current = {k: v.numpy() for k, v in arrays.items()}  # the round's start
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        averaged = {k: v.numpy() for k, v in arrays.items()}
        clipped, norm, scale = clip_update(self._current, averaged, self.max_update_norm)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics["update-norm"], metrics["update-scale"] = norm, scale
        return ArrayRecord({k: Array(v) for k, v in clipped.items()}), metrics


if __name__ == "__main__":
    from _cli import parse_args, report_line, run_example

    args = parse_args("custom_strategy")
    result = run_example("custom_strategy", args)
    norms = result.server_metrics()["update-norm"]
    print(report_line("custom_strategy", result) + f"; largest update-norm {norms.max():.4f}")
