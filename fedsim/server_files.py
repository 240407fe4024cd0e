"""What the ServerApp writes into its ``out-dir`` beyond a results folder, and how it is read.

The ServerApp (:mod:`fedsim.flower_app`) runs in a Flower process; the process that
started it (the flower engine, ``fedsim deploy run``) learns the outcome from files:
a results folder (:mod:`fedsim.results`) plus :data:`ARRAY_KEYS`, or :data:`ERROR`
when the run failed with a user error. Base layer: no Flower imports.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedsim import errors, results

OUT_DIR = "out-dir"  # run config key
# Safetensors stores arrays sorted by name; this file keeps the model's key order so
# that an engine reading the folder back gets the ArrayRecord the ServerApp ended with.
ARRAY_KEYS = "array-keys.json"
ERROR = "error.json"  # written instead of a summary when the run fails with a user error


def write_error(out_dir: Path, exc: errors.FedsimError) -> None:
    """Record a user error (its class name and message) as ``out_dir/error.json``."""
    error = {"type": type(exc).__name__, "message": str(exc)}
    results.atomic_write_text(Path(out_dir) / ERROR, json.dumps(error))


def raise_recorded_error(out_dir: Path) -> None:
    """Raise the user error recorded in ``out_dir/error.json``, as the same class.

    Returns quietly when there is no such file or it names no
    :class:`~fedsim.errors.FedsimError` class.
    """
    error_file = Path(out_dir) / ERROR
    if error_file.is_file():
        error = json.loads(error_file.read_text("utf-8"))
        cls = getattr(errors, str(error.get("type")), None)
        if isinstance(cls, type) and issubclass(cls, errors.FedsimError):
            raise cls(error["message"])
