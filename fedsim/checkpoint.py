"""Crash-safe, verified checkpoints and ``fedsim run --resume``.

After every round the engine writes one file, ``RUN_DIR/checkpoint.safetensors``,
atomically (temporary file, fsync, rename). It holds exactly the state that must
survive a restart, each part through the state protocol (:mod:`fedsim.state`):
the global arrays, the strategy's ``state()`` (Flower's built-ins through the table
in :mod:`fedsim.strategies.state`), the fairness accountant's ``state()``, the metric
rows so far, the round number and Python's ``random`` state (Flower samples nodes
with it). Client-side randomness needs no saving: each client's generator is derived
from (seed, round, partition). The file is safetensors — tensors plus a JSON header
— so loading it never runs pickle.

The header carries a format version, the SHA-256 of the scenario TOML the run
saved (``config.toml``) and one SHA-256 over the header and every tensor. A resume
checks, before anything is restored: the digests, the format version, the round
(an integer in ``[0, rounds]``), the arrays against the model's names, shapes and
dtypes and their finiteness, the strategy and fairness state names, the metric rows
and the shape of the ``random`` state. Any failure is a :class:`CheckpointError`
(one ``fedsim: error:`` line, exit code 2). The digest detects corruption and
accidental edits; it is not a signature against someone who rewrites the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as st_save

from fedsim import results
from fedsim.errors import CheckpointError, DataError
from fedsim.state import Stateful, check_arrays
from fedsim.strategies.state import stateful

CHECKPOINT = "checkpoint.safetensors"
FORMAT = 2
ARRAYS, STRATEGY, FAIRNESS = "arrays/", "strategy/", "fairness/"
Row = tuple[int, str, str, float]
_MT_STATE = 625  # Mersenne Twister: 624 words and a position
_HEADER_KEYS = {"format", "round", "random", "rows", "config_sha256", "sha256"}


def save(
    run_dir: Path,
    server_round: int,
    arrays: ArrayRecord,
    strategy: Any,
    accountant: Stateful | None,
    rows: list[Row],
    config_toml: str,
) -> None:
    """Write the checkpoint of ``server_round`` (and the scenario, once).

    ``strategy`` is the scenario's strategy; its state is read through
    :func:`fedsim.strategies.state.stateful`.
    """
    state = stateful(strategy, {}).state()  # the reference is only needed to load

    if not (run_dir / results.CONFIG).exists():
        results.atomic_write_text(run_dir / results.CONFIG, config_toml)
    tensors = {ARRAYS + k: np.ascontiguousarray(v.numpy()) for k, v in arrays.items()}
    tensors.update({STRATEGY + k: np.ascontiguousarray(v) for k, v in state.items()})
    if accountant is not None:
        fair = accountant.state()
        tensors.update({FAIRNESS + k: np.ascontiguousarray(v) for k, v in fair.items()})
    header: dict[str, Any] = {
        "format": FORMAT,
        "round": server_round,
        "random": _random_state(),
        "rows": [[r, c, m, v] for r, c, m, v in rows],
        "config_sha256": _sha256_text(config_toml),
    }
    header["sha256"] = digest(header, tensors)
    blob = st_save(tensors, metadata={"fedsim": json.dumps(header)})
    results.atomic_write_bytes(run_dir / CHECKPOINT, blob)


def digest(header: Mapping[str, Any], tensors: Mapping[str, NDArray[Any]]) -> str:
    """SHA-256 over the header (without its own ``sha256``) and every tensor."""
    h = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "sha256"}
    h.update(json.dumps(body, sort_keys=True).encode())
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        h.update(f"\0{key}\0{value.dtype.str}\0{value.shape}\0".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def load(run_dir: Path) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Read a checkpoint and verify its digest: its JSON header and its tensors.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, of another format version, or its
        digest does not match its content.
    """
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint in {run_dir} (expected {CHECKPOINT})")
    try:
        with safe_open(str(path), "np") as fh:
            text = (fh.metadata() or {}).get("fedsim")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - not a dict
        header = json.loads(text) if isinstance(text, str) else None
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as exc:
        raise CheckpointError(f"--resume: {path} is not a fedsim checkpoint ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"--resume: {path} is not a fedsim checkpoint (no fedsim header)")
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"--resume: {path} has checkpoint format {header.get('format')!r}, this fedsim "
            f"reads format {FORMAT}; rerun the scenario from the start"
        )
    if header.get("sha256") != digest(header, tensors):
        raise CheckpointError(
            f"--resume: {path} is corrupt (its SHA-256 does not match its content); "
            "rerun the scenario from the start"
        )
    return header, tensors


def split(tensors: Mapping[str, NDArray[Any]], prefix: str) -> dict[str, NDArray[Any]]:
    """The tensors under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class Restored:
    """Where a resumed run continues: its round, global arrays and metric rows."""

    start_round: int
    arrays: ArrayRecord
    rows: list[Row]


def restore(
    run_dir: Path,
    num_rounds: int,
    reference: Mapping[str, NDArray[Any]],
    strategy: Any,
    accountant: Stateful | None,
) -> Restored:
    """Verify the checkpoint in ``run_dir``, then restore the strategy, accountant and
    ``random`` state from it.

    Parameters
    ----------
    run_dir
        The run folder (its ``config.toml`` is the scenario being resumed).
    num_rounds
        The scenario's rounds; the checkpoint's round must lie in ``[0, num_rounds]``.
    reference
        The model's initial arrays: the names, shapes and dtypes the checkpoint must hold.
    strategy, accountant
        The freshly built strategy (its state is loaded through
        :func:`fedsim.strategies.state.stateful`) and fairness accountant.

    Raises
    ------
    CheckpointError
        For any corrupt, edited or mismatching part; nothing is restored then.
    """
    header, tensors = load(run_dir)
    unknown = sorted(set(header) - _HEADER_KEYS)
    if unknown:
        raise CheckpointError(f"--resume: unknown checkpoint header fields {unknown}")
    config = run_dir / results.CONFIG
    if header.get("config_sha256") != _sha256_bytes(config.read_bytes()):
        raise CheckpointError(
            f"--resume: {config} was edited after the checkpoint was written (its SHA-256 "
            "differs); restore the original scenario or rerun from the start"
        )
    start_round = _round(header.get("round"), num_rounds)
    rows = _rows(header.get("rows"), start_round)
    random_state = _random_tuple(header.get("random"))
    known = (ARRAYS, STRATEGY, FAIRNESS) if accountant is not None else (ARRAYS, STRATEGY)
    stray = sorted(k for k in tensors if not k.startswith(known))
    if stray:
        raise CheckpointError(f"--resume: unexpected tensors in the checkpoint: {stray[:5]}")
    arrays = check_arrays("checkpoint arrays", split(tensors, ARRAYS), reference)
    try:
        stateful(strategy, reference).load_state(split(tensors, STRATEGY))
        if accountant is not None:
            accountant.load_state(split(tensors, FAIRNESS))
    except DataError as exc:  # a state owner's own check: still a checkpoint problem
        raise CheckpointError(f"--resume: {exc}") from None
    random.setstate(random_state)
    return Restored(start_round, ArrayRecord({k: Array(v) for k, v in arrays.items()}), rows)


def _round(value: Any, num_rounds: int) -> int:
    if type(value) is not int or not 0 <= value <= num_rounds:
        raise CheckpointError(
            f"--resume: checkpoint round {value!r} is not an integer in [0, {num_rounds}]"
        )
    return value


def _rows(value: Any, last_round: int) -> list[Row]:
    if not isinstance(value, list):
        raise CheckpointError("--resume: checkpoint metric rows are not a list")
    rows: list[Row] = []
    for row in value:
        ok = isinstance(row, list) and len(row) == 4
        if ok:
            r, client, metric, v = row
            ok = (
                type(r) is int
                and 0 <= r <= last_round
                and isinstance(client, str)
                and isinstance(metric, str)
                and isinstance(v, int | float)
                and not isinstance(v, bool)
            )
        if not ok:
            raise CheckpointError(
                f"--resume: checkpoint metric row {row!r} is not [round <= {last_round}, "
                "client, metric, value]"
            )
        rows.append((r, client, metric, float(v)))
    return rows


def _random_tuple(value: Any) -> tuple[Any, ...]:
    """Python's ``random`` state from JSON, checked before ``random.setstate`` sees it."""
    ok = isinstance(value, list) and len(value) == 3
    if ok:
        version, internal, gauss = value
        ok = (
            version == 3
            and isinstance(internal, list)
            and len(internal) == _MT_STATE
            and all(type(w) is int and 0 <= w < 2**32 for w in internal)
            and internal[-1] <= 624
            and (gauss is None or (isinstance(gauss, float) and math.isfinite(gauss)))
        )
    if not ok:
        raise CheckpointError(
            "--resume: the checkpoint's random state is not Python's "
            "(3, 625 words, gauss) Mersenne Twister state"
        )
    return (value[0], tuple(value[1]), value[2])


def _random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _sha256_text(text: str) -> str:
    return _sha256_bytes(text.encode("utf-8"))


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
