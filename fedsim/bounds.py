"""AGLFOP bounds for scenarios and runs: glue between fedsim's data and results and
:mod:`fedsim.fairness.aglfop`.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated Learning
Using Partial Information Decomposition" (ICLR 2024), Sec. 5: the Accuracy and
Global-Local Fairness Optimality Problem bounds the accuracy of *any* classifier
``Q(ŷ | s, z, y)`` whose global disparity ``I(Z;Ŷ)`` and local disparity ``I(Z;Ŷ|S)``
stay within budgets ``(eps_global, eps_local)`` bits. Its input is the joint ``P(S, Z, Y)``
of client, sensitive attribute and label, which this module takes

* for a scenario (``fedsim bounds``): from the partition's rows, all of them by default
  (``rows="train"`` or ``"test"`` for one split);
* for a run (``frontier.csv`` / ``frontier.json`` beside the results): from the pooled
  *test-split* counts the fairness accountant saw in the last round, summed over ŷ, so
  that the bound and the model's achieved point refer to the same distribution.

Budget grids run from 0 to the largest budget that can bind (``H(Z)`` globally,
``H(Z|S)`` locally; larger budgets are vacuous), log-spaced in between.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from fedsim.config import Scenario
from fedsim.errors import ConfigError, DataError, FedsimError
from fedsim.fairness.information import conditional_entropy, entropy, mutual_information
from fedsim.fairness.report import AchievedPoint, achieved_point

__all__ = [
    "FRONTIER_CSV",
    "FRONTIER_JSON",
    "ROWS",
    "bound_at",
    "budget_grid",
    "check_groups",
    "compute_frontier",
    "describe_counts",
    "run_counts",
    "run_frontier_files",
    "scenario_counts",
]

logger = logging.getLogger(__name__)

FRONTIER_CSV = "frontier.csv"
FRONTIER_JSON = "frontier.json"
Rows = Literal["all", "train", "test"]
ROWS: tuple[str, ...] = ("all", "train", "test")
#: Grid sizes accepted (as ``fairness.bounds_grid``).
GRID_RANGE = (2, 100)
#: Decades below the top budget spanned by the log-spaced part of a grid.
_DECADES = 3
ProgressFn = Callable[[int, int], None]
IntArray = NDArray[np.int64]


def budget_grid(top: float, num: int) -> NDArray[np.float64]:
    """``num`` budgets: 0, then log-spaced up to ``top`` bits.

    The log-spaced part starts ``min(3, num - 2)`` decades below ``top`` (the AGLFOP
    optimum grows like ``sqrt(eps)`` near 0, so small budgets deserve points). A ``top``
    of 0 (nothing to disclose) gives the single budget 0.

    Raises
    ------
    ConfigError
        If ``num`` is outside 2..100.
    """
    lo, hi = GRID_RANGE
    if not lo <= num <= hi:
        raise ConfigError(f"--grid: expected a grid size from {lo} to {hi}, got {num}")
    if top <= 0:
        return np.zeros(1)
    decades = min(_DECADES, num - 2)
    return np.r_[0.0, np.geomspace(top * 10.0**-decades, top, num - 1)]


def check_groups(counts: ArrayLike, what: str) -> IntArray:
    """Counts ``[s, z, y]`` as integers, or an error when there is nothing to bound.

    Raises
    ------
    DataError
        With one sensitive group (disparities are always 0) or an empty table.
    """
    arr = np.asarray(counts, dtype=np.int64)
    if arr.ndim != 3 or arr.sum() == 0:
        raise DataError(
            f"{what}: expected non-empty counts [client, group, label]; got {arr.shape}"
        )
    present = int(np.count_nonzero(arr.sum(axis=(0, 2))))
    if present < 2:
        raise DataError(
            f"{what} has {present} sensitive group: with one group global and local "
            "disparity are always 0 bits and there is no trade-off to bound; choose a "
            "dataset with a sensitive attribute (`fedsim list` shows them)"
        )
    return arr


def scenario_counts(
    sc: Scenario, data_dir: str | Path | None = None, rows: Rows = "all"
) -> IntArray:
    """Row counts ``[client, z, y]`` of a scenario's partition.

    Parameters
    ----------
    sc
        The scenario (its data, partition and seed decide the rows).
    data_dir
        Dataset folder (default ``FEDSIM_DATA_DIR`` or the user cache).
    rows
        ``"all"`` (train and test rows of every client: the scenario's distribution),
        ``"train"`` or ``"test"``. Training labels include any ``data.label_noise``.

    Raises
    ------
    ConfigError
        For an unknown ``rows``.
    DataError
        Missing data files, or a dataset with a single sensitive group.
    """
    from fedsim.data import REGISTRY
    from fedsim.data.federated import build_federated

    if rows not in ROWS:
        raise ConfigError(f"--rows: expected one of {', '.join(ROWS)}, got {rows!r}")
    info = REGISTRY.get(sc.data.dataset)
    if info is not None and not info.sensitive:
        with_attr = ", ".join(name for name, i in REGISTRY.items() if i.sensitive)
        raise DataError(
            f"data.dataset: {sc.data.dataset} has no sensitive attribute, so every row is in "
            "one group: global and local disparity are always 0 bits and there is no "
            f"trade-off to bound; choose a dataset with one ({with_attr})"
        )
    data = build_federated(sc.data, sc.partition, sc.seed, data_dir, sc.evaluation)
    shape = (data.num_clients, data.raw.num_groups, data.raw.num_classes)
    out = np.zeros(shape, np.int64)
    for k, c in enumerate(data.clients):
        if rows in ("all", "train"):
            np.add.at(out[k], (c.z_train, c.y_train), 1)
        if rows in ("all", "test"):
            np.add.at(out[k], (c.z_test, c.y_test), 1)
    return check_groups(out, f"scenario {sc.name!r} (dataset {sc.data.dataset})")


def describe_counts(counts: ArrayLike) -> dict[str, float]:
    """Information quantities of ``P(S, Z, Y)`` that size the budgets, in bits."""
    p = np.asarray(counts, dtype=float)
    sz = p.sum(axis=2)
    return {
        "H(Z)": entropy(sz.sum(axis=0)),
        "H(Z|S)": conditional_entropy(sz.T),  # axes [z, s]
        "I(Z;Y)": mutual_information(p.sum(axis=0)),
        "I(Z;S)": mutual_information(sz),
    }


def compute_frontier(
    counts: ArrayLike,
    num: int,
    *,
    progress: ProgressFn | None = None,
    compute_pid: bool = True,
) -> pd.DataFrame:
    """The AGLFOP frontier of ``counts [s, z, y]`` on a ``num × num`` budget grid.

    The global grid tops out at ``H(Z)``, the local one at ``H(Z|S)``; see
    :func:`budget_grid`. Columns as :func:`fedsim.fairness.aglfop.frontier`.
    """
    from fedsim.fairness.aglfop import frontier  # cvxpy: imported only when solving

    info = describe_counts(counts)
    grid_g = budget_grid(info["H(Z)"], num)
    grid_l = budget_grid(info["H(Z|S)"], num)
    return frontier(counts, grid_g, grid_l, progress=progress, compute_pid=compute_pid)


def bound_at(counts: ArrayLike, point: AchievedPoint) -> dict[str, Any]:
    """The AGLFOP optimum at a model's achieved disparities (its own budgets).

    Returns ``{"accuracy", "status", "eps_global", "eps_local"}``; the accuracy is NaN
    when the solve fails (the reason is in ``status``).
    """
    from fedsim.fairness.aglfop import solve

    eps_g, eps_l = max(point.global_disparity, 0.0), max(point.local_disparity, 0.0)
    out: dict[str, Any] = {"eps_global": eps_g, "eps_local": eps_l}
    try:
        res = solve(counts, eps_g, eps_l, compute_pid=False)
    except FedsimError as exc:
        return out | {"accuracy": float("nan"), "status": f"failed: {exc}"}
    return out | {"accuracy": res.accuracy, "status": res.status}


def run_counts(
    accountant: Any, run_config: Mapping[str, str] | None = None
) -> tuple[IntArray, dict[str, Any]]:
    """The test-split counts ``[s, z, y]`` a run's achieved point was measured on.

    From the accountant's last accounted round (``counts_history``, summed over ŷ) when
    it has one; else (the Flower engine keeps its accountant in the ServerApp) every
    client's test split, rebuilt from the scenario in ``run_config``.

    Returns
    -------
    counts, source
        ``source`` records where the counts came from (round and partition ids).
    """
    history = getattr(accountant, "counts_history", None) or {}
    if history:
        last = max(history)
        ids = getattr(accountant, "partition_history", {}).get(last)
        counts = np.asarray(history[last], dtype=np.int64).sum(axis=3)
        source = {"rows": "test", "from": "fairness accounting", "round": int(last)}
        source |= {"clients": len(counts), "partition_ids": [int(i) for i in ids or []]}
        return counts, source
    if run_config is None:
        raise DataError("run has no accounted round and no scenario to rebuild its test split")
    from fedsim.runtime import get_runtime

    data = get_runtime(dict(run_config)).data
    shape = (data.num_clients, data.raw.num_groups, data.raw.num_classes)
    counts = np.zeros(shape, np.int64)
    for k, c in enumerate(data.clients):
        np.add.at(counts[k], (c.z_test, c.y_test), 1)
    return counts, {"rows": "test", "from": "scenario", "clients": len(counts)}


def frontier_record(
    counts: IntArray,
    source: Mapping[str, Any],
    table: pd.DataFrame,
    point: AchievedPoint | None,
    seconds: float,
) -> dict[str, Any]:
    """The JSON record stored beside ``frontier.csv``."""
    info = describe_counts(counts)
    return {
        "counts_source": dict(source),
        "counts": counts.tolist(),
        "information_bits": info,
        "eps_global_grid": sorted(set(table.eps_global.tolist())),
        "eps_local_grid": sorted(set(table.eps_local.tolist())),
        "achieved": None if point is None else point.as_dict(),
        "bound_at_achieved": None if point is None else bound_at(counts, point),
        "seconds": round(seconds, 4),
    }


def run_frontier_files(
    sc: Scenario,
    metrics: pd.DataFrame,
    accountant: Any,
    run_config: Mapping[str, str] | None = None,
) -> dict[str, bytes]:
    """``frontier.csv`` and ``frontier.json`` for a finished run (its results folder).

    The frontier (no PID terms: they would dominate the cost) is computed on the run's
    test-split counts on a ``fairness.bounds_grid`` square grid; the JSON holds the
    counts, the grids, the achieved point (final-round accuracy and disparities) and
    the AGLFOP optimum at the achieved disparities. A run whose frontier cannot be
    computed (one sensitive group) gets a JSON with the reason and no CSV: the run's
    results are never lost to the bound.
    """
    t0 = time.perf_counter()
    try:
        counts, source = run_counts(accountant, run_config)
        counts = check_groups(counts, f"run of {sc.name!r}")
        table = compute_frontier(counts, sc.fairness.bounds_grid, compute_pid=False)
    except FedsimError as exc:
        logger.warning("AGLFOP frontier not computed: %s", exc)
        return {FRONTIER_JSON: _json_bytes({"error": str(exc)})}
    record = frontier_record(counts, source, table, achieved_point(metrics), 0.0)
    record["seconds"] = round(time.perf_counter() - t0, 4)
    return {FRONTIER_CSV: table.to_csv(index=False).encode(), FRONTIER_JSON: _json_bytes(record)}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()


# ---------------------------------------------------------------- report of a run folder


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
    from fedsim.fairness.report import TABLE_FILES, ReportInputs, build_report
    from fedsim.model_bound import with_model_bound

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
    from fedsim import results

    written: dict[str, Path] = {}
    for key, table in report.tables.items():
        written[key] = path / TABLE_FILES[key]
        results.atomic_write_text(written[key], table.to_csv(index=False))
    html_path = path / "report.html"
    results.atomic_write_text(html_path, report.html)
    if figures is not None:
        from fedsim.report_figures import write_figures

        write_figures(report.figures, figures)
    return ReportFiles(html_path, written, computed)


def _load_run(path: Path) -> tuple[pd.DataFrame, dict[str, Any], str]:
    from fedsim import results

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
    from fedsim import results

    results.atomic_write_bytes(path / FRONTIER_CSV, table.to_csv(index=False).encode())
    results.atomic_write_bytes(path / FRONTIER_JSON, _json_bytes(record))
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
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

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
    import tomllib

    from fedsim.config import load_scenario

    if not config_toml:
        raise ConfigError("report: the run folder has no config.toml to rebuild its data from")
    try:
        return load_scenario(tomllib.loads(config_toml))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"report: config.toml of the run is not valid TOML: {exc}") from exc


# --------------------------------------------------------------------------- CLI helpers


def progress_bar(console: Any, quiet: bool = False) -> tuple[Callable[[], None], ProgressFn]:
    """A rich progress bar on ``console``: ``(stop, progress)``.

    ``progress(done, total)`` starts the bar on the first solved point, so a command
    that fails before solving prints only its one error line; ``stop()`` removes it
    (and does nothing if it never started).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]AGLFOP frontier"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
    task = bar.add_task("", total=None)

    def update(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    def stop() -> None:
        if bar.live.is_started:
            bar.stop()

    return stop, update


def format_frontier(table: pd.DataFrame, digits: int = 4) -> str:
    """The frontier's accuracy as a compact text table: ε_g down, ε_l across."""
    grid = table.pivot_table(index="eps_global", columns="eps_local", values="accuracy")
    head = "eps_g \\ eps_l" + "".join(f"{c:>10.4g}" for c in grid.columns)
    lines = [head]
    for eps_g, row in grid.iterrows():
        cells = "".join(f"{v:>10.{digits}f}" for v in row.to_numpy())
        lines.append(f"{eps_g:>13.4g}{cells}")
    return "\n".join(lines)
