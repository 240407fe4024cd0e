"""Run results on disk: every file written atomically, ``summary.json`` last.

A results folder holds ``config.toml`` (the resolved scenario), ``metrics.parquet``
(long form: round, client — a partition id or ``"server"`` —, metric, value),
``model.safetensors`` (final global weights; no pickle) and ``summary.json``. Each
file is written to a temporary name and renamed into place, and ``summary.json``
comes last, so a folder with a summary is complete and a crashed run never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save

CONFIG = "config.toml"
METRICS = "metrics.parquet"
MODEL = "model.safetensors"
SUMMARY = "summary.json"
COLUMNS = ["round", "client", "metric", "value"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def metrics_frame(rows: Iterable[tuple[int, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=COLUMNS)
    return frame.astype(
        {"round": "int64", "client": "string", "metric": "string", "value": "float64"}
    )


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def arrays_to_safetensors(arrays: Mapping[str, np.ndarray]) -> bytes:
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def load_weights(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The final global weights of a run (safetensors: no code is executed)."""
    return load_file(str(Path(run_dir) / MODEL))


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / METRICS)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def write_run(
    out_dir: Path,
    config_toml: str,
    metrics: pd.DataFrame,
    arrays: Mapping[str, np.ndarray],
    summary: Mapping[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> None:
    """Write a complete results folder (``summary.json`` last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / CONFIG, config_toml)
    atomic_write_bytes(out_dir / METRICS, frame_to_parquet_bytes(metrics))
    atomic_write_bytes(out_dir / MODEL, arrays_to_safetensors(arrays))
    for name, data in (extra_files or {}).items():
        atomic_write_bytes(out_dir / name, data)
    atomic_write_text(out_dir / SUMMARY, json.dumps(summary, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
