"""ROC points of a score model (by hand and against scikit-learn) and ROC-region checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.errors import DataError
from fedsim.fairness.roc import hull_points, roc_points, validate_roc_region

SQUARE = [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)]
CHANCE = [(0.0, 0.0), (1.0, 1.0)]


def test_roc_points_by_hand_with_ties() -> None:
    curve = roc_points([0.9, 0.8, 0.8, 0.3], [1, 1, 0, 0])[0]
    np.testing.assert_allclose(curve, [[0, 0], [0, 0.5], [0.5, 1], [1, 1]])


def test_roc_points_match_sklearn_per_group() -> None:
    from sklearn import metrics  # scikit-learn is a dependency of fedsim

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=300)
    groups = rng.integers(0, 3, size=300)
    scores = np.round(labels + rng.normal(size=300), 1)  # rounding makes ties
    curves = roc_points(scores, labels, groups)
    assert len(curves) == 3
    for z, curve in enumerate(curves):
        fpr, tpr, _ = metrics.roc_curve(
            labels[groups == z], scores[groups == z], drop_intermediate=False
        )
        np.testing.assert_allclose(curve, np.column_stack([fpr, tpr]))


def test_roc_points_reject_a_group_without_negatives() -> None:
    with pytest.raises(DataError, match="group 1 has 2 positives and 0 negatives"):
        roc_points([0.1, 0.2, 0.3, 0.4], [0, 1, 1, 1], [0, 0, 1, 1])
    with pytest.raises(DataError, match="0 or 1"):
        roc_points([0.1, 0.2], [0, 2])


def test_region_shared_by_all_groups_or_one_per_group() -> None:
    shared = validate_roc_region(SQUARE, (3, 2, 2))
    assert len(shared) == 2
    for pts in shared:
        np.testing.assert_array_equal(pts, SQUARE)
    ragged = validate_roc_region([SQUARE, CHANCE], (3, 2, 2))
    assert [pts.shape for pts in ragged] == [(4, 2), (2, 2)]


def test_region_errors() -> None:
    with pytest.raises(DataError, match="binary label"):
        validate_roc_region(SQUARE, (3, 3, 3))
    with pytest.raises(DataError, match="3 groups"):
        validate_roc_region([SQUARE, SQUARE, SQUARE], (2, 2, 2))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        validate_roc_region([(0.0, 0.0), (1.2, 1.0)], (2, 2, 2))
    with pytest.raises(DataError, match=r"shape \(k, 2\)"):
        validate_roc_region([[0.0, 0.0, 0.0]], (2, 2, 2))


def test_hull_points_keep_the_region_and_drop_interior_points() -> None:
    from scipy.optimize import linprog

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, size=500)
    curve = roc_points(labels + rng.normal(size=500), labels)[0]
    hull = hull_points(curve)
    assert 3 <= len(hull) < len(curve) / 4  # few vertices, all from the curve
    assert all(np.any(np.all(curve == v, axis=1)) for v in hull)
    for point in curve:  # every ROC point is a convex combination of the vertices
        a_eq = np.vstack([hull.T, np.ones(len(hull))])
        res = linprog(np.zeros(len(hull)), A_eq=a_eq, b_eq=np.r_[point, 1.0], bounds=(0, None))
        assert res.status == 0, point
    np.testing.assert_array_equal(hull_points(CHANCE), CHANCE)  # degenerate: two points
    np.testing.assert_array_equal(hull_points([*CHANCE, (0.5, 0.5)]), CHANCE)  # collinear dropped
