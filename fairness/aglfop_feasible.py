"""Numpy measures of an AGLFOP classifier and the guard that keeps it within budget.

Hamman & Dutta, ICLR 2024 (see :mod:`fedsim.fairness.aglfop`).  A classifier is a joint
``Q[s, z, y, ŷ]`` whose marginal over ``ŷ`` is the data's ``P(s, z, y)``.

Why a guard.  Near a zero budget the exponential-cone program is ill-conditioned: for
budgets below ~1e-7 bits Clarabel often stops at reduced accuracy, and its answer can be
*below* the optimum at budget 0 (which is feasible for every larger budget) or slightly
*over* the budget.  :func:`guard` repairs both using the budget-0 solution ``Q0`` of the
same problem (the linear program with independence constraints):

* ``I(Z; Ŷ)`` is convex in ``Q(ŷ | z)`` for fixed ``P(z)`` and ``I(Z; Ŷ | S)`` is convex in
  ``Q(ŷ | s, z)`` for fixed ``P(s, z)``; every mixture ``(1 - t) Q0 + t Q`` keeps the
  marginals, so its disparities are convex in ``t`` and zero at ``t = 0``.  The feasible
  weights form an interval ``[0, t*]``, found by bisection; accuracy is linear in ``t``.
* The answer is the better of ``Q0`` and the largest feasible mixture, so it is never
  below the budget-0 optimum and never over budget (up to :data:`BUDGET_TOL_BITS`).

Mixtures also stay inside linear side constraints shared by ``Q`` and ``Q0`` (the ROC
region of the model-specific variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BUDGET_TOL_BITS",
    "GuardResult",
    "accuracy",
    "disparities_bits",
    "entropy_bits",
    "excess_bits",
    "guard",
]

FloatArray = NDArray[np.float64]

#: Disparity above the budget (bits) that a returned classifier may have: floating-point
#: error of the numpy recomputation, not solver tolerance.
BUDGET_TOL_BITS = 1e-12
#: Bisection steps on the mixture weight (2**-60: the weight is exact to double precision).
_BISECTION_STEPS = 60


@dataclass(frozen=True)
class GuardResult:
    """A classifier within budget and how it was obtained.

    Attributes
    ----------
    q : numpy.ndarray
        The classifier ``Q[s, z, y, ŷ]``.
    guard : str
        ``"none"`` (the solver's answer, within budget and not below ``Q0``), ``"eps0"``
        (the budget-0 solution) or ``"mixture"`` (``(1 - t) Q0 + t Q``).
    weight : float
        The mixture weight ``t`` on the solver's answer (1 for ``"none"``, 0 for ``"eps0"``).
    """

    q: FloatArray
    guard: str
    weight: float


def accuracy(q: FloatArray) -> float:
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


def disparities_bits(q: FloatArray) -> tuple[float, float]:
    """``(I(Z; Ŷ), I(Z; Ŷ | S))`` in bits of a joint ``Q[s, z, y, ŷ]``."""
    szh = q.sum(axis=2)
    global_bits = _mi_bits(szh.sum(axis=0))
    local_bits = sum(_mi_bits(table) for table in szh)
    return max(global_bits, 0.0), max(float(local_bits), 0.0)


def entropy_bits(masses: FloatArray) -> float:
    """``Σ m log2(M / m)``: entropy of ``masses`` weighted by their total ``M``."""
    total = masses.sum()
    nz = masses[masses > 0]
    return float(np.sum(nz * np.log2(total / nz)))


def excess_bits(q: FloatArray, eps_global: float, eps_local: float) -> float:
    """``max(I(Z;Ŷ) - eps_global, I(Z;Ŷ|S) - eps_local)``: > 0 means over budget."""
    global_bits, local_bits = disparities_bits(q)
    return max(global_bits - eps_global, local_bits - eps_local)


def guard(q: FloatArray, q_zero: FloatArray, eps_global: float, eps_local: float) -> GuardResult:
    """The better of ``q_zero`` and the largest within-budget mixture towards ``q``.

    Parameters
    ----------
    q : numpy.ndarray
        The solver's classifier ``Q[s, z, y, ŷ]`` (possibly inaccurate or over budget).
    q_zero : numpy.ndarray
        The budget-0 solution of the same problem (same marginals, same side constraints);
        its disparities are within any budget.
    eps_global, eps_local : float
        Budgets in bits (``inf`` = unconstrained).

    Returns
    -------
    GuardResult
        Accuracy ``>= accuracy(q_zero)`` and disparities ``<= budget + BUDGET_TOL_BITS``
        whenever ``q_zero`` itself is within that tolerance.
    """
    acc, acc_zero = accuracy(q), accuracy(q_zero)
    if acc <= acc_zero:
        return GuardResult(q_zero, "eps0" if acc < acc_zero else "none", 0.0)
    if excess_bits(q, eps_global, eps_local) <= BUDGET_TOL_BITS:
        return GuardResult(q, "none", 1.0)
    lo, hi = 0.0, 1.0  # excess(lo) <= 0 < excess(hi); the feasible weights are [0, t*]
    step = q - q_zero
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if excess_bits(q_zero + mid * step, eps_global, eps_local) <= 0.0:
            lo = mid
        else:
            hi = mid
    if lo == 0.0:
        return GuardResult(q_zero, "eps0", 0.0)
    return GuardResult(q_zero + lo * step, "mixture", lo)
