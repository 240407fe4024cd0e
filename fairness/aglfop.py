"""Accuracy and Global-Local Fairness Optimality Problem (AGLFOP).

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated Learning
Using Partial Information Decomposition", ICLR 2024.  Given the joint distribution
``P(S, Z, Y)`` of client ``S``, sensitive attribute ``Z`` and true label ``Y``, the AGLFOP
asks for the best accuracy that *any* (randomised) classifier ``Q(Ŷ | S, Z, Y)`` can reach
when the global disparity ``I(Z; Ŷ)`` is at most ``eps_global`` and the local disparity
``I(Z; Ŷ | S)`` is at most ``eps_local`` (both in bits).

The decision variable is the joint ``Q(s, z, y, ŷ) ≥ 0`` with ``Σ_ŷ Q = P(s, z, y)``.  As
``P(z)`` and ``P(z | s)`` are fixed by the data,

    I(Z; Ŷ)     = Σ_{z,ŷ}   rel_entr(Q(z, ŷ),    P(z)     Q(ŷ)),
    I(Z; Ŷ | S) = Σ_{s,z,ŷ} rel_entr(Q(s, z, ŷ), P(z | s) Q(s, ŷ)),

sums of relative entropies of linear maps of ``Q``: the problem is an exponential-cone
program and its solution is the global optimum, with a duality-gap certificate.

Solver notes.  Only cells with ``P(s, z, y) > 0`` get variables, and only groups with
``P(z) > 0`` (``P(s, z) > 0`` locally) get relative-entropy terms, so no term is
``rel_entr(0, 0)`` by construction.  A budget of exactly zero makes the cone constraint lose
its interior (interior-point methods then stall); it is equivalent to the *linear*
independence constraints ``Q(z, ŷ) = P(z) Q(ŷ)`` (resp. ``Q(s, z, ŷ) = P(z|s) Q(s, ŷ)``),
which are used instead.  A budget at or above ``H(Z)`` (resp. ``H(Z | S)``) can never bind
and is dropped.  Each of these structural variants is built once, with the budgets as
``cvxpy.Parameter`` (DPP), and re-solved.  Near zero the optimum grows like ``sqrt(eps)``,
so the problem is ill-conditioned there: the variable is scaled so that budgets hold to
~1e-9 bits, and a stalled solve is retried with other Clarabel settings.  Budgets below
~1e-7 bits still often come back ``"optimal_inaccurate"``, sometimes below the budget-0
optimum or slightly over budget; every answer is therefore *guarded*
(:mod:`fedsim.fairness.aglfop_feasible`): it is never below the budget-0 solution of
the same problem (feasible for every budget) and never over budget by more than
``BUDGET_TOL_BITS`` = 1e-12 bits, by falling back to that solution or to the largest
within-budget mixture of the two.  The returned classifier is clipped at zero and
rescaled to the exact marginals.

Code layout: this module is the public API (validation, results, frontier);
:mod:`fedsim.fairness.aglfop_program` builds and solves the cvxpy programs;
:mod:`fedsim.fairness.aglfop_feasible` holds the numpy measures and the guard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from fedsim.errors import DataError, SolverError
from fedsim.fairness.aglfop_feasible import accuracy, disparities_bits
from fedsim.fairness.aglfop_program import SOLVER, AGLFOPModel, PointSolution
from fedsim.fairness.pid import decompose
from fedsim.fairness.roc import roc_points, validate_roc_region

__all__ = ["AGLFOPResult", "frontier", "roc_points", "solve"]

logger = logging.getLogger(__name__)

FRONTIER_COLUMNS = (
    "eps_global",
    "eps_local",
    "accuracy",
    "global_disparity",
    "local_disparity",
    "unique",
    "redundant",
    "masked",
    "status",
)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class AGLFOPResult:
    """Optimal classifier of one AGLFOP instance.

    Attributes
    ----------
    accuracy : float
        Accuracy ``Σ Q(s, z, y, ŷ = y)`` of the returned (feasible) classifier: the optimum.
    q : numpy.ndarray
        Optimal joint ``Q(s, z, y, ŷ)``, probabilities indexed ``[s, z, y, ŷ]``.
    global_disparity, local_disparity : float
        ``I(Z; Ŷ)`` and ``I(Z; Ŷ | S)`` of ``q`` in bits, recomputed in numpy.
    unique, redundant, masked : float
        PID terms of ``q`` (bits, from :func:`fedsim.fairness.pid.decompose`); NaN when
        not computed.
    status : str
        ``"optimal"`` or ``"optimal_inaccurate"`` (solver stopped at reduced tolerance).
    duality_gap : float
        ``|primal - dual|`` objective of the solved cone program, in accuracy units.
    solver : str
        Name of the cvxpy solver used.
    guard : str
        ``"none"`` (the solver's answer), ``"eps0"`` (the budget-0 solution, because the
        answer was below it) or ``"mixture"`` (the answer pulled back inside the budgets
        by mixing it with the budget-0 solution).
    """

    accuracy: float
    q: FloatArray
    global_disparity: float
    local_disparity: float
    unique: float
    redundant: float
    masked: float
    status: str
    duality_gap: float
    solver: str
    guard: str = "none"


def solve(
    counts: ArrayLike,
    eps_global: float,
    eps_local: float,
    *,
    roc_region: ArrayLike | Sequence[ArrayLike] | None = None,
    compute_pid: bool = True,
) -> AGLFOPResult:
    """Solve the AGLFOP: best accuracy under global and local fairness budgets.

    Parameters
    ----------
    counts : array_like, shape (num_clients, num_groups, num_classes)
        Counts or probabilities indexed ``[s, z, y]``; normalised internally.
    eps_global, eps_local : float
        Budgets on ``I(Z; Ŷ)`` and ``I(Z; Ŷ | S)`` in bits; ``>= 0``, ``inf`` = unconstrained.
    roc_region : array_like or sequence of array_like, optional
        Model-specific variant for binary ``Y``: "what could this model family reach",
        the family being group-wise (randomised) thresholdings of one trained score model.
        ROC points ``(fpr, tpr)`` of a trained score model, one ``(k, 2)`` array per group
        (e.g. from :func:`roc_points`) or one array shared by all groups.  Each group's
        aggregate ``(FPR_z, TPR_z)`` is restricted to the convex hull of its points: the
        rates reachable by randomising between the model's thresholds per group.  Only
        the per-group aggregate (over clients) is restricted.  Include ``(0, 0)`` and
        ``(1, 1)``; without them small budgets can be infeasible.
    compute_pid : bool, default True
        Also compute the PID terms of the optimal classifier.

    Returns
    -------
    AGLFOPResult

    Raises
    ------
    DataError
        Malformed counts, budgets or ROC points.
    SolverError
        The problem is infeasible (only possible with ``roc_region``), the solver failed,
        or the PID of the optimum could not be computed (``compute_pid=False`` skips it).

    Examples
    --------
    Two clients where the label agrees with the group 80% of the time: unconstrained,
    a classifier of ``(s, z, y)`` is always right; with no disparity allowed at all it
    reaches 0.7.

    >>> import numpy as np
    >>> counts = np.array([[[40, 10], [10, 40]], [[40, 10], [10, 40]]])  # [s, z, y]
    >>> round(solve(counts, float("inf"), float("inf"), compute_pid=False).accuracy, 4)
    1.0
    >>> res = solve(counts, 0.0, 0.0, compute_pid=False)
    >>> round(res.accuracy, 4), res.status
    (0.7, 'optimal')
    """
    p = _validate_counts(counts)
    eps_g = _validate_eps(eps_global, "eps_global")
    eps_l = _validate_eps(eps_local, "eps_local")
    roc = None if roc_region is None else validate_roc_region(roc_region, p.shape)
    model = AGLFOPModel(p, roc)
    point = model.solve_point(eps_g, eps_l)
    if point.q is None:
        raise SolverError(
            f"AGLFOP at eps_global={eps_g:g}, eps_local={eps_l:g} bits has no optimal "
            f"solution: solver status {point.status!r}. "
            + (
                "The ROC region cannot meet these budgets; include (0, 0) and (1, 1) in "
                "every group's ROC points or raise the budgets."
                if point.status in ("infeasible", "over_budget")
                else "Try nearby budgets, or report the counts that fail."
            )
        )
    return _result(point.q, point, compute_pid)


def frontier(
    counts: ArrayLike,
    eps_global_grid: ArrayLike,
    eps_local_grid: ArrayLike,
    *,
    progress: Callable[[int, int], None] | None = None,
    compute_pid: bool = True,
    roc_region: ArrayLike | Sequence[ArrayLike] | None = None,
) -> pd.DataFrame:
    """Trace the AGLFOP optimum over the grid ``eps_global_grid × eps_local_grid``.

    The problem is built once (budgets are DPP ``cvxpy.Parameter``s) and re-solved per
    point (one compiled program per structural variant: a budget of exactly 0 is linear, a
    budget that cannot bind is dropped).  Points without an optimal solution (infeasible
    ROC region, solver failure) are recorded with their status and NaN values instead of
    raising; a PID that fails leaves NaN PID terms and logs a warning.

    Parameters
    ----------
    counts : array_like, shape (num_clients, num_groups, num_classes)
        Counts or probabilities indexed ``[s, z, y]``.
    eps_global_grid, eps_local_grid : array_like
        1-D grids of budgets in bits (``>= 0``).
    progress : callable, optional
        Called as ``progress(done, total)`` after each grid point.
    compute_pid : bool, default True
        Compute the PID terms per point (the dominant cost on small problems).
    roc_region : array_like or sequence of array_like, optional
        As in :func:`solve`.

    Returns
    -------
    pandas.DataFrame
        One row per point, ``eps_global`` outer and ``eps_local`` inner, with columns
        eps_global, eps_local, accuracy, global_disparity, local_disparity, unique,
        redundant, masked, status.

    Raises
    ------
    DataError
        Malformed counts, grids or ROC points.
    """
    p = _validate_counts(counts)
    grid_g = _validate_grid(eps_global_grid, "eps_global_grid")
    grid_l = _validate_grid(eps_local_grid, "eps_local_grid")
    roc = None if roc_region is None else validate_roc_region(roc_region, p.shape)
    model = AGLFOPModel(p, roc)
    rows: list[dict[str, object]] = []
    total = grid_g.size * grid_l.size
    for eps_g in grid_g:
        for eps_l in grid_l:
            point = model.solve_point(float(eps_g), float(eps_l))
            row: dict[str, object] = dict.fromkeys(FRONTIER_COLUMNS, np.nan)
            row.update(eps_global=float(eps_g), eps_local=float(eps_l), status=point.status)
            if point.q is not None:
                try:
                    res = _result(point.q, point, compute_pid)
                except SolverError as exc:  # keep the accuracy; PID terms stay NaN
                    logger.warning("PID failed at (%g, %g): %s", eps_g, eps_l, exc)
                    res = _result(point.q, point, compute_pid=False)
                row.update({k: getattr(res, k) for k in FRONTIER_COLUMNS[2:]})
            rows.append(row)
            if progress is not None:
                progress(len(rows), total)
    return pd.DataFrame(rows, columns=list(FRONTIER_COLUMNS))


def _result(q: FloatArray, point: PointSolution, compute_pid: bool) -> AGLFOPResult:
    global_bits, local_bits = disparities_bits(q)
    unique = redundant = masked = float("nan")
    if compute_pid:
        pid = decompose(q.sum(axis=2).transpose(1, 2, 0))  # [s, z, ŷ] -> [z, ŷ, s]
        unique, redundant, masked = float(pid.unique), float(pid.redundant), float(pid.masked)
    return AGLFOPResult(
        accuracy=accuracy(q),
        q=q,
        global_disparity=global_bits,
        local_disparity=local_bits,
        unique=unique,
        redundant=redundant,
        masked=masked,
        status=point.status,
        duality_gap=float(point.duality_gap),
        solver=SOLVER,
        guard=point.guard,
    )


def _validate_counts(counts: ArrayLike) -> FloatArray:
    try:
        arr = np.asarray(counts, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"counts must be a numeric array indexed [s, z, y]: {exc}") from exc
    if arr.ndim != 3:
        raise DataError(
            f"counts must be 3-D, indexed [client s, group z, label y]; got shape {arr.shape}."
        )
    if 0 in arr.shape:
        raise DataError(f"counts must have at least one client, group and label; {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise DataError("counts contain NaN or infinity; every cell must be a finite count.")
    if np.any(arr < 0):
        raise DataError(f"counts must be non-negative; smallest entry is {arr.min():g}.")
    empty = np.flatnonzero(arr.sum(axis=(1, 2)) == 0)
    if empty.size:
        raise DataError(
            f"client(s) {empty.tolist()} have no data (all counts zero); drop them from counts."
        )
    return arr / arr.sum()


def _validate_eps(eps: float, name: str) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a number of bits; got {eps!r}.") from exc
    if np.isnan(value) or value < 0:
        raise DataError(f"{name} must be >= 0 bits (inf = unconstrained); got {eps!r}.")
    return value


def _validate_grid(grid: ArrayLike, name: str) -> FloatArray:
    arr = np.atleast_1d(np.asarray(grid, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D sequence of budgets; got {arr.shape}.")
    for value in arr:
        _validate_eps(value, name)
    return arr
