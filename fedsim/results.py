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
import threading
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
_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: ``0o666`` less the umask."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    ``tempfile.mkstemp`` creates its file 0600; it is given the mode an ordinary
    write would have (``0o666`` less the umask) before it is renamed into place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
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


# ----------------------------------------------------------------- live metrics

LIVE_METRICS = "metrics.csv"
# Written by the sinks of [output] sinks (fedsim.sinks).
JSONL = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_RUN_ID = "mlflow_run_id.txt"
LIVE_HEADER = "round,metric,value\n"
ROUND_TIME = "round-time-s"


def append_live_metrics(
    out_dir: Path, server_round: int, metrics: Mapping[str, float], round_time: float
) -> None:
    """Append one round's server metrics to ``metrics.csv`` (round, metric, value).

    The file grows as the run goes (``tail -f`` shows each round as it ends) and keeps
    what a killed run did; ``round-time-s`` is the round's wall time.
    """
    path = out_dir / LIVE_METRICS
    lines = [] if path.exists() else [LIVE_HEADER]
    lines += [f"{server_round},{name},{value!r}\n" for name, value in metrics.items()]
    lines.append(f"{server_round},{ROUND_TIME},{round(round_time, 5)!r}\n")
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        fh.flush()


def truncate_live_metrics(out_dir: Path, upto_round: int) -> list[float]:
    """Keep the rows of rounds ``<= upto_round`` (a resume redoes the rest).

    Returns
    -------
    list of float
        The recorded round times of those rounds, in round order.
    """
    path = out_dir / LIVE_METRICS
    if not path.is_file():
        return []
    kept, times = [LIVE_HEADER], {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split(",")
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) > upto_round:
            continue
        kept.append(line + "\n")
        if parts[1] == ROUND_TIME:
            times[int(parts[0])] = float(parts[2])
    atomic_write_text(path, "".join(kept))
    return [times[r] for r in sorted(times)]
