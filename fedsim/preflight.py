"""Checks of the machine a scenario is about to run on, before anything is allocated.

Validation (:mod:`fedsim.config`) accepts every value in range; some in-range values
still cannot run here: ``device = "cuda"`` without CUDA, or a model or synthetic
dataset larger than the memory available. :func:`check_scenario` turns those into
one :class:`~fedsim.errors.ConfigError` naming the setting, instead of a traceback
or an out-of-memory kill after minutes of work.
"""

from __future__ import annotations

import math
import os

from fedsim.config import Scenario
from fedsim.errors import ConfigError

# Flattened input size of the datasets with fixed shapes; others count as 1 feature, so
# the estimate below stays a lower bound of what a run needs.
_INPUT_SIZE = {"digits": 64, "fashion-mnist": 784, "retinamnist": 3 * 28 * 28}
_GIB = 2**30


def model_parameters(sc: Scenario) -> int:
    """A lower bound on the model's parameter count (exact for mlp/logreg on synthetic)."""
    if sc.data.dataset == "synthetic":
        width = sc.data.num_features
    else:
        width = _INPUT_SIZE.get(sc.data.dataset, 1)
    classes = 2
    if sc.model.name == "cnn":
        return 0  # fixed small architecture
    count = 0
    for h in sc.model.hidden if sc.model.name == "mlp" else ():
        count += (width + 1) * h
        width = h
    return count + (width + 1) * classes


def estimate_bytes(sc: Scenario) -> dict[str, int]:
    """Lower bounds on the bytes a run allocates, by setting.

    Returns
    -------
    dict
        ``{"data": ..., "model": ...}``: the synthetic feature matrix (float64 as drawn
        plus the float32 copy the clients train on) and float32 parameters held by the
        global model, the process's training model and every sampled client's reply.
    """
    data = 0
    if sc.data.dataset == "synthetic":
        data = sc.data.num_samples * sc.data.num_features * (8 + 4)
    sampled = max(1, math.ceil(sc.partition.num_clients * sc.strategy.fraction_train))
    model = model_parameters(sc) * 4 * (2 + sampled)
    return {"data": data, "model": model}


def available_bytes() -> int:
    """Memory available to new allocations (``psutil.virtual_memory().available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_scenario(sc: Scenario) -> None:
    """Refuse a scenario this machine cannot run; allocates nothing.

    Raises
    ------
    ConfigError
        If ``device = "cuda"`` and CUDA is not available to this process (unless the
        Ray engine attaches to a cluster, whose workers may have it), or if the
        estimated memory exceeds what is available.
    """
    remote = sc.engine == "ray" and bool(sc.ray.address or os.environ.get("RAY_ADDRESS"))
    if sc.device == "cuda" and not remote:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                'device: "cuda" but CUDA is not available here; use device = "cpu" or "auto"'
            )
    need = estimate_bytes(sc)
    free = available_bytes()
    if sum(need.values()) <= free:
        return
    if need["model"] >= need["data"]:
        setting = f"model.hidden={list(sc.model.hidden)}"
        what = f"{model_parameters(sc):,} parameters"
    else:
        setting = f"data.num_samples={sc.data.num_samples} x data.num_features=" + str(
            sc.data.num_features
        )
        what = "the synthetic dataset"
    raise ConfigError(
        f"{setting}: {what} would need at least {sum(need.values()) / _GIB:.1f} GiB of memory, "
        f"but only {free / _GIB:.1f} GiB are available; choose smaller values"
    )
