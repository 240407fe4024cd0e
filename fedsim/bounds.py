"""AGLFOP bounds for scenarios and runs: where the counts ``P(S, Z, Y)`` come from.

The frontier maths (budget grids, :func:`compute_frontier`, :func:`format_frontier`)
is :mod:`fedsim.fairness.frontier_grid`'s, re-exported here. This module takes the
joint ``P(S, Z, Y)`` of client, sensitive attribute and label

* for a scenario (``fedsim bounds``): from the partition's rows, all of them by default
  (``rows="train"`` or ``"test"`` for one split);
* for a run (``frontier.csv`` / ``frontier.json`` beside the results): from the pooled
  *test-split* counts the fairness accountant saw in the last round, summed over ŷ, so
  that the bound and the model's achieved point refer to the same distribution.

The report of a run folder (reading it, completing its frontier) is
:mod:`fedsim.report_run`'s job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fedsim.config import Scenario
from fedsim.data import REGISTRY
from fedsim.data.federated import build_federated
from fedsim.errors import ConfigError, DataError, FedsimError
from fedsim.fairness.frontier_grid import (
    GRID_RANGE,
    IntArray,
    bound_at,
    budget_grid,
    check_groups,
    compute_frontier,
    describe_counts,
    format_frontier,
)
from fedsim.fairness.report import AchievedPoint, achieved_point

# The command line reaches the progress bar through this module too (`fedsim bounds`).
from fedsim.progress import ProgressFn, progress_bar

__all__ = [
    "FRONTIER_CSV",
    "FRONTIER_JSON",
    "GRID_RANGE",
    "ROWS",
    "ProgressFn",
    "bound_at",
    "budget_grid",
    "check_groups",
    "compute_frontier",
    "describe_counts",
    "format_frontier",
    "frontier_record",
    "json_bytes",
    "progress_bar",
    "run_counts",
    "run_frontier_files",
    "scenario_counts",
]

logger = logging.getLogger(__name__)

FRONTIER_CSV = "frontier.csv"
FRONTIER_JSON = "frontier.json"
Rows = Literal["all", "train", "test"]
ROWS: tuple[str, ...] = ("all", "train", "test")


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
    from fedsim.runtime import get_runtime  # torch and flwr: only without accounted counts

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
        return {FRONTIER_JSON: json_bytes({"error": str(exc)})}
    record = frontier_record(counts, source, table, achieved_point(metrics), 0.0)
    record["seconds"] = round(time.perf_counter() - t0, 4)
    return {FRONTIER_CSV: table.to_csv(index=False).encode(), FRONTIER_JSON: json_bytes(record)}


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented JSON (NaN allowed), as the frontier record is stored."""
    return (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()
