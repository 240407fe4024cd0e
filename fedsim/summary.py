"""The ``summary.json`` of a run: final and best server metrics, timings and versions.

Written by every engine's results folder (:mod:`fedsim.runner` and the ServerApp of
:mod:`fedsim.flower_app`), so it lives below both.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import pandas as pd

from fedsim.config import Scenario
from fedsim.version import __version__

#: Every reply the screening wrapper drops, both phases (``strategies/screening.py``).
FAILED_REPLY_METRICS = tuple(
    f"{phase}-{kind}-replies"
    for phase in ("train", "eval")
    for kind in ("failed", "nonfinite", "malformed")
)


def make_summary(
    sc: Scenario,
    frame: pd.DataFrame,
    wall: float,
    loop: float,
    round_times: list[float] | None = None,
) -> dict[str, Any]:
    """Final and best server metrics, timings and versions."""
    # Imported when called (start-up time): only for their version strings.
    import flwr
    import torch  # as flwr above

    server = frame[frame.client == "server"]
    final: dict[str, float] = {}
    if len(server):
        last = server[server["round"] == server["round"].max()]
        final = {str(m): float(v) for m, v in zip(last.metric, last.value, strict=True)}
    best: dict[str, Any] = {}
    acc = server[server.metric == "eval-acc"]
    if len(acc):
        i = acc.value.idxmax()
        best = {"eval-acc": float(acc.value[i]), "round": int(acc["round"][i])}
    failed = server[server.metric.isin(FAILED_REPLY_METRICS)].value.sum()
    return {
        "scenario": sc.name,
        "engine": sc.engine,
        "seed": sc.seed,
        "rounds": int(server["round"].max()) if len(server) else 0,
        "num_clients": sc.partition.num_clients,
        "strategy": sc.strategy.name,
        "dataset": sc.data.dataset,
        "final": final,
        "best": best,
        "failed_replies_total": int(failed),
        "wall_time_s": round(wall, 4),
        "round_loop_time_s": round(loop, 4),
        "round_times_s": [round(t, 5) for t in round_times or []],
        "versions": {
            "fedsim": __version__,
            "flwr": flwr.__version__ if hasattr(flwr, "__version__") else "",
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
