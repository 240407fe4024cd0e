"""The AGLFOP as compiled cvxpy programs: building, solving and guarding one budget pair.

Hamman & Dutta, ICLR 2024 (see :mod:`fedsim.fairness.aglfop` for the problem and the
solver notes).  :class:`AGLFOPModel` holds one ``P(s, z, y)`` and one compiled program
per structural variant (a budget of exactly 0 is linear, a budget that cannot bind is
dropped, else an exponential cone), with the budgets as DPP ``cvxpy.Parameter``s.
:meth:`AGLFOPModel.solve_point` solves one budget pair and passes the answer through
:func:`fedsim.fairness.aglfop_feasible.guard` against the budget-0 solution of the same
variant, so that no answer is below that solution or over budget.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import cvxpy as cp
import numpy as np
import scipy.sparse as sps
from numpy.typing import NDArray

from fedsim.errors import SolverError
from fedsim.fairness.aglfop_feasible import (
    BUDGET_TOL_BITS,
    accuracy,
    entropy_bits,
    excess_bits,
    guard,
)

__all__ = ["AGLFOPModel", "PointSolution"]

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
SOLVER = "CLARABEL"
_SOLUTION_STATUS = {"Solved": "optimal", "AlmostSolved": "optimal_inaccurate"}
_INFEASIBLE_STATUS = {"PrimalInfeasible": "infeasible", "AlmostPrimalInfeasible": "infeasible"}

Mode = Literal["zero", "cone", "off"]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class PointSolution:
    """One solved budget pair: status, classifier (None when none) and its provenance.

    ``guard`` is ``"none"``, ``"eps0"`` or ``"mixture"`` (see
    :func:`fedsim.fairness.aglfop_feasible.guard`).
    """

    status: str
    q: FloatArray | None
    duality_gap: float
    guard: str = "none"


@dataclass(frozen=True)
class _Program:
    """One compiled variant: problem, variable ``x = scale * Q`` and its parameters."""

    problem: cp.Problem
    x: cp.Variable
    scale: cp.Parameter
    budget_global: cp.Parameter  # scale * eps_global * ln 2 (nats of x)
    budget_local: cp.Parameter


class AGLFOPModel:
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
        self.cap_global = entropy_bits(p_z)
        self.cap_local = sum(entropy_bits(row) for row in p_sz)
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
        self._zero_solutions: dict[tuple[Mode, Mode], PointSolution] = {}

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

    def solve_point(self, eps_global: float, eps_local: float) -> PointSolution:
        """Solve at one budget pair, guarded against the budget-0 solution.

        Returns the solver's answer when it is within budget and not below the budget-0
        optimum of the same variant; else the better of that budget-0 solution and the
        largest within-budget mixture of the two (``guard`` says which).  Without a
        budget-0 solution (an ROC region that cannot be fair) an answer over budget is
        returned as ``status="over_budget"`` with no classifier.
        """
        modes = self._modes(eps_global, eps_local)
        point = self._solve_modes(modes, eps_global, eps_local)
        if "cone" not in modes or point.q is None:
            return point
        reference = self.zero_reference(eps_global, eps_local)
        if reference.q is None:
            if excess_bits(point.q, eps_global, eps_local) > BUDGET_TOL_BITS:
                return PointSolution("over_budget", None, float("nan"))
            return point
        kept = guard(point.q, reference.q, eps_global, eps_local)
        if kept.guard == "none":
            return point
        logger.debug(
            "AGLFOP (%g, %g) bits: %s answer replaced by %s (weight %.3g)",
            eps_global,
            eps_local,
            point.status,
            kept.guard,
            kept.weight,
        )
        gap = reference.duality_gap if kept.guard == "eps0" else point.duality_gap
        status = reference.status if kept.guard == "eps0" else point.status
        return PointSolution(status, kept.q, gap, kept.guard)

    def solve_unguarded(self, eps_global: float, eps_local: float) -> PointSolution:
        """The solver's own answer at one budget pair, without the guard (for benchmarks)."""
        return self._solve_modes(self._modes(eps_global, eps_local), eps_global, eps_local)

    def zero_reference(self, eps_global: float, eps_local: float) -> PointSolution:
        """The budget-0 solution of the variant these budgets use (cached).

        Every cone budget is set to exactly 0 (linear constraints); dropped and zero
        budgets stay as they are.  Its classifier is feasible for these budgets.
        """
        zero = tuple("zero" if m == "cone" else m for m in self._modes(eps_global, eps_local))
        modes: tuple[Mode, Mode] = (zero[0], zero[1])
        if modes not in self._zero_solutions:
            self._zero_solutions[modes] = self._solve_modes(modes, 0.0, 0.0)
        return self._zero_solutions[modes]

    def _modes(self, eps_global: float, eps_local: float) -> tuple[Mode, Mode]:
        return self._mode(eps_global, self.cap_global), self._mode(eps_local, self.cap_local)

    def _solve_modes(
        self, modes: tuple[Mode, Mode], eps_global: float, eps_local: float
    ) -> PointSolution:
        """Solve one variant; on a stall retry other settings and keep the best."""
        program = self._program(modes)
        program.scale.value = _SCALE
        program.budget_global.value = _SCALE * _LN2 * eps_global if modes[0] == "cone" else 0.0
        program.budget_local.value = _SCALE * _LN2 * eps_local if modes[1] == "cone" else 0.0
        best: PointSolution | None = None
        best_key = (-np.inf, -np.inf)
        status = "not solved"
        for options in _ATTEMPTS:
            point = self._solve_once(program, options)
            if point.status == "optimal":
                return point
            if point.q is None:
                status = point.status
                continue
            excess = excess_bits(point.q, eps_global, eps_local)
            key = (float(excess <= _FEASIBILITY_TOL_BITS), accuracy(point.q))
            if key > best_key:
                best, best_key = point, key
        logger.debug("AGLFOP (%g, %g) bits: no attempt fully solved", eps_global, eps_local)
        return best if best is not None else PointSolution(status, None, float("nan"))

    def _solve_once(self, program: _Program, options: dict[str, object]) -> PointSolution:
        problem = program.problem
        data, chain, inverse = problem.get_problem_data(
            SOLVER, enforce_dpp=True, solver_opts=dict(options)
        )
        try:
            raw = chain.solve_via_data(problem, data, False, False, dict(options))
        except cp.error.SolverError as exc:
            logger.debug("AGLFOP solver error: %s", exc)
            return PointSolution("solver_error", None, float("nan"))
        clarabel_status = str(raw.status)
        if clarabel_status not in _SOLUTION_STATUS:
            status = _INFEASIBLE_STATUS.get(clarabel_status, f"solver_error:{clarabel_status}")
            return PointSolution(status, None, float("nan"))
        with warnings.catch_warnings():  # the status field reports inaccuracy instead
            warnings.simplefilter("ignore", UserWarning)
            problem.unpack_results(raw, chain, inverse)
        q = self._polish(np.asarray(program.x.value) / _SCALE)
        gap = abs(raw.obj_val - raw.obj_val_dual) / _SCALE
        return PointSolution(_SOLUTION_STATUS[clarabel_status], q, gap)

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
