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
so the problem is ill-conditioned there: the variable is scaled (see ``_SCALE``) so that
budgets hold to ~1e-9 bits, and a stalled solve is retried with other Clarabel settings;
budgets below ~1e-5 bits may still come back ``"optimal_inaccurate"`` (feasible, accuracy
good to ~1e-6).  The returned classifier is clipped at zero and rescaled to the exact
marginals.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import cvxpy as cp
import numpy as np
import pandas as pd
import scipy.sparse as sps
from fedsim.fairness.roc import roc_points, validate_roc_region
from numpy.typing import ArrayLike, NDArray

from fedsim.errors import DataError, SolverError

__all__ = ["AGLFOPResult", "frontier", "roc_points", "solve"]

logger = logging.getLogger(__name__)

#: Total mass given to ``x = scale * Q``.  Clarabel's tolerances have an absolute floor
#: of 1e-8; at mass 1 that lets I(Z;Ŷ) exceed a small budget by ~1e-8 bits, which at small
#: budgets (where the optimum grows like sqrt(eps)) moves the accuracy by ~1e-6.  A large
#: mass makes the floor negligible (violations ~1e-10 bits).
_SCALE = 1e5
#: Clarabel settings tried in turn until one reports "Solved" (small budgets can stall).
_ATTEMPTS: tuple[dict[str, object], ...] = (
    {},
    {"equilibrate_enable": False},
    {"iterative_refinement_reltol": 1e-15, "iterative_refinement_abstol": 1e-15},
)
#: Disparity excess (bits) tolerated when choosing among inaccurate solutions.
_FEASIBILITY_TOL_BITS = 1e-9
_LN2 = float(np.log(2.0))
_SOLVER = "CLARABEL"
_SOLUTION_STATUS = {"Solved": "optimal", "AlmostSolved": "optimal_inaccurate"}
_INFEASIBLE_STATUS = {"PrimalInfeasible": "infeasible", "AlmostPrimalInfeasible": "infeasible"}
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

Mode = Literal["zero", "cone", "off"]
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


@dataclass(frozen=True)
class _PointSolution:
    status: str
    q: FloatArray | None
    duality_gap: float


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
    """
    p = _validate_counts(counts)
    eps_g = _validate_eps(eps_global, "eps_global")
    eps_l = _validate_eps(eps_local, "eps_local")
    roc = None if roc_region is None else validate_roc_region(roc_region, p.shape)
    model = _AGLFOPModel(p, roc)
    point = model.solve_point(eps_g, eps_l)
    if point.q is None:
        raise SolverError(
            f"AGLFOP at eps_global={eps_g:g}, eps_local={eps_l:g} bits has no optimal "
            f"solution: solver status {point.status!r}. "
            + (
                "The ROC region cannot meet these budgets; include (0, 0) and (1, 1) in "
                "every group's ROC points or raise the budgets."
                if point.status == "infeasible"
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
    model = _AGLFOPModel(p, roc)
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


@dataclass(frozen=True)
class _Program:
    """One compiled variant: problem, variable ``x = scale * Q`` and its parameters."""

    problem: cp.Problem
    x: cp.Variable
    scale: cp.Parameter
    budget_global: cp.Parameter  # scale * eps_global * ln 2 (nats of x)
    budget_local: cp.Parameter


class _AGLFOPModel:
    """The AGLFOP for one ``P(s, z, y)``, one cached cvxpy problem per constraint mode."""

    def __init__(self, p: FloatArray, roc: list[FloatArray] | None) -> None:
        self.p = p
        self.roc = roc
        n_z, n_y = p.shape[1], p.shape[2]
        self.support = np.flatnonzero(p.ravel() > 0)
        s_idx, z_idx, y_idx = np.unravel_index(self.support, p.shape)
        self.cells = (s_idx, z_idx, y_idx)
        p_z = p.sum(axis=(0, 2))
        p_sz = p.sum(axis=2)
        p_z_given_s = p_sz / p_sz.sum(axis=1, keepdims=True)
        self.cap_global = _entropy_bits(p_z)
        self.cap_local = sum(_entropy_bits(row) for row in p_sz)
        m = self.support.size
        cols = np.arange(m)
        # Q(z, ŷ) = A_g x and P(z) Q(ŷ) = B_g x, rows restricted to groups present.
        present_z = np.flatnonzero(p_z > 0)
        rows_g = np.searchsorted(present_z, z_idx)
        self.a_global = sps.csr_matrix((np.ones(m), (rows_g, cols)), shape=(present_z.size, m))
        self.b_global = np.outer(p_z[present_z], np.ones(m))
        # Q(s, z, ŷ) = A_l x and P(z|s) Q(s, ŷ) = B_l x, rows restricted to P(s, z) > 0.
        present_sz = np.flatnonzero(p_sz.ravel() > 0)
        rows_l = np.searchsorted(present_sz, s_idx * n_z + z_idx)
        self.a_local = sps.csr_matrix((np.ones(m), (rows_l, cols)), shape=(present_sz.size, m))
        row_s, row_z = np.divmod(present_sz, n_z)
        b_local = (row_s[:, None] == s_idx[None, :]) * p_z_given_s[row_s, row_z][:, None]
        self.b_local = sps.csr_matrix(b_local)
        self.correct = (y_idx[:, None] == np.arange(n_y)[None, :]).astype(float)
        self._programs: dict[tuple[Mode, Mode], _Program] = {}

    @staticmethod
    def _mode(eps: float, cap: float) -> Mode:
        if eps >= cap:
            return "off"
        return "zero" if eps == 0.0 else "cone"

    def _program(self, modes: tuple[Mode, Mode]) -> _Program:
        if modes in self._programs:
            return self._programs[modes]
        x = cp.Variable((self.support.size, self.p.shape[2]), nonneg=True)
        scale = cp.Parameter(nonneg=True, name="scale")
        budgets = (cp.Parameter(nonneg=True), cp.Parameter(nonneg=True))
        constraints: list[cp.Constraint] = [
            cp.sum(x, axis=1) == scale * self.p.ravel()[self.support]
        ]
        maps = ((self.a_global, self.b_global), (self.a_local, self.b_local))
        for mode, (a, b), budget in zip(modes, maps, budgets, strict=True):
            if mode == "zero":
                constraints.append(a @ x == b @ x)
            elif mode == "cone":
                constraints.append(cp.sum(cp.rel_entr(a @ x, b @ x)) <= budget)
        if self.roc is not None:
            constraints += self._roc_constraints(x, scale, self.roc)
        problem = cp.Problem(cp.Maximize(cp.sum(cp.multiply(self.correct, x))), constraints)
        if not problem.is_dpp():  # pragma: no cover - guards future edits
            raise SolverError("internal: the AGLFOP problem is not DPP; re-solves would rebuild.")
        self._programs[modes] = _Program(problem, x, scale, *budgets)
        return self._programs[modes]

    def _roc_constraints(
        self, x: cp.Variable, scale: cp.Parameter, roc: list[FloatArray]
    ) -> list[cp.Constraint]:
        """(FPR_z, TPR_z) of ŷ = 1 in the convex hull of group z's ROC points."""
        _, z_idx, y_idx = self.cells
        n_z = self.p.shape[1]
        p_zy = self.p.sum(axis=0).ravel()  # [z, y] flattened
        offsets = np.r_[0, np.cumsum([pts.shape[0] for pts in roc])]
        theta = cp.Variable(int(offsets[-1]), nonneg=True)
        rates = np.zeros((2 * n_z, theta.size))
        blocks = np.zeros((n_z, theta.size))
        for z, pts in enumerate(roc):
            block = slice(offsets[z], offsets[z + 1])
            rates[2 * z, block] = p_zy[2 * z] * pts[:, 0]  # Q(z, y=0, ŷ=1) = P(z, 0) FPR_z
            rates[2 * z + 1, block] = p_zy[2 * z + 1] * pts[:, 1]  # Q(z,1,1) = P(z,1) TPR_z
            blocks[z, block] = 1.0
        keep = np.flatnonzero(p_zy > 0)
        select = sps.csr_matrix(
            (np.ones(z_idx.size), (z_idx * 2 + y_idx, np.arange(z_idx.size))),
            shape=(2 * n_z, z_idx.size),
        )[keep]
        return [select @ x[:, 1] == scale * (rates[keep] @ theta), blocks @ theta == 1.0]

    def solve_point(self, eps_global: float, eps_local: float) -> _PointSolution:
        """Solve at one budget pair; on a stall retry other settings, keep the best."""
        modes = (self._mode(eps_global, self.cap_global), self._mode(eps_local, self.cap_local))
        program = self._program(modes)
        program.scale.value = _SCALE
        program.budget_global.value = _SCALE * _LN2 * eps_global if modes[0] == "cone" else 0.0
        program.budget_local.value = _SCALE * _LN2 * eps_local if modes[1] == "cone" else 0.0
        best: _PointSolution | None = None
        best_key = (-np.inf, -np.inf)
        status = "not solved"
        for options in _ATTEMPTS:
            point = self._solve_once(program, options)
            if point.status == "optimal" or point.q is None:
                if point.status == "optimal":
                    return point
                status = point.status
                continue
            global_bits, local_bits = _disparities_bits(point.q)
            excess = max(global_bits - eps_global, local_bits - eps_local)
            key = (float(excess <= _FEASIBILITY_TOL_BITS), _accuracy(point.q))
            if key > best_key:
                best, best_key = point, key
        logger.debug("AGLFOP (%g, %g) bits: no attempt fully solved", eps_global, eps_local)
        return best if best is not None else _PointSolution(status, None, float("nan"))

    def _solve_once(self, program: _Program, options: dict[str, object]) -> _PointSolution:
        problem = program.problem
        data, chain, inverse = problem.get_problem_data(
            _SOLVER, enforce_dpp=True, solver_opts=dict(options)
        )
        try:
            raw = chain.solve_via_data(problem, data, False, False, dict(options))
        except cp.error.SolverError as exc:
            logger.debug("AGLFOP solver error: %s", exc)
            return _PointSolution("solver_error", None, float("nan"))
        clarabel_status = str(raw.status)
        if clarabel_status not in _SOLUTION_STATUS:
            status = _INFEASIBLE_STATUS.get(clarabel_status, f"solver_error:{clarabel_status}")
            return _PointSolution(status, None, float("nan"))
        with warnings.catch_warnings():  # the status field reports inaccuracy instead
            warnings.simplefilter("ignore", UserWarning)
            problem.unpack_results(raw, chain, inverse)
        q = self._polish(np.asarray(program.x.value) / _SCALE)
        gap = abs(raw.obj_val - raw.obj_val_dual) / _SCALE
        return _PointSolution(_SOLUTION_STATUS[clarabel_status], q, gap)

    def _polish(self, x: FloatArray) -> FloatArray:
        """Embed the solver's rows into ``Q[s, z, y, ŷ]``, clipped at 0 with exact marginals."""
        n_y = self.p.shape[2]
        q = np.zeros((*self.p.shape, n_y))
        rows = np.clip(x, 0.0, None)
        sums = rows.sum(axis=1, keepdims=True)
        target = self.p.ravel()[self.support][:, None]
        # An all-zero row cannot occur at a solution (Σ_ŷ Q = P > 0); guard the division.
        rows = np.where(sums > 0, rows / np.where(sums > 0, sums, 1.0), 1.0 / n_y)
        q.reshape(-1, n_y)[self.support] = rows * target
        return q


def _result(q: FloatArray, point: _PointSolution, compute_pid: bool) -> AGLFOPResult:
    global_bits, local_bits = _disparities_bits(q)
    unique = redundant = masked = float("nan")
    if compute_pid:
        from fedsim.fairness.pid import decompose

        pid = decompose(q.sum(axis=2).transpose(1, 2, 0))  # [s, z, ŷ] -> [z, ŷ, s]
        unique, redundant, masked = float(pid.unique), float(pid.redundant), float(pid.masked)
    return AGLFOPResult(
        accuracy=_accuracy(q),
        q=q,
        global_disparity=global_bits,
        local_disparity=local_bits,
        unique=unique,
        redundant=redundant,
        masked=masked,
        status=point.status,
        duality_gap=float(point.duality_gap),
        solver=_SOLVER,
    )


def _accuracy(q: FloatArray) -> float:
    """``Σ Q(s, z, y, ŷ = y)``."""
    return float(np.einsum("szkk->", q))


def _mi_bits(joint: FloatArray) -> float:
    """Mass-weighted ``w * I(A; B)`` in bits of a 2-D sub-probability table of mass ``w``."""
    total = joint.sum()
    if total <= 0:
        return 0.0
    outer = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log2(joint[mask] * total / outer[mask])))


def _disparities_bits(q: FloatArray) -> tuple[float, float]:
    """``(I(Z; Ŷ), I(Z; Ŷ | S))`` in bits of a joint ``Q[s, z, y, ŷ]``."""
    szh = q.sum(axis=2)
    global_bits = _mi_bits(szh.sum(axis=0))
    local_bits = sum(_mi_bits(table) for table in szh)
    return max(global_bits, 0.0), max(float(local_bits), 0.0)


def _entropy_bits(masses: FloatArray) -> float:
    """``Σ m log2(M / m)``: entropy of ``masses`` weighted by their total ``M``."""
    total = masses.sum()
    nz = masses[masses > 0]
    return float(np.sum(nz * np.log2(total / nz)))


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
