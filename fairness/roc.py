"""ROC points of a score model and the ROC regions the AGLFOP accepts (pure numpy).

Model-specific variant of the AGLFOP (Hamman & Dutta, ICLR 2024, see
:mod:`fedsim.fairness.aglfop`): for a binary label, each group's rates ``(FPR_z, TPR_z)`` are
restricted to the convex hull of a trained score model's ROC points.  This module builds
those points (:func:`roc_points`) and checks a user-given region
(:func:`validate_roc_region`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedsim.errors import DataError

__all__ = ["hull_points", "roc_points", "validate_roc_region"]

FloatArray = NDArray[np.float64]


def roc_points(
    scores: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    num_groups: int | None = None,
) -> list[FloatArray]:
    """ROC curve points ``(fpr, tpr)`` of a score model, per group.

    Thresholds run over every distinct score (predict 1 when ``score >= t``); tied scores
    move together.  Each curve starts at ``(0, 0)`` and ends at ``(1, 1)``.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Real-valued scores, larger meaning "more likely 1".
    labels : array_like, shape (n,)
        True binary labels in {0, 1}.
    groups : array_like, shape (n,), optional
        Integer group codes ``0 .. num_groups - 1``; ``None`` means one group.
    num_groups : int, optional
        Number of groups (default ``max(groups) + 1``).

    Returns
    -------
    list of numpy.ndarray
        ``out[z]`` has shape ``(k_z, 2)``, columns fpr and tpr, fpr non-decreasing.

    Raises
    ------
    DataError
        Mismatched lengths, non-binary labels, non-finite scores, bad group codes, or a
        group without positives or negatives (its ROC curve is undefined).
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    g = np.zeros(s.shape, dtype=int) if groups is None else np.asarray(groups)
    if s.ndim != 1 or y.shape != s.shape or g.shape != s.shape:
        raise DataError(
            f"scores, labels and groups must be 1-D of one length; got shapes {s.shape}, "
            f"{y.shape}, {g.shape}."
        )
    if not np.all(np.isfinite(s)):
        raise DataError("scores contain NaN or infinity; drop or impute those samples.")
    if not np.all((y == 0) | (y == 1)):
        raise DataError(f"labels must be 0 or 1; got values {np.unique(y)[:10].tolist()}.")
    if s.size and (not np.all(g == np.round(g)) or g.min() < 0):
        raise DataError("groups must be non-negative integer codes 0 .. num_groups - 1.")
    g = g.astype(int)
    n_groups = int(g.max()) + 1 if num_groups is None and g.size else int(num_groups or 0)
    if n_groups < 1 or (g.size and g.max() >= n_groups):
        raise DataError(f"num_groups={num_groups} does not cover the group codes given.")
    return [_roc_curve(s[g == z], y[g == z].astype(float), z) for z in range(n_groups)]


def _roc_curve(scores: FloatArray, labels: FloatArray, group: int) -> FloatArray:
    positives, negatives = labels.sum(), (1.0 - labels).sum()
    if positives == 0 or negatives == 0:
        raise DataError(
            f"group {group} has {int(positives)} positives and {int(negatives)} negatives; "
            "an ROC curve needs both."
        )
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], labels[order]
    block_ends = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    tpr = np.r_[0.0, np.cumsum(hits)[block_ends] / positives]
    fpr = np.r_[0.0, np.cumsum(1.0 - hits)[block_ends] / negatives]
    return np.column_stack([fpr, tpr])


def hull_points(points: ArrayLike) -> FloatArray:
    """Vertices of the convex hull of 2-D ``points`` (Andrew's monotone chain).

    The AGLFOP restricts rates to the convex hull of the ROC points, so only the hull's
    vertices matter; a score model with thousands of distinct scores has a few dozen,
    which keeps the cone program small.

    Parameters
    ----------
    points : array_like, shape (k, 2)
        Points ``(fpr, tpr)``.

    Returns
    -------
    numpy.ndarray
        The hull's vertices, counter-clockwise from the lowest-leftmost point (collinear
        points dropped; one or two points when the hull is degenerate).
    """
    pts = np.unique(np.asarray(points, dtype=float).reshape(-1, 2), axis=0)  # sorted by x, y
    if len(pts) <= 2:
        return pts

    def chain(ordered: FloatArray) -> list[FloatArray]:
        out: list[FloatArray] = []
        for p in ordered:
            while len(out) >= 2 and _cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = chain(pts), chain(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _cross(o: FloatArray, a: FloatArray, b: FloatArray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def validate_roc_region(
    roc_region: ArrayLike | Sequence[ArrayLike], shape: tuple[int, ...]
) -> list[FloatArray]:
    """Check an ROC region against counts of ``shape`` and return one array per group.

    Parameters
    ----------
    roc_region : array_like or sequence of array_like
        ROC points ``(fpr, tpr)``: one ``(k, 2)`` array per group, or one array shared
        by all groups.
    shape : tuple of int
        Shape ``(num_clients, num_groups, num_classes)`` of the counts ``[s, z, y]``.

    Returns
    -------
    list of numpy.ndarray
        ``out[z]`` of shape ``(k_z, 2)``, one per group.

    Raises
    ------
    DataError
        The label is not binary, the number of groups differs, or the points are not
        ``(k, 2)`` arrays of rates in ``[0, 1]``.
    """
    n_z, n_y = shape[1], shape[2]
    if n_y != 2:
        raise DataError(f"roc_region needs a binary label (2 classes); counts have {n_y}.")
    try:
        dense = np.asarray(roc_region, dtype=float)
    except ValueError:  # ragged: one array per group with different lengths
        dense = None
    if dense is not None and dense.ndim == 2:
        per_group = [dense] * n_z
    elif dense is not None and dense.ndim == 3:
        per_group = list(dense)
    else:
        per_group = [np.asarray(pts, dtype=float) for pts in roc_region]  # type: ignore[union-attr]
    if len(per_group) != n_z:
        raise DataError(f"roc_region has {len(per_group)} groups; counts have {n_z}.")
    for z, pts in enumerate(per_group):
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
            raise DataError(f"roc_region[{z}] must have shape (k, 2) of (fpr, tpr); {pts.shape}.")
        if not np.all(np.isfinite(pts)) or np.any(pts < 0) or np.any(pts > 1):
            raise DataError(f"roc_region[{z}] rates must lie in [0, 1].")
    return per_group
