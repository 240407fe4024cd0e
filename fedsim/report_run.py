"""The report of a run folder: read the run, complete its frontier, write the report.

:func:`write_report` reads ``RUN_DIR`` (metrics, summary, ``config.toml``, a stored
``frontier.csv`` / ``frontier.json``), computes the AGLFOP frontier when the run has
none (or another grid is asked for) and writes ``report.html`` and the report's CSV
tables. Building the HTML is :mod:`fedsim.fairness.report`'s job, the model-specific
bound :mod:`fedsim.model_bound`'s, the counts and frontier records :mod:`fedsim.bounds`'s.
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors import SafetensorError
from safetensors.numpy import load_file

from fedsim import results
from fedsim.bounds import (
    FRONTIER_CSV,
    FRONTIER_JSON,
    bound_at,
    check_groups,
    compute_frontier,
    frontier_record,
    json_bytes,
    scenario_counts,
)
from fedsim.config import Scenario, load_scenario
from fedsim.errors import ConfigError, DataError
from fedsim.fairness.frontier_grid import IntArray
from fedsim.fairness.report import (
    TABLE_FILES,
    AchievedPoint,
    ReportInputs,
    achieved_point,
    build_report,
)
from fedsim.model_bound import with_model_bound
from fedsim.progress import ProgressFn
from fedsim.report_figures import write_figures

__all__ = ["ReportFiles", "write_report"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path
    tables: dict[str, Path]
    frontier_computed: bool


def write_report(
    run_dir: str | Path,
    *,
    grid: int | None = None,
    data_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    figures: str | Path | None = None,
) -> ReportFiles:
    """Write ``RUN_DIR/report.html`` and the report's CSV tables (and with ``figures``,
    every figure as standalone SVG and PDF in that folder).

    The frontier is the one stored with the run (``frontier.csv``); a fairness run
    without one (``fairness.bounds = false``), or a ``grid`` other than the stored one,
    gets it computed from the last accounted round's test-split counts (in the
    checkpoint, else rebuilt from ``config.toml``) and stored as ``frontier.csv`` /
    ``frontier.json`` for the next report.

    Raises
    ------
    ConfigError
        ``run_dir`` is missing or is not a complete run folder.
    DataError
        Its files cannot be read.
    """
    path = Path(run_dir)
    metrics, summary, config_toml = _load_run(path)
    point = achieved_point(metrics)
    frontier_table, record, note, computed = _run_frontier(
        path, config_toml, point, grid, data_dir, progress
    )
    bound = None
    if record is not None and point is not None:
        bound = record.get("bound_at_achieved")
        if record.get("achieved") != point.as_dict() and record.get("counts"):
            bound = bound_at(record["counts"], point)  # stored for another achieved point
    inputs = ReportInputs(
        metrics,
        summary,
        frontier_table,
        bound,
        None if record is None else record.get("counts_source"),
        note,
        config_toml,
    )
    # The model-specific bound (the trained model's own ROC hulls) comes first in the
    # report when the saved model can be scored; otherwise the report says why not.
    inputs = with_model_bound(inputs, path, data_dir=data_dir, progress=progress)
    report = build_report(inputs)
    written: dict[str, Path] = {}
    for key, table in report.tables.items():
        written[key] = path / TABLE_FILES[key]
        results.atomic_write_text(written[key], table.to_csv(index=False))
    html_path = path / "report.html"
    results.atomic_write_text(html_path, report.html)
    if figures is not None:
        write_figures(report.figures, figures)
    return ReportFiles(html_path, written, computed)


def _load_run(path: Path) -> tuple[pd.DataFrame, dict[str, Any], str]:
    if not path.is_dir():
        raise ConfigError(f"report: run folder {str(path)!r} does not exist or is not a folder")
    missing = [n for n in (results.SUMMARY, results.METRICS) if not (path / n).is_file()]
    if missing:
        raise ConfigError(
            f"report: {str(path)!r} is not a complete run folder (no {', '.join(missing)}); "
            "pass the --out folder of a finished `fedsim run`"
        )
    try:
        metrics = results.read_metrics(path)
        summary = results.read_summary(path)
        config = (path / results.CONFIG).read_text() if (path / results.CONFIG).is_file() else ""
    except (OSError, ValueError) as exc:
        raise DataError(f"report: cannot read the run in {str(path)!r}: {exc}") from exc
    if not set(results.COLUMNS) <= set(metrics.columns):
        raise DataError(f"report: {results.METRICS} in {str(path)!r} lacks {results.COLUMNS}")
    return metrics, summary, config


def _run_frontier(
    path: Path,
    config_toml: str,
    point: AchievedPoint | None,
    grid: int | None,
    data_dir: str | Path | None,
    progress: ProgressFn | None,
) -> tuple[pd.DataFrame | None, dict[str, Any] | None, str, bool]:
    """(frontier, its JSON record, note when absent, whether it was computed now)."""
    stored = _read_stored(path)
    if stored is not None:
        table, record = stored
        if grid is None or len(record.get("eps_global_grid", [])) == grid:
            return table, record, "", False
    if point is None:
        return (
            None,
            None,
            (
                "No frontier: the run has no fairness accounting (fairness.enabled = false), so "
                "there is no achieved point to compare with a bound. Rerun with "
                "--set fairness.enabled=true --set fairness.bounds=true."
            ),
            False,
        )
    sc = _scenario(config_toml)
    counts, source = _checkpoint_counts(path)
    if counts is None:
        counts = scenario_counts(sc, data_dir, rows="test")
        source = {"rows": "test", "from": "scenario", "clients": len(counts)}
    try:
        counts = check_groups(counts, f"run of {sc.name!r}")
    except DataError as exc:
        return None, None, f"No frontier: {exc}.", False
    t0 = time.perf_counter()
    table = compute_frontier(
        counts, grid or sc.fairness.bounds_grid, progress=progress, compute_pid=False
    )
    record = frontier_record(counts, source, table, point, time.perf_counter() - t0)
    results.atomic_write_bytes(path / FRONTIER_CSV, table.to_csv(index=False).encode())
    results.atomic_write_bytes(path / FRONTIER_JSON, json_bytes(record))
    return table, record, "", True


def _read_stored(path: Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    csv, record_path = path / FRONTIER_CSV, path / FRONTIER_JSON
    if not csv.is_file():
        return None
    try:
        table = pd.read_csv(csv)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"report: cannot read the stored frontier in {str(path)!r}: {exc}") from exc
    expected = {"eps_global", "eps_local", "accuracy"}
    if not expected <= set(table.columns):
        raise DataError(f"report: {csv} lacks the columns {sorted(expected)}")
    return table, record


def _checkpoint_counts(path: Path) -> tuple[IntArray | None, dict[str, Any]]:
    """Last accounted round's counts ``[s, z, y]`` from the run's checkpoint, if any."""
    file = path / "checkpoint.safetensors"
    if not file.is_file():
        return None, {}
    prefix = "fairness/counts/"  # FairnessAccounting.state() keys under fedsim.checkpoint's
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as exc:  # unreadable checkpoint: rebuild instead
        logger.warning("report: checkpoint unreadable (%s); rebuilding the test split", exc)
        return None, {}
    rounds = {
        int(k[len(prefix) :]): k
        for k in tensors
        if k.startswith(prefix) and k[len(prefix) :].isdigit()
    }
    if not rounds:
        return None, {}
    last = max(rounds)
    counts = np.asarray(tensors[rounds[last]], dtype=np.int64).sum(axis=3)
    return counts, {"rows": "test", "from": "checkpoint", "round": last, "clients": len(counts)}


def _scenario(config_toml: str) -> Scenario:
    if not config_toml:
        raise ConfigError("report: the run folder has no config.toml to rebuild its data from")
    try:
        return load_scenario(tomllib.loads(config_toml))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"report: config.toml of the run is not valid TOML: {exc}") from exc
