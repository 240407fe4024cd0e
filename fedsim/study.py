"""Parameter studies: run a scenario over a grid of overrides and seeds, then summarise.

A grid maps a column name to the values it takes. Two kinds of entries:

- ``"key.path": [v1, v2, ...]`` — a scenario override (as ``--set key.path=v``); the
  column holds the value.
- ``"label": {"name": {"key.path": value, ...}, ...}`` — named bundles of overrides,
  e.g. methods that change the strategy and the loss together; the column holds the
  bundle's name.

:func:`run_grid` runs every combination once per seed and returns one row per run;
:func:`summarise` reduces the seeds to mean, sample standard deviation and count;
:func:`format_table` and :func:`to_markdown` lay a summary out as rows x columns of
``mean ± std`` text.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim.config import Scenario
from fedsim.errors import ConfigError
from fedsim.plugins import OBJECT_PREFIX

__all__ = ["METRIC_COLUMNS", "format_table", "run_grid", "summarise", "to_markdown"]

logger = logging.getLogger(__name__)

GridValues = Sequence[Any] | Mapping[str, Mapping[str, Any]]
ProgressFn = Callable[[int, int, Mapping[str, Any]], None]

#: Per-run result columns of :func:`run_grid` (besides the grid columns and ``seed``).
METRIC_COLUMNS = (
    "eval-acc",
    "eval-loss",
    "best-eval-acc",
    "best-round",
    # final-round fairness (NaN without fairness accounting): the trade-off axes
    "global-disparity",
    "local-disparity",
    "demographic_parity_difference",
    "wall-time-s",
)


def _expand(grid: Mapping[str, GridValues]) -> list[list[tuple[Any, dict[str, Any]]]]:
    """Per grid column, the (column value, overrides) pairs it takes."""
    axes = []
    for column, values in grid.items():
        if column in ("seed", *METRIC_COLUMNS):
            raise ConfigError(f"study grid: column {column!r} is reserved; seeds go in `seeds`")
        if isinstance(values, Mapping):
            pairs = [(name, dict(bundle)) for name, bundle in values.items()]
        elif isinstance(values, Sequence) and not isinstance(values, str | bytes):
            pairs = [(value, {column: value}) for value in values]
        else:
            raise ConfigError(
                f"study grid: {column!r} expects a list of values or a mapping of named "
                f"override bundles, got {type(values).__name__}"
            )
        if not pairs:
            raise ConfigError(f"study grid: {column!r} has no values")
        axes.append(pairs)
    return axes


def run_grid(
    base_scenario: Scenario | str | Path | Mapping[str, Any],
    grid: Mapping[str, GridValues],
    seeds: Sequence[int],
    *,
    overrides: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    csv_path: str | Path | None = None,
    jobs: int = 1,
    ray_address: str | None = None,
) -> pd.DataFrame:
    """Run ``base_scenario`` for every grid combination and every seed.

    Every combination's scenario is validated before the first run, so a bad grid
    value fails at once rather than after hours of training.

    Parameters
    ----------
    base_scenario
        Scenario file, parsed mapping or :class:`~fedsim.config.Scenario`.
    grid
        Column name -> list of override values, or -> mapping of bundle name to
        overrides (see the module docstring). Combinations follow the grid's order,
        the last column varying fastest; seeds vary fastest of all.
    seeds
        Scenario seeds (the ``seed`` override): partition, initial model and client
        sampling all derive from it.
    overrides
        Overrides applied to every run, before the grid's.
    data_dir
        Dataset folder (default ``FEDSIM_DATA_DIR`` or the user cache).
    progress
        ``progress(done, total, row)`` after every run.
    csv_path
        A CSV of the rows so far, rewritten (atomically) after every run. Rows it
        already holds (same grid values and seed) are not run again, so a sweep that
        was stopped continues where it stopped.
    jobs
        Cells run at once in separate processes on this machine (1: one after another
        in this process). Each run's intra-op threads are set so that the jobs share
        the machine's cores rather than oversubscribe them.
    ray_address
        Run each cell as a Ray task on this cluster instead (``"local"`` starts a
        private Ray instance); every node needs the same environment and data path.

    Rows are the same whichever way the cells run (each run is seeded by its scenario
    alone); the CSV lists finished rows in grid order as they finish.

    Returns
    -------
    pandas.DataFrame
        One row per run: the grid columns, ``seed``, then :data:`METRIC_COLUMNS` —
        final-round ``eval-acc`` and ``eval-loss``, the best round's accuracy and
        number, the final round's global and local disparity (bits) and demographic
        parity difference (with fairness accounting), and the run's wall time in
        seconds. Missing metrics are NaN.

    Raises
    ------
    ConfigError
        If the grid is malformed, a combination is not a valid scenario, or
        ``csv_path`` holds rows of another grid.
    fedsim.errors.FedsimError
        For any other user error a run meets (e.g. a missing dataset file).
    """
    # torch and flwr: start-up of the CLI and of fedsim.study
    from fedsim.preflight import check_scenario
    from fedsim.runner import resolve  # torch and flwr: start-up of the CLI and of fedsim.study

    if not seeds:
        raise ConfigError("study: expected at least one seed, got none")
    columns = list(grid)
    header = [*columns, "seed", *METRIC_COLUMNS]
    cells = []
    for combo in itertools.product(*_expand(grid)):
        merged: dict[str, Any] = dict(overrides or {})
        for _, bundle in combo:
            merged.update(bundle)
        labels = {column: value for column, (value, _) in zip(columns, combo, strict=True)}
        for seed in seeds:
            cell = resolve(base_scenario, {**merged, "seed": int(seed)})
            check_scenario(cell)  # every cell, up front
            cells.append(({**labels, "seed": int(seed)}, cell))
    if jobs < 1:
        raise ConfigError(f"--jobs: expected at least 1, got {jobs}")
    csv = Path(csv_path) if csv_path is not None else None
    done = _finished_rows(csv, header) if csv is not None else {}
    order = [_row_key(labels, header) for labels, _ in cells]
    todo = [
        (key, labels, cell)
        for key, (labels, cell) in zip(order, cells, strict=True)
        if key not in done
    ]
    finished = [len(cells) - len(todo)]

    def record(key: tuple[str, ...], labels: dict[str, Any], outcome: _Outcome) -> None:
        row = {**labels, **_metrics(outcome.summary), "wall-time-s": outcome.wall}
        done[key] = row
        if csv is not None:  # every finished row, in grid order
            _write_csv(csv, [done[k] for k in order if k in done], header)
        finished[0] += 1
        logger.info("study run %d/%d: %s", finished[0], len(cells), row)
        if progress is not None:
            progress(finished[0], len(cells), row)

    if ray_address is not None or jobs > 1:
        _check_parallel(todo)
    if ray_address is not None:
        _run_on_ray(todo, ray_address, data_dir, record)
    elif jobs > 1:
        _run_in_processes(todo, jobs, data_dir, record)
    else:
        for key, labels, sc in todo:
            record(key, labels, _run_cell(sc.to_dict(), data_dir))
    return pd.DataFrame([done[k] for k in order], columns=header)


@dataclass(frozen=True)
class _Outcome:
    summary: dict[str, Any]
    wall: float


def _run_cell(scenario: Mapping[str, Any], data_dir: str | Path | None) -> _Outcome:
    """One sweep cell (a fully resolved scenario), here or in a worker process."""
    from fedsim.runner import run  # torch and flwr: start-up; also imported in worker processes

    t0 = time.perf_counter()
    result = run(scenario, data_dir=data_dir)
    return _Outcome(result.summary, time.perf_counter() - t0)


Record = Callable[[tuple[str, ...], dict[str, Any], _Outcome], None]
Cells = Sequence[tuple[tuple[str, ...], dict[str, Any], Scenario]]


def _check_parallel(todo: Cells) -> None:

    for _, labels, sc in todo:
        if sc.engine != "local":
            raise ConfigError(
                f"--jobs/--ray-address run each sweep cell on the local engine; cell {labels} "
                f"asks for engine = {sc.engine!r}"
            )
        refs = (
            sc.model.name,
            sc.data.dataset,
            sc.partition.method,
            sc.client.loss.name,
            sc.client.optimizer,
            sc.strategy.name,
        )
        if any(ref.startswith(OBJECT_PREFIX) for ref in refs):
            raise ConfigError(
                "--jobs/--ray-address: a Python object passed to fedsim cannot reach other "
                "processes; use a module reference 'package.module:attr'"
            )


def _threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _run_in_processes(todo: Cells, jobs: int, data_dir: str | Path | None, record: Record) -> None:
    """Cells in ``jobs`` spawned processes; each run gets its share of the cores."""
    threads = _threads_per_job(jobs)
    context = multiprocessing.get_context("spawn")  # no forked torch/Ray state
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k in _THREAD_VARIABLES})  # inherited at spawn
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {
                pool.submit(_run_cell, _with_threads(sc, threads), data_dir): (key, labels)
                for key, labels, sc in todo
            }
            for future in as_completed(futures):
                record(*futures[future], future.result())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _with_threads(sc: Scenario, threads: int) -> dict[str, Any]:
    """The cell's scenario with PyTorch's intra-op threads capped at ``threads``."""
    table = sc.to_dict()
    table["threads"] = min(sc.threads or threads, threads)
    return table


def _run_on_ray(todo: Cells, address: str, data_dir: str | Path | None, record: Record) -> None:
    """Each cell as a Ray task (one CPU) on the cluster at ``address``."""
    # Imported when asked for: Ray's import alone costs seconds.
    import ray

    started = not ray.is_initialized()
    if started:
        # Workers of a cluster started elsewhere need the data path and plug-in modules.
        env = {k: os.environ[k] for k in ("FEDSIM_DATA_DIR", "PYTHONPATH") if os.environ.get(k)}
        ray.init(
            address=None if address == "local" else address,
            runtime_env={"env_vars": env} if env else None,
            logging_level=logging.WARNING,
        )
    try:
        task = ray.remote(num_cpus=1)(_run_cell)
        pending = {
            task.remote(_with_threads(sc, 1), str(data_dir) if data_dir else None): (key, labels)
            for key, labels, sc in todo
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                record(*pending.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()


def _row_key(row: Mapping[str, Any], header: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(row[c]) for c in header[: header.index("seed") + 1])


def _finished_rows(csv: Path, header: list[str]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Rows an earlier (possibly stopped) sweep wrote to ``csv``, by grid values and seed."""
    if not csv.exists():
        return {}
    try:
        text = pd.read_csv(csv, dtype=str, keep_default_na=False)
        typed = pd.read_csv(csv)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"--out: {csv} exists but is not a sweep CSV ({exc})") from None
    if list(text.columns) != header:
        raise ConfigError(
            f"--out: {csv} holds another sweep (columns {', '.join(text.columns)}); "
            "choose another --out"
        )
    keys = [_row_key(r, header) for r in text.to_dict("records")]
    return dict(zip(keys, typed.to_dict("records"), strict=True))


def _write_csv(csv: Path, rows: Iterable[Mapping[str, Any]], header: list[str]) -> None:
    from fedsim.results import atomic_write_text  # pandas: start-up

    atomic_write_text(csv, pd.DataFrame(list(rows), columns=header).to_csv(index=False))


def _metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    final, best = summary.get("final", {}), summary.get("best", {})
    return {
        "eval-acc": float(final.get("eval-acc", math.nan)),
        "eval-loss": float(final.get("eval-loss", math.nan)),
        "best-eval-acc": float(best.get("eval-acc", math.nan)),
        "best-round": float(best.get("round", math.nan)),
        "global-disparity": float(final.get("global-disparity", math.nan)),
        "local-disparity": float(final.get("local-disparity", math.nan)),
        "demographic_parity_difference": float(
            final.get("demographic_parity_difference", math.nan)
        ),
    }


def summarise(
    frame: pd.DataFrame, value: str = "eval-acc", by: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean, sample standard deviation and count of ``value`` over seeds.

    Parameters
    ----------
    frame
        Per-run rows as returned by :func:`run_grid`.
    value
        The column to summarise.
    by
        Grouping columns; default every column except ``seed`` and
        :data:`METRIC_COLUMNS` (i.e. the grid columns).

    Returns
    -------
    pandas.DataFrame
        One row per group, in order of first appearance: the grouping columns, then
        ``mean``, ``std`` (ddof = 1, NaN for a single run) and ``n``. NaN values
        (runs without the metric) are left out of all three.

    Raises
    ------
    ConfigError
        If ``value`` or a grouping column is not in ``frame``.
    """
    keys = (
        list(by)
        if by is not None
        else [c for c in frame.columns if c not in ("seed", *METRIC_COLUMNS)]
    )
    missing = [c for c in (*keys, value) if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"summarise: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})"
        )
    if not keys:
        raise ConfigError("summarise: no grouping columns; pass `by` or a frame with grid columns")
    grouped = frame.groupby(keys, sort=False, dropna=False)[value]
    out = grouped.agg(mean="mean", std=lambda s: s.std(ddof=1), n="count")
    return out.reset_index()


def format_table(
    summary: pd.DataFrame,
    rows: str,
    columns: str,
    *,
    scale: float = 1.0,
    digits: int = 1,
) -> pd.DataFrame:
    """Lay a :func:`summarise` result out as ``mean ± std`` text, rows x columns.

    Rows and columns keep their order of first appearance in ``summary``; ``scale``
    multiplies both numbers (100 for percent). A missing cell is empty, a single
    run shows its mean alone.
    """
    row_keys = list(dict.fromkeys(summary[rows]))
    col_keys = list(dict.fromkeys(summary[columns]))
    table = pd.DataFrame("", index=pd.Index(row_keys, name=rows), columns=col_keys, dtype=object)
    for _, rec in summary.iterrows():
        mean, std = rec["mean"] * scale, rec["std"] * scale
        text = f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
        table.loc[rec[rows], rec[columns]] = text
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``table`` (index as the first column)."""
    header = [str(table.index.name or ""), *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(table.columns)]
    for index, values in table.iterrows():
        lines.append("| " + " | ".join([str(index), *map(str, values)]) + " |")
    return "\n".join(lines) + "\n"
