"""Crash-safe checkpoints and ``fedsim run --resume``.

After every round the engine writes one file, ``RUN_DIR/checkpoint.safetensors``,
atomically (temporary file, fsync, rename): the global arrays, the strategy's
numeric state (server-optimiser moments, momentum, current arrays...), the fairness
accountant's count tables, the metric rows so far, the round number and Python's
``random`` state (Flower samples nodes with it). Client-side randomness needs no
saving: each client's generator is derived from (seed, round, partition). The file
is safetensors — tensors plus a JSON header — so loading it never runs pickle.

A resumed run continues from the checkpointed round with the same scenario and
produces the same weights and metrics as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from fedsim import results
from fedsim.errors import ConfigError

CHECKPOINT = "checkpoint.safetensors"
_ARRAYS, _STRATEGY, _FAIRNESS = "arrays/", "strategy/", "fairness/"


def save(
    run_dir: Path,
    server_round: int,
    arrays: ArrayRecord,
    strategy: Any,
    accountant: Any | None,
    rows: list[tuple[int, str, str, float]],
    config_toml: str,
) -> None:
    """Write the checkpoint of ``server_round`` (and the scenario, once)."""
    from safetensors.numpy import save as st_save

    if not (run_dir / results.CONFIG).exists():
        results.atomic_write_text(run_dir / results.CONFIG, config_toml)
    tensors = {_ARRAYS + k: np.ascontiguousarray(v.numpy()) for k, v in arrays.items()}
    strategy_arrays, strategy_meta = capture_state(strategy)
    tensors.update({_STRATEGY + k: v for k, v in strategy_arrays.items()})
    if accountant is not None:  # the accountant owns its state format
        fair = accountant.state()
        tensors.update({_FAIRNESS + k: np.ascontiguousarray(v) for k, v in fair.items()})
    header = {
        "round": server_round,
        "random": _random_state(),
        "strategy": strategy_meta,
        "rows": [[r, c, m, v] for r, c, m, v in rows],
    }
    blob = st_save(tensors, metadata={"fedsim": json.dumps(header)})
    results.atomic_write_bytes(run_dir / CHECKPOINT, blob)


def load(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a checkpoint: its JSON header and its tensors (no pickle involved)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--resume: no checkpoint in {run_dir} (expected {CHECKPOINT})")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "np") as fh:
            header = json.loads((fh.metadata() or {})["fedsim"])
        tensors = load_file(str(path))
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as exc:
        raise ConfigError(f"--resume: {path} is not a fedsim checkpoint ({exc})") from None
    return header, tensors


def split(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def arrays_of(tensors: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in split(tensors, _ARRAYS).items()})


def restore_random(header: Mapping[str, Any]) -> None:
    version, internal, gauss = header["random"]
    random.setstate((version, tuple(internal), gauss))


def _random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


# ------------------------------------------------------------- strategy state


def capture_state(strategy: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Numeric attributes of a strategy: arrays, dicts/lists of arrays, scalars.

    Flower's strategies keep their state as plain attributes (``current_arrays``,
    ``m_t``, ``v_t``, ``momentum_vector``...), so a generic walk over ``__dict__``
    covers them all without knowing each class. Callables and other objects are
    configuration, rebuilt from the scenario, and are skipped.
    """
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for name, value in vars(strategy).items():
        if isinstance(value, ArrayRecord):
            meta[name] = {"kind": "arrayrecord", "keys": list(value.keys())}
            arrays.update(
                {f"{name}/{k}": np.ascontiguousarray(v.numpy()) for k, v in value.items()}
            )
        elif isinstance(value, np.ndarray):
            meta[name] = {"kind": "ndarray"}
            arrays[name] = np.ascontiguousarray(value)
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) for v in value.values())
        ):
            meta[name] = {"kind": "dict", "keys": list(value.keys())}
            arrays.update({f"{name}/{k}": np.ascontiguousarray(v) for k, v in value.items()})
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            meta[name] = {"kind": "list", "len": len(value)}
            arrays.update({f"{name}/{i}": np.ascontiguousarray(v) for i, v in enumerate(value)})
        elif value is None or isinstance(value, bool | int | float | str):
            meta[name] = {"kind": "scalar", "value": value}
    return arrays, meta


def restore_state(strategy: Any, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_state`."""
    for name, info in meta.items():
        kind = info["kind"]
        if kind == "scalar":
            setattr(strategy, name, info["value"])
        elif kind == "ndarray":
            setattr(strategy, name, arrays[name])
        elif kind == "arrayrecord":
            setattr(
                strategy, name, ArrayRecord({k: Array(arrays[f"{name}/{k}"]) for k in info["keys"]})
            )
        elif kind == "dict":
            setattr(strategy, name, {k: arrays[f"{name}/{k}"] for k in info["keys"]})
        elif kind == "list":
            setattr(strategy, name, [arrays[f"{name}/{i}"] for i in range(info["len"])])


def resume(run_dir: str | Path, overrides: Mapping[str, Any] | None = None, **kwargs: Any):
    """Continue the run checkpointed in ``run_dir``; see :func:`fedsim.runner.resume`."""
    from fedsim.runner import resume as _resume

    return _resume(run_dir, overrides, **kwargs)
