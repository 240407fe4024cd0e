"""Partial information decomposition of global and local disparity.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated
Learning Using Partial Information Decomposition" (ICLR 2024), Sec. 3: with Z the
sensitive attribute, Ŷ the global model's prediction and S the client index,
the BROJA decomposition (Bertschinger et al., "Quantifying unique information",
Entropy 2014) of I(Z; Ŷ, S) with target Z and sources Ŷ, S splits

* global disparity  I(Z;Ŷ)   = Uni(Z:Ŷ|S) + Red(Z:Ŷ,S)
* local disparity   I(Z;Ŷ|S) = Uni(Z:Ŷ|S) + Syn(Z:Ŷ,S)   (Syn: "masked" disparity)

where Uni = min over Q in Δ_P of I_Q(Z;Ŷ|S), and Δ_P holds the distributions Q
on (z, ŷ, s) with Q(z,ŷ) = P(z,ŷ) and Q(z,s) = P(z,s). Because Q(z,s) is fixed,
Q(z,s)/Q(s) = P(z|s) is a constant and

    I_Q(Z;Ŷ|S) = sum_{z,ŷ,s} rel_entr(Q(z,ŷ,s), P(z|s) Q(ŷ,s)),

an exponential-cone program in Q (Q(ŷ,s) = sum_z Q(z,ŷ,s) is linear). It is
solved in nats and reported in bits. Tables are indexed ``[z, yhat, s]``; long-form
tables and CSV files of counts are read by :mod:`fedsim.fairness.pid_tables`.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from fedsim.errors import SolverError
from fedsim.fairness.information import (
    conditional_mutual_information,
    mutual_information,
    normalize,
)
from fedsim.fairness.pid_large import unique_information

__all__ = [
    "BLOCK_BARRIER",
    "CLOSED_FORM",
    "LARGE_K_CLIENTS",
    "ROUNDOFF_TOLERANCE_BITS",
    "PIDResult",
    "decompose",
]

logger = logging.getLogger(__name__)

CLOSED_FORM = "closed-form"
#: Solver name of the block-structured barrier method (:mod:`fedsim.fairness.pid_large`).
BLOCK_BARRIER = "block-barrier"
#: From this many clients on, Uni is solved by the block barrier method: the cone
#: program's compiled parameter tensor grows as K^2 (about 0.7 GB at K = 1000).
LARGE_K_CLIENTS = 200
#: Solver round-off tolerated (and clipped to zero) on each PID term, in bits.
ROUNDOFF_TOLERANCE_BITS = 1e-7
#: I(Z;S), I(Z;Ŷ) or I(Z;Ŷ|S) at or below this many bits counts as exactly zero
#: for the closed forms; the error this makes in any term is at most this much.
INDEPENDENCE_TOLERANCE_BITS = 1e-12
# Tolerances in nats on a problem whose objective is O(1). Clarabel at 1e-9
# solved every one of 180 random tables (K up to 100) in <= 40 iterations; at
# 1e-10 it stalls ("almost solved") on some tables whose Uni is ~0. SCS is only
# a fallback, capped so that a hard table fails in seconds, not minutes.
_SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "CLARABEL": {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 200},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 50_000, "time_limit_secs": 10.0},
}


@dataclass(frozen=True)
class PIDResult:
    """Decomposition of global and local disparity, all terms in bits.

    Attributes
    ----------
    unique : float
        Uni(Z:Ŷ|S), disparity in both the global and every local view.
    redundant : float
        Red(Z:Ŷ,S), global disparity explained by clients' group mix.
    masked : float
        Syn(Z:Ŷ,S), local disparity invisible globally.
    global_disparity : float
        I(Z;Ŷ) = unique + redundant.
    local_disparity : float
        I(Z;Ŷ|S) = unique + masked.
    status : str
        cvxpy's status of the solve, or ``"closed-form"``.
    solver : str
        Solver that produced ``unique``, or ``"closed-form"``.
    iterations : int or None
        Solver iterations, when the solver reports them.
    gap : float or None
        Certified duality gap of ``unique`` in bits (block barrier method only):
        the exact Uni lies in ``[unique - gap, unique]``.
    """

    unique: float
    redundant: float
    masked: float
    global_disparity: float
    local_disparity: float
    status: str
    solver: str
    iterations: int | None = None
    gap: float | None = None


class _UniqueProgram:
    """The Uni cone program for one support pattern, built and compiled once.

    Only cells with P(z,ŷ) > 0 and P(z,s) > 0 get a variable (all others are
    forced to zero by Q >= 0 and the marginal constraints), so the product
    Q = P(z,ŷ) P(z,s) / P(z) is strictly feasible and Slater's condition holds.
    Cell probabilities are used unscaled: scaling Q up to O(1) entries made
    Clarabel stall more often, not less.
    """

    def __init__(self, support: NDArray[np.bool_]) -> None:
        cells = np.argwhere(support)  # rows (z, yhat, s), C order
        m = len(cells)
        z, y, s = cells.T
        num_yhat, num_s = support.shape[1:]
        zy_rows, self._zy_keys = _group_matrix(z * num_yhat + y)
        zs_rows, zs_keys = _group_matrix(z * num_s + s)
        # Per z, the row sums and column sums of Q(z, ., .) share one total, so
        # one (z, s) constraint per z is implied by the others: drop each z's last.
        keep = _not_last_per_group(zs_keys // num_s)
        zs_rows, self._zs_keys = zs_rows[keep], zs_keys[keep]
        ys_rows, _ = _group_matrix(y * num_s + s)
        self._cell_z, self._cell_s = z, s

        self.q = cp.Variable(m, nonneg=True)
        self.p_zy = cp.Parameter(zy_rows.shape[0], nonneg=True)
        self.p_zs = cp.Parameter(zs_rows.shape[0], nonneg=True)
        self.cond_z_s = cp.Parameter(m, nonneg=True)  # P(z|s) of each cell
        q_ys = ys_rows.T @ (ys_rows @ self.q)  # Q(ŷ,s) of each cell
        objective = cp.sum(cp.rel_entr(self.q, cp.multiply(self.cond_z_s, q_ys)))
        constraints = [zy_rows @ self.q == self.p_zy, zs_rows @ self.q == self.p_zs]
        self.problem = cp.Problem(cp.Minimize(objective), constraints)
        self._lock = threading.Lock()

    def solve(self, p: NDArray, solver: str) -> tuple[float, str, int | None]:
        """Return (Uni in nats, status, iterations) for the table ``p``."""
        p_zs = p.sum(axis=1)
        with self._lock:  # parameters and solution live on the shared cached problem
            self.p_zy.value = p.sum(axis=2).ravel()[self._zy_keys]
            self.p_zs.value = p_zs.ravel()[self._zs_keys]
            self.cond_z_s.value = (p_zs / p_zs.sum(axis=0))[self._cell_z, self._cell_s]
            try:
                with warnings.catch_warnings():
                    # The status check below reports an inaccurate solve.
                    warnings.filterwarnings("ignore", "Solution may be inaccurate")
                    # warm_start=False: a fresh solver per solve, so a result never
                    # depends on earlier solves (a resumed run equals an uninterrupted one).
                    self.problem.solve(solver=solver, warm_start=False, **_SOLVER_OPTIONS[solver])
            except cp.error.SolverError as exc:
                raise SolverError(
                    f"{solver} failed on the unique-information program: {exc}"
                ) from exc
            status = self.problem.status
            if status != cp.OPTIMAL:
                raise SolverError(
                    f"{solver} ended with status {status!r} on the unique-information "
                    "program; expected 'optimal'"
                )
            stats = self.problem.solver_stats
            return float(self.problem.value), status, stats.num_iters


def _group_matrix(keys: NDArray) -> tuple[sp.csr_matrix, NDArray]:
    """Sparse 0/1 matrix summing cells that share a key, and the sorted distinct keys."""
    unique, rows = np.unique(keys, return_inverse=True)
    data = np.ones(len(keys))
    shape = (len(unique), len(keys))
    return sp.csr_matrix((data, (rows, np.arange(len(keys)))), shape=shape), unique


def _not_last_per_group(groups: NDArray) -> NDArray[np.bool_]:
    """Mask that is False on the last entry of each run of a sorted key array."""
    keep = np.ones(len(groups), dtype=bool)
    keep[np.r_[groups[1:] != groups[:-1], True]] = False
    return keep


@functools.lru_cache(maxsize=32)
def _program(shape: tuple[int, int, int], support_bits: bytes) -> _UniqueProgram:
    support = np.frombuffer(support_bits, dtype=np.bool_).reshape(shape)
    return _UniqueProgram(support)


def _drop_empty_values(p: NDArray) -> NDArray:
    """Remove z, ŷ and s values that carry no probability mass."""
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        p = np.compress(p.sum(axis=other) > 0, p, axis=axis)
    return p


def _closed_form(p: NDArray, global_bits: float, local_bits: float) -> float | None:
    """Return Uni in bits when it follows without solving, else None.

    All BROJA terms are >= 0 and Red <= I(Z;S) (Bertschinger et al. 2014), and
    0 <= Uni <= min(I(Z;Ŷ), I(Z;Ŷ|S)). So a single z or ŷ value, I(Z;Ŷ) = 0 or
    I(Z;Ŷ|S) = 0 gives Uni = 0; Z ⊥ S (which includes a single client) gives
    Red = 0, i.e. Uni = I(Z;Ŷ).
    """
    if min(p.shape[:2]) == 1 or min(global_bits, local_bits) <= INDEPENDENCE_TOLERANCE_BITS:
        return 0.0
    if mutual_information(p.sum(axis=1)) <= INDEPENDENCE_TOLERANCE_BITS:
        return global_bits
    return None


def _solve_unique(
    p: NDArray, solvers: tuple[str, ...]
) -> tuple[float, str, str, int | None, float | None]:
    """Return (Uni in bits, status, solver, iterations, gap in bits), trying ``solvers`` in turn."""
    failures = []
    for solver in solvers:
        gap: float | None = None
        iterations: int | None
        try:
            if solver == BLOCK_BARRIER:
                solution = unique_information(p)
                uni_nats, status, iterations = solution.unique_nats, "optimal", solution.iterations
                gap = solution.gap_nats / math.log(2)
            else:
                uni_nats, status, iterations = _cone_program(p).solve(p, solver)
        except SolverError as exc:
            logger.info("%s", exc)
            failures.append(str(exc))
            continue
        return uni_nats / math.log(2), status, solver, iterations, gap
    raise SolverError("; ".join(failures))


def _cone_program(p: NDArray) -> _UniqueProgram:
    support = (p.sum(axis=2)[:, :, None] > 0) & (p.sum(axis=1)[:, None, :] > 0)
    return _program(p.shape, support.tobytes())


def _default_solvers(num_clients: int) -> tuple[str, ...]:
    """Clarabel, then the block barrier, then SCS; from :data:`LARGE_K_CLIENTS` clients
    on, the block barrier first (the cone program's memory grows as K²).

    Cold cone solves can stop at ``optimal_inaccurate`` on skewed tables; the barrier
    method's answer is certified by its duality gap, so it is the first fallback.
    """
    clarabel, scs = tuple(_SOLVER_OPTIONS)
    if num_clients >= LARGE_K_CLIENTS:
        return (BLOCK_BARRIER, clarabel)
    return (clarabel, BLOCK_BARRIER, scs)


def _clip_unique(uni: float, upper: float) -> float:
    """Clip solver round-off so that Uni, Red and Syn are all >= 0.

    Uni >= 0; Uni <= I(Z;Ŷ|S) because P itself is feasible, and Uni <= I(Z;Ŷ)
    because Red >= 0 (Bertschinger et al. 2014); ``upper`` is the smaller of the
    two. A violation of at most :data:`ROUNDOFF_TOLERANCE_BITS` is round-off
    and is clipped; a larger one means the solve cannot be trusted.
    """
    low, high = -uni, uni - upper
    if max(low, high) > ROUNDOFF_TOLERANCE_BITS:
        term = "Unique" if low > high else "Redundant or masked"
        raise SolverError(
            f"{term} information came out at {-max(low, high):.3g} bits, below the "
            f"round-off tolerance -{ROUNDOFF_TOLERANCE_BITS:g}; the solve is not accurate "
            "enough to trust"
        )
    return min(max(uni, 0.0), upper)


def decompose(joint: ArrayLike, *, shortcuts: bool = True, solver: str | None = None) -> PIDResult:
    """Split global and local disparity into unique, redundant and masked parts.

    Parameters
    ----------
    joint : array_like
        Counts or probabilities indexed ``[z, yhat, s]`` (sensitive attribute,
        prediction, client); any number of values per axis. Values with no mass
        are dropped first.
    shortcuts : bool, default True
        Use exact closed forms where they apply (a single z, ŷ or s value,
        Z ⊥ S, Z ⊥ Ŷ, or Z ⊥ Ŷ | S); ``False`` always solves (for testing).
    solver : {"CLARABEL", "SCS", "block-barrier"}, optional
        Solve with this solver only. By default, below :data:`LARGE_K_CLIENTS`
        clients Clarabel is tried and SCS is the fallback should Clarabel fail;
        from that many clients on, the block barrier method
        (:mod:`fedsim.fairness.pid_large`, memory linear in K) is tried and
        Clarabel is the fallback.

    Returns
    -------
    PIDResult
        The terms in bits; ``unique + redundant = global_disparity`` and
        ``unique + masked = local_disparity`` hold exactly.

    Raises
    ------
    DataError
        If ``joint`` is not a 3-D table of finite, non-negative counts with a
        positive total.
    SolverError
        If no solver reaches an optimal status, or a term is more negative than
        :data:`ROUNDOFF_TOLERANCE_BITS`.

    Examples
    --------
    Predictions ``ŷ = z XOR s``: no disparity globally, one bit on every client, all of
    it masked (synergy). With one group per client, ``ŷ = z = s`` is all redundant.

    >>> import numpy as np
    >>> joint = np.zeros((2, 2, 2))  # [z, yhat, s]
    >>> for z in (0, 1):
    ...     for s in (0, 1):
    ...         joint[z, z ^ s, s] = 1
    >>> res = decompose(joint)
    >>> round(res.global_disparity, 6), round(res.local_disparity, 6), round(res.masked, 6)
    (0.0, 1.0, 1.0)
    >>> res = decompose(np.array([[[1, 0], [0, 0]], [[0, 0], [0, 1]]]))
    >>> round(res.redundant, 6), round(res.unique, 6), round(res.masked, 6)
    (1.0, 0.0, 0.0)
    """
    if solver is not None and solver not in (*_SOLVER_OPTIONS, BLOCK_BARRIER):
        choices = sorted((*_SOLVER_OPTIONS, BLOCK_BARRIER))
        raise ValueError(f"solver must be one of {choices}, got {solver!r}")
    p = _drop_empty_values(normalize(joint, 3, "joint [z, yhat, s]"))
    global_bits = mutual_information(p.sum(axis=2))
    local_bits = conditional_mutual_information(p)
    uni = _closed_form(p, global_bits, local_bits) if shortcuts else None
    gap = None
    if uni is not None:
        status = method = CLOSED_FORM
        iterations = None
    else:
        solvers = (solver,) if solver else _default_solvers(p.shape[2])
        uni, status, method, iterations, gap = _solve_unique(p, solvers)
        uni = _clip_unique(uni, min(global_bits, local_bits))
    return PIDResult(
        unique=uni,
        redundant=global_bits - uni,
        masked=local_bits - uni,
        global_disparity=global_bits,
        local_disparity=local_bits,
        status=status,
        solver=method,
        iterations=iterations,
        gap=gap,
    )
