"""BROJA unique information for many clients: a block-structured barrier method.

Solves the program of :mod:`fedsim.fairness.pid` (Bertschinger et al., "Quantifying
unique information", Entropy 2014; used by Hamman & Dutta, ICLR 2024)

    Uni = min_Q  sum_{z,ŷ,s} Q(z,ŷ,s) log( Q(z,ŷ,s) / (P(z|s) Q(ŷ,s)) )
          s.t.   sum_s Q(z,ŷ,s) = P(z,ŷ),   sum_ŷ Q(z,ŷ,s) = P(z,s),   Q >= 0

without a generic cone solver. The objective is a sum over clients s of a
function of the |Z| x |Ŷ| block Q(., ., s); the clients are coupled only by the
|Z| |Ŷ| constraints sum_s Q(z,ŷ,s) = P(z,ŷ). A log-barrier method (Boyd &
Vandenberghe, "Convex Optimization", Sec. 11.3) therefore needs, per Newton
step, one small KKT solve per client (batched) and one |Z| |Ŷ| Schur complement
for the coupling multipliers: time and memory grow linearly with the number of
clients K, where the compiled cone program's parameter tensor grows as K^2.

Stopping is certified by weak duality. With multipliers λ(z,ŷ) and μ(z,s),
any pair with sum_z P(z|s) exp(λ(z,ŷ) + μ(z,s)) <= 1 for every (ŷ, s) gives the
lower bound sum λ P(z,ŷ) + sum μ P(z,s) <= Uni (the dual of the program with
Q(ŷ,s) replaced by a free R(ŷ,s) >= 0, which does not change the minimum); the
objective at the feasible iterate is an upper bound. The method stops when the
two are within ``gap_tol`` nats and returns the upper bound and the gap.

Only cells with P(z,ŷ) > 0 and P(z,s) > 0 are variables; the others are zero in
every feasible Q. Tables are indexed ``[z, yhat, s]`` and must be normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedsim.errors import SolverError

__all__ = ["BarrierSolution", "unique_information"]

# Barrier parameter schedule: t starts at (number of cells) / _START_GAP, so the
# barrier's duality gap m/t starts near the objective's O(1) scale, and grows
# by _T_FACTOR per centring.
_START_GAP = 1.0
_T_FACTOR = 50.0
# Centring stops when the squared Newton decrement of t f + barrier is below this.
_CENTRED = 1e-6
# Below this squared decrement a failed line search is round-off, not divergence.
_NOISE_DECREMENT = 1e-6
_MAX_NEWTON = 40  # per centring
_STEP_TO_BOUNDARY = 0.99  # fraction of the step to the nearest Q = 0 face


@dataclass(frozen=True)
class BarrierSolution:
    """Result of :func:`unique_information`.

    Attributes
    ----------
    unique_nats : float
        Objective at the returned feasible Q: an upper bound on Uni, in nats.
    gap_nats : float
        Certified duality gap: Uni lies in ``[unique_nats - gap_nats, unique_nats]``.
    iterations : int
        Newton steps taken over all centrings.
    """

    unique_nats: float
    gap_nats: float
    iterations: int


class _Table:
    """The fixed data of one problem, laid out client-first as ``[s, z, yhat]``."""

    def __init__(self, p: NDArray) -> None:
        q = np.ascontiguousarray(p.transpose(2, 0, 1))  # [s, z, y]
        self.p_zy = q.sum(axis=0)  # [z, y]
        self.p_zs = q.sum(axis=2)  # [s, z]
        self.p_s = self.p_zs.sum(axis=1)
        self.mask = (self.p_zy[None, :, :] > 0) & (self.p_zs[:, :, None] > 0)
        p_z = self.p_zy.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = self.p_zs / self.p_s[:, None]  # P(z|s)
            self.log_cond = np.where(self.p_zs > 0, np.log(cond), 0.0)[:, :, None]
            # Q0 = P(z,y) P(s|z): feasible, and > 0 on every variable cell.
            self.start = np.where(
                self.mask, self.p_zy[None] * (self.p_zs / p_z[None, :])[:, :, None], 0.0
            )
        self.num_cells = int(self.mask.sum())


def _ratio_log(table: _Table, q: NDArray) -> NDArray:
    """log(Q(z,y,s) / (P(z|s) Q(y,s))) on variable cells, 0 elsewhere."""
    q_ys = q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(table.mask, np.log(q / q_ys) - table.log_cond, 0.0)


def _objective(table: _Table, q: NDArray) -> float:
    return float((q * _ratio_log(table, q)).sum())


def _objective_change(table: _Table, q: NDArray, u: NDArray, alpha: float) -> float:
    """f(Q (1 + alpha u)) - f(Q), summed cell by cell so that it keeps its own precision."""
    step = alpha * u
    q_ys = q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        col_step = np.where(q_ys > 0, (q * step).sum(axis=1, keepdims=True) / q_ys, 0.0)
    change = q * (1 + step) * (np.log1p(step) - np.log1p(col_step)) + q * step * _ratio_log(
        table, q
    )
    return float(np.where(table.mask, change, 0.0).sum())


def _newton_step(table: _Table, q: NDArray, t: float) -> tuple[NDArray, float, NDArray, NDArray]:
    """Scaled Newton direction u = dQ / Q of t f - sum log Q, and the multipliers.

    In the scaled variable u the barrier's Hessian is the identity and the
    entropy Hessian is bounded, so the per-client KKT matrices stay well
    conditioned however close Q gets to a face. Returns ``(u, nu, mu)`` where
    ``nu[z, y]`` and ``mu[s, z]`` are the multipliers of the scaled coupling
    and row-sum constraints (rows normalised by P(z,y) and P(z,s)); the middle
    value is the squared Newton decrement.
    """
    num_s, num_z, num_y = q.shape
    n, mask = num_z * num_y, table.mask
    q_ys = q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(mask, q / q_ys, 0.0)  # Q(z|y,s)
    grad = np.where(mask, t * q * _ratio_log(table, q) - 1.0, 0.0).reshape(num_s, n)
    # Hessian of t f in u: t (diag Q - Q(z,y) Q(z',y) / Q(y) within each column y).
    same_y = np.eye(num_y)[None, None, :, None, :]  # [1, 1, y, 1, y']
    outer = (q[:, :, :, None, None] * share[:, None, None, :, :]) * same_y
    hess = t * (np.einsum("szy,zw,yv->szywv", q, np.eye(num_z), np.eye(num_y)) - outer)
    hess = hess.reshape(num_s, n, n) + np.eye(n)
    flat_mask = mask.reshape(num_s, n)
    hess *= flat_mask[:, :, None] & flat_mask[:, None, :]
    hess[:, np.arange(n), np.arange(n)] += ~flat_mask  # fixed cells: u = 0
    # Row sums sum_y Q(z,y,s) u(z,y,s) = 0, normalised by P(z,s).
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = np.where(table.p_zs[:, :, None] > 0, q / table.p_zs[:, :, None], 0.0)
    row_matrix = np.einsum("szy,zw->szwy", rows, np.eye(num_z)).reshape(num_s, num_z, n)
    kkt = np.zeros((num_s, n + num_z, n + num_z))
    kkt[:, :n, :n] = hess
    kkt[:, n:, :n] = row_matrix
    kkt[:, :n, n:] = row_matrix.transpose(0, 2, 1)
    empty_rows = table.p_zs <= 0
    kkt[:, n + np.arange(num_z), n + np.arange(num_z)] = empty_rows  # no cells: mu = 0
    # Symmetric equilibration: the cell rows scale like t Q, the constraint rows like 1.
    scale = 1.0 / np.sqrt(np.maximum(np.abs(kkt).max(axis=2), 1e-300))
    kkt_inv = np.linalg.inv(kkt * scale[:, :, None] * scale[:, None, :])
    kkt_inv *= scale[:, :, None] * scale[:, None, :]
    inv_cells = kkt_inv[:, :n, :n]
    # Coupling sum_s Q(z,y,s) u(z,y,s) = 0, normalised by P(z,y): u = -S (g + C nu).
    with np.errstate(divide="ignore", invalid="ignore"):
        couple = np.where(table.p_zy[None] > 0, q / table.p_zy[None], 0.0).reshape(num_s, n)
    # Right-hand sides of the constraints: the current residuals, so that round-off
    # in earlier steps is corrected rather than accumulated.
    with np.errstate(divide="ignore", invalid="ignore"):
        row_res = np.where(table.p_zs > 0, 1.0 - q.sum(axis=2) / table.p_zs, 0.0)
        couple_res = np.where(table.p_zy > 0, 1.0 - q.sum(axis=0) / table.p_zy, 0.0).ravel()
    base_rhs = np.zeros((num_s, n + num_z))
    base_rhs[:, :n] = -grad
    base_rhs[:, n:] = row_res
    base = np.einsum("sij,sj->si", kkt_inv, base_rhs)[:, :n]
    schur = np.einsum("si,sij,sj->ij", couple, inv_cells, couple)
    rhs = (couple * base).sum(axis=0) - couple_res
    nu = np.linalg.lstsq(schur, rhs, rcond=1e-13)[0]
    full_rhs = base_rhs.copy()
    full_rhs[:, :n] -= couple * nu[None, :]
    solution = np.einsum("sij,sj->si", kkt_inv, full_rhs)
    u = solution[:, :n].reshape(num_s, num_z, num_y) * mask
    decrement = float(-(grad * u.reshape(num_s, n)).sum())
    return u, decrement, nu.reshape(num_z, num_y), solution[:, n:]


def _lower_bound(table: _Table, t: float, nu: NDArray, mu: NDArray) -> float:
    """Dual value of the multipliers of a (nearly) centred point, made dual feasible.

    On the central path the scaled multipliers give λ(z,y) = -nu / (t P(z,y)) and
    μ(z,s) = -mu / (t P(z,s)) with sum_z P(z|s) exp(λ + μ) < 1. Off it, lowering
    μ(., s) by the largest violation of client s restores feasibility, which
    keeps the bound valid at a cost that vanishes as the centring converges.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(table.p_zy > 0, -nu / (t * table.p_zy), 0.0)
        mu_zs = np.where(table.p_zs > 0, -mu / (t * table.p_zs), 0.0)
    exponent = np.where(table.mask, table.log_cond + lam[None] + mu_zs[:, :, None], -np.inf)
    top = exponent.max(axis=1, keepdims=True)
    finite_top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        log_sums = np.log(np.exp(exponent - finite_top).sum(axis=1)) + finite_top[:, 0]
    violation = np.where(np.isfinite(log_sums), log_sums, -np.inf).max(axis=1)
    mu_zs = mu_zs - np.maximum(violation, 0.0)[:, None]
    return float(
        (lam * table.p_zy).sum() + (np.where(table.p_zs > 0, mu_zs, 0.0) * table.p_zs).sum()
    )


def _line_search(table: _Table, q: NDArray, u: NDArray, t: float, decrement: float) -> float:
    """Backtracking (Armijo) step length for t f - sum log Q along Q (1 + alpha u)."""
    shrinking = u < 0
    alpha = min(1.0, _STEP_TO_BOUNDARY / float(-u[shrinking].min())) if shrinking.any() else 1.0
    for _ in range(60):
        step = alpha * u[table.mask]
        change = t * _objective_change(table, q, u, alpha) - float(np.log1p(step).sum())
        if change <= -0.25 * alpha * decrement:
            return alpha
        alpha *= 0.5
    if decrement <= _NOISE_DECREMENT:  # centred as far as float arithmetic resolves
        return 0.0
    raise SolverError(
        "the block barrier method found no descent step (decrement "
        f"{decrement:.3g} at t = {t:.3g}); the table is too ill-conditioned for it"
    )


def unique_information(p: NDArray, *, gap_tol: float = 1e-9) -> BarrierSolution:
    """Minimise I_Q(Z;Ŷ|S) over Q with the marginals P(z,ŷ), P(z,s) of ``p``.

    Parameters
    ----------
    p : numpy.ndarray
        Normalised joint distribution indexed ``[z, yhat, s]``.
    gap_tol : float, default 1e-9
        Stop once the certified duality gap is at most this many nats.

    Returns
    -------
    BarrierSolution
        The upper bound on Uni in nats, the certified gap and the Newton steps.

    Raises
    ------
    SolverError
        If the gap does not close (barrier parameter beyond 1e20) or a line
        search fails.
    """
    table = _Table(p)
    q = table.start
    t = max(table.num_cells, 1) / _START_GAP
    iterations = 0
    while t < 1e20:
        for _ in range(_MAX_NEWTON):
            u, decrement, nu, mu = _newton_step(table, q, t)
            iterations += 1
            if decrement <= 2 * _CENTRED:
                break
            alpha = _line_search(table, q, u, t, decrement)
            if alpha == 0.0:
                break
            q = q * (1.0 + alpha * u)
        upper = _objective(table, q)
        gap = upper - _lower_bound(table, t, nu, mu)
        if gap <= gap_tol:
            return BarrierSolution(upper, max(gap, 0.0), iterations)
        t *= _T_FACTOR
    raise SolverError(
        f"the block barrier method stopped with duality gap {gap:.3g} nats "
        f"> {gap_tol:g} after {iterations} Newton steps"
    )
