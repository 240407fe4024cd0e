"""AGLFOP frontiers on budget grids: the grids, the frontier and its text table.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated Learning
Using Partial Information Decomposition" (ICLR 2024), Sec. 5: the Accuracy and
Global-Local Fairness Optimality Problem bounds the accuracy of *any* classifier
``Q(ŷ | s, z, y)`` whose global disparity ``I(Z;Ŷ)`` and local disparity ``I(Z;Ŷ|S)``
stay within budgets ``(eps_global, eps_local)`` bits, given the joint ``P(S, Z, Y)`` of
client, sensitive attribute and label as counts ``[s, z, y]``.

Budget grids run from 0 to the largest budget that can bind (``H(Z)`` globally,
``H(Z|S)`` locally; larger budgets are vacuous), log-spaced in between. Pure maths: the
solves are :mod:`fedsim.fairness.aglfop`'s; where the counts come from (a scenario, a
run) is :mod:`fedsim.bounds`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from fedsim.errors import ConfigError, DataError, FedsimError
from fedsim.fairness.information import conditional_entropy, entropy, mutual_information

if TYPE_CHECKING:
    from fedsim.fairness.report_tables import AchievedPoint

__all__ = [
    "GRID_RANGE",
    "bound_at",
    "budget_grid",
    "check_groups",
    "compute_frontier",
    "describe_counts",
    "format_frontier",
]

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
    from fedsim.fairness.aglfop import solve  # cvxpy: imported only when solving

    eps_g, eps_l = max(point.global_disparity, 0.0), max(point.local_disparity, 0.0)
    out: dict[str, Any] = {"eps_global": eps_g, "eps_local": eps_l}
    try:
        res = solve(counts, eps_g, eps_l, compute_pid=False)
    except FedsimError as exc:
        return out | {"accuracy": float("nan"), "status": f"failed: {exc}"}
    return out | {"accuracy": res.accuracy, "status": res.status}


def format_frontier(table: pd.DataFrame, digits: int = 4) -> str:
    """The frontier's accuracy as a compact text table: ε_g down, ε_l across."""
    grid = table.pivot_table(index="eps_global", columns="eps_local", values="accuracy")
    head = "eps_g \\ eps_l" + "".join(f"{c:>10.4g}" for c in grid.columns)
    lines = [head]
    for eps_g, row in grid.iterrows():
        cells = "".join(f"{v:>10.{digits}f}" for v in row.to_numpy())
        lines.append(f"{eps_g:>13.4g}{cells}")
    return "\n".join(lines)
