"""Shannon information measures of discrete joint distributions.

One pure function per quantity, all sharing one convention: a distribution is a
numpy array whose axes are the random variables, in the order the function names
them (``mutual_information(joint_xy)`` reads axis 0 as X and axis 1 as Y;
``conditional_mutual_information(joint_xyz)`` computes I(X;Y|Z) over axes
``[x, y, z]``). Cells may hold probabilities or raw counts: every table is
normalised to sum to one first, so counts and their probabilities give the same
answer. Results are in bits unless ``base`` says otherwise, and ``0 log 0 = 0``
exactly (zero cells contribute nothing, never NaN).

These are the quantities of Hamman & Dutta, "Demystifying Local and Global
Fairness Trade-offs in Federated Learning Using Partial Information
Decomposition" (ICLR 2024): global disparity I(Z;Ŷ) and local disparity
I(Z;Ŷ|S).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedsim.errors import DataError

__all__ = [
    "conditional_entropy",
    "conditional_mutual_information",
    "entropy",
    "mutual_information",
    "normalize",
    "validate_table",
]


def validate_table(table: ArrayLike, ndim: int | None = None, name: str = "table") -> NDArray:
    """Check that ``table`` is a usable count or probability table.

    Parameters
    ----------
    table : array_like
        Non-negative, finite cells; not all zero.
    ndim : int, optional
        Required number of axes; any number when omitted.
    name : str, default "table"
        What to call the table in error messages.

    Returns
    -------
    numpy.ndarray
        The table as a float64 array, not normalised.

    Raises
    ------
    DataError
        If the table is not numeric, has the wrong number of axes, holds a
        negative, NaN or infinite cell, or sums to zero.
    """
    try:
        arr = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{name} must be a numeric array of counts or probabilities: {exc}"
        ) from exc
    if ndim is not None and arr.ndim != ndim:
        raise DataError(
            f"{name} must have {ndim} axes, got an array of shape {arr.shape}; "
            "see the function's docstring for the axis order"
        )
    if arr.size == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}); it needs at least one cell")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} holds NaN or infinite cells; counts must be finite")
    if np.any(arr < 0):
        raise DataError(f"{name} holds negative cells (min {arr.min():g}); counts must be >= 0")
    if arr.sum() <= 0:
        raise DataError(f"{name} sums to zero; it needs at least one positive count")
    return arr


def normalize(table: ArrayLike, ndim: int | None = None, name: str = "table") -> NDArray:
    """Return ``table`` validated and scaled to a probability distribution.

    Parameters
    ----------
    table : array_like
        Counts or probabilities (see :func:`validate_table`).
    ndim : int, optional
        Required number of axes.
    name : str, default "table"
        What to call the table in error messages.

    Returns
    -------
    numpy.ndarray
        Float64 array of the same shape that sums to one.

    Raises
    ------
    DataError
        If the table is invalid (see :func:`validate_table`).
    """
    arr = validate_table(table, ndim, name)
    return arr / arr.sum()


def _log_factor(base: float) -> float:
    """Return the divisor turning natural logs into logs to ``base``."""
    if not (base > 0 and base != 1 and math.isfinite(base)):
        raise ValueError(f"base must be a positive finite number other than 1, got {base!r}")
    return math.log(base)


def _sum_plogratio(p: NDArray, *log_terms: tuple[int, NDArray]) -> float:
    """Return ``sum p * (ln p + sum_i sign_i ln m_i)`` over cells with ``p > 0``, in nats.

    Each ``(sign, m)`` is a marginal of ``p`` broadcast against it, positive
    wherever ``p`` is, so the only cells skipped are the ``0 log 0`` ones. Logs
    are summed rather than marginals multiplied so that products of tiny
    marginals cannot underflow to zero.
    """
    mask = p > 0
    log_ratio = np.log(p[mask])
    for sign, marginal in log_terms:
        log_ratio += sign * np.log(np.broadcast_to(marginal, p.shape)[mask])
    value = float(np.sum(p[mask] * log_ratio))
    # Mutual informations are non-negative; a negative sum is float round-off.
    return max(value, 0.0)


def entropy(distribution: ArrayLike, base: float = 2.0) -> float:
    """Joint Shannon entropy H of all axes of ``distribution``.

    Parameters
    ----------
    distribution : array_like
        Counts or probabilities of any shape; every cell is one outcome.
    base : float, default 2.0
        Logarithm base (2: bits, ``math.e``: nats).

    Returns
    -------
    float
        ``-sum p log p``, with ``0 log 0 = 0``.

    Raises
    ------
    DataError
        If the table is invalid (see :func:`validate_table`).
    """
    p = normalize(distribution, name="distribution").ravel()
    p = p[p > 0]
    return max(float(-np.sum(p * np.log(p))), 0.0) / _log_factor(base)


def conditional_entropy(joint_xy: ArrayLike, base: float = 2.0) -> float:
    """Conditional entropy H(X|Y) of a 2-D table with axes ``[x, y]``.

    Parameters
    ----------
    joint_xy : array_like
        Counts or probabilities, shape ``(|X|, |Y|)``.
    base : float, default 2.0
        Logarithm base.

    Returns
    -------
    float
        ``H(X, Y) - H(Y)``, computed cell-wise as ``-sum p(x,y) log p(x|y)``.

    Raises
    ------
    DataError
        If the table is invalid or not 2-D.
    """
    p = normalize(joint_xy, 2, "joint_xy")
    p_y = p.sum(axis=0, keepdims=True)
    mask = p > 0
    ratio = p / np.where(p_y > 0, p_y, 1.0)
    return max(float(-np.sum(p[mask] * np.log(ratio[mask]))), 0.0) / _log_factor(base)


def mutual_information(joint_xy: ArrayLike, base: float = 2.0) -> float:
    """Mutual information I(X;Y) of a 2-D table with axes ``[x, y]``.

    Parameters
    ----------
    joint_xy : array_like
        Counts or probabilities, shape ``(|X|, |Y|)``.
    base : float, default 2.0
        Logarithm base.

    Returns
    -------
    float
        ``sum p(x,y) log [p(x,y) / (p(x) p(y))]``, at least 0.

    Raises
    ------
    DataError
        If the table is invalid or not 2-D.
    """
    p = normalize(joint_xy, 2, "joint_xy")
    p_x = p.sum(axis=1, keepdims=True)
    p_y = p.sum(axis=0, keepdims=True)
    return _sum_plogratio(p, (-1, p_x), (-1, p_y)) / _log_factor(base)


def conditional_mutual_information(joint_xyz: ArrayLike, base: float = 2.0) -> float:
    """Conditional mutual information I(X;Y|Z) of a 3-D table with axes ``[x, y, z]``.

    Parameters
    ----------
    joint_xyz : array_like
        Counts or probabilities, shape ``(|X|, |Y|, |Z|)``.
    base : float, default 2.0
        Logarithm base.

    Returns
    -------
    float
        ``sum p(x,y,z) log [p(x,y,z) p(z) / (p(x,z) p(y,z))]``, at least 0.

    Raises
    ------
    DataError
        If the table is invalid or not 3-D.
    """
    p = normalize(joint_xyz, 3, "joint_xyz")
    p_xz = p.sum(axis=1, keepdims=True)
    p_yz = p.sum(axis=0, keepdims=True)
    p_z = p.sum(axis=(0, 1), keepdims=True)
    return _sum_plogratio(p, (1, p_z), (-1, p_xz), (-1, p_yz)) / _log_factor(base)
