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
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim.config import Scenario
from fedsim.errors import ConfigError

__all__ = ["METRIC_COLUMNS", "format_table", "run_grid", "summarise", "to_markdown"]

logger = logging.getLogger(__name__)

GridValues = Sequence[Any] | Mapping[str, Mapping[str, Any]]
ProgressFn = Callable[[int, int, Mapping[str, Any]], None]

#: Per-run result columns of :func:`run_grid` (besides the grid columns and ``seed``).
METRIC_COLUMNS = ("eval-acc", "eval-loss", "best-eval-acc", "best-round", "wall-time-s")


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
) -> pd.DataFrame:
    """Run ``base_scenario`` for every grid combination and every seed.

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

    Returns
    -------
    pandas.DataFrame
        One row per run: the grid columns, ``seed``, then :data:`METRIC_COLUMNS` —
        final-round ``eval-acc`` and ``eval-loss``, the best round's accuracy and
        number, and the run's wall time in seconds. Missing metrics are NaN.

    Raises
    ------
    ConfigError
        If the grid is malformed or a combination is not a valid scenario.
    fedsim.errors.FedsimError
        For any other user error a run meets (e.g. a missing dataset file).
    """
    from fedsim.runner import run  # torch and flwr: start-up of the CLI and of fedsim.study

    if not seeds:
        raise ConfigError("study: expected at least one seed, got none")
    columns = list(grid)
    combos = list(itertools.product(*_expand(grid)))
    total = len(combos) * len(seeds)
    rows: list[dict[str, Any]] = []
    for combo in combos:
        merged: dict[str, Any] = dict(overrides or {})
        for _, bundle in combo:
            merged.update(bundle)
        labels = {column: value for column, (value, _) in zip(columns, combo, strict=True)}
        for seed in seeds:
            t0 = time.perf_counter()
            result = run(base_scenario, {**merged, "seed": int(seed)}, data_dir=data_dir)
            row = {**labels, "seed": int(seed), **_metrics(result.summary)}
            row["wall-time-s"] = time.perf_counter() - t0
            rows.append(row)
            logger.info("study run %d/%d: %s", len(rows), total, row)
            if progress is not None:
                progress(len(rows), total, row)
    return pd.DataFrame(rows, columns=[*columns, "seed", *METRIC_COLUMNS])


def _metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    final, best = summary.get("final", {}), summary.get("best", {})
    return {
        "eval-acc": float(final.get("eval-acc", math.nan)),
        "eval-loss": float(final.get("eval-loss", math.nan)),
        "best-eval-acc": float(best.get("eval-acc", math.nan)),
        "best-round": float(best.get("round", math.nan)),
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
