"""AGLFOP: closed forms, an independent LP at zero budgets, feasibility and properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq, linprog

from fedsim.errors import DataError, SolverError
from fedsim.fairness.aglfop import AGLFOPResult, frontier, solve
from fedsim.fairness.aglfop_program import AGLFOPModel
from fedsim.fairness.roc import roc_points

ACC_TOL = 1e-6
FEAS_TOL = 1e-7  # bits
SQUARE = [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)]
CHANCE = [(0.0, 0.0), (1.0, 1.0)]


def _counts(rng: np.random.Generator, num_clients: int, tilt: float = 3.0) -> np.ndarray:
    """Random binary [s, z, y] counts with Z correlated with Y (z = y cells boosted)."""
    counts = rng.integers(5, 60, size=(num_clients, 2, 2)).astype(float)
    counts[:, 0, 0] *= tilt
    counts[:, 1, 1] *= tilt
    return counts


RNG = np.random.default_rng(7)
TWO_CLIENTS = _counts(RNG, 2)
THREE_CLIENTS = _counts(RNG, 3)
# Three groups, three labels, and client 1 lacks group 2 entirely (P(z=2 | s=1) = 0).
MULTI = RNG.integers(1, 40, size=(3, 3, 3)).astype(float)
MULTI[:, 0, 0] *= 4
MULTI[1, 2, :] = 0.0
# Zero cells: P(s, z, y) = 0 in places, and client 2 has a single group.
SPARSE = np.array(
    [
        [[30.0, 0.0], [5.0, 40.0]],
        [[20.0, 10.0], [0.0, 25.0]],
        [[0.0, 0.0], [12.0, 3.0]],
    ]
)


def _mi_bits(joint: np.ndarray) -> float:
    """I(A;B) in bits of a 2-D joint table (independent of the module under test)."""
    joint = joint / joint.sum()
    expected = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log2(joint[nz] / expected[nz])))


def _disparities(q: np.ndarray) -> tuple[float, float]:
    szh = q.sum(axis=2)
    local = sum(szh[s].sum() * _mi_bits(szh[s]) for s in range(q.shape[0]) if szh[s].sum() > 0)
    return _mi_bits(szh.sum(axis=0)), local


def _lp_reference(p: np.ndarray, global_zero: bool, local_zero: bool) -> float:
    """Max accuracy with the independence constraints as linear equalities (HiGHS)."""
    p = p / p.sum()
    n_s, n_z, n_y = p.shape
    shape = (n_s, n_z, n_y, n_y)
    index = np.arange(np.prod(shape)).reshape(shape)
    rows: list[np.ndarray] = []
    rhs: list[float] = []

    def add(coefficients: dict[int, float], value: float = 0.0) -> None:
        row = np.zeros(index.size)
        for k, c in coefficients.items():
            row[k] += c
        rows.append(row)
        rhs.append(value)

    for s, z, y in np.ndindex(p.shape):  # Σ_ŷ Q(s,z,y,ŷ) = P(s,z,y)
        add({int(k): 1.0 for k in index[s, z, y, :]}, float(p[s, z, y]))
    p_z, p_sz = p.sum(axis=(0, 2)), p.sum(axis=2)
    for h in range(n_y):
        if global_zero:  # Q(z, ŷ) = P(z) Q(ŷ)
            for z in range(n_z):
                row = np.zeros(index.size)
                row[index[:, z, :, h].ravel()] += 1.0
                row[index[:, :, :, h].ravel()] -= p_z[z]
                rows.append(row)
                rhs.append(0.0)
        if local_zero:  # Q(s, z, ŷ) = P(z|s) Q(s, ŷ)
            for s, z in np.ndindex(n_s, n_z):
                row = np.zeros(index.size)
                row[index[s, z, :, h].ravel()] += 1.0
                row[index[s, :, :, h].ravel()] -= p_sz[s, z] / p_sz[s].sum()
                rows.append(row)
                rhs.append(0.0)
    cost = np.zeros(index.size)
    for y in range(n_y):
        cost[index[:, :, y, y].ravel()] = -1.0
    res = linprog(cost, A_eq=np.array(rows), b_eq=np.array(rhs), bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    return -float(res.fun)


def _assert_feasible(result: AGLFOPResult, counts: np.ndarray, eps_g: float, eps_l: float) -> None:
    p = counts / counts.sum()
    q = result.q
    assert q.shape == (*p.shape, p.shape[2])
    assert q.min() >= -1e-9
    np.testing.assert_allclose(q.sum(axis=3), p, atol=1e-9)
    global_bits, local_bits = _disparities(q)
    assert global_bits <= eps_g + FEAS_TOL
    assert local_bits <= eps_l + FEAS_TOL
    assert result.global_disparity == pytest.approx(global_bits, abs=1e-9)
    assert result.local_disparity == pytest.approx(local_bits, abs=1e-9)
    assert result.accuracy == pytest.approx(sum(q[..., k, k].sum() for k in range(q.shape[2])))


# --- closed forms --------------------------------------------------------------------------


def test_budgets_just_above_the_perfect_classifier_give_accuracy_one() -> None:
    p = THREE_CLIENTS / THREE_CLIENTS.sum()
    q_perfect = np.zeros((*p.shape, 2))
    for y in range(2):
        q_perfect[:, :, y, y] = p[:, :, y]
    global_bits, local_bits = _disparities(q_perfect)
    assert min(global_bits, local_bits) > 0.01  # the budgets below are real cone constraints
    result = solve(THREE_CLIENTS, global_bits + 1e-4, local_bits + 1e-4, compute_pid=False)
    assert result.accuracy == pytest.approx(1.0, abs=ACC_TOL)
    tight = solve(THREE_CLIENTS, global_bits - 1e-3, local_bits + 1e-4, compute_pid=False)
    assert tight.accuracy < 1.0 - 1e-5


@pytest.mark.parametrize("counts", [TWO_CLIENTS, MULTI, SPARSE], ids=["2x2x2", "3x3x3", "sparse"])
def test_ten_bits_is_unconstrained(counts: np.ndarray) -> None:
    result = solve(counts, 10.0, 10.0, compute_pid=False)
    assert result.accuracy == pytest.approx(1.0, abs=ACC_TOL)
    assert result.status == "optimal" and result.solver == "CLARABEL"


def test_sensitive_attribute_independent_of_client_and_label_costs_nothing() -> None:
    p_sy = np.array([[0.3, 0.1], [0.15, 0.25], [0.05, 0.15]])
    p_z = np.array([0.35, 0.65])
    counts = p_sy[:, None, :] * p_z[None, :, None]
    result = solve(counts, 0.0, 0.0, compute_pid=False)
    assert result.accuracy == pytest.approx(1.0, abs=ACC_TOL)


def _copy_label(p_sy: np.ndarray) -> np.ndarray:
    """Counts with Z = Y deterministically."""
    n_s, n_y = p_sy.shape
    counts = np.zeros((n_s, n_y, n_y))
    for y in range(n_y):
        counts[:, y, y] = p_sy[:, y]
    return counts


P_SY = np.array([[0.30, 0.10], [0.05, 0.25], [0.12, 0.18]])


def test_copy_label_with_zero_global_budget_reaches_only_the_majority_label() -> None:
    # I(Y;Ŷ) = 0 forces Ŷ ⊥ Y, so accuracy = Σ_y P(y) Q(ŷ=y) <= max_y P(y), met by a constant.
    result = solve(_copy_label(P_SY), 0.0, math.inf, compute_pid=False)
    assert result.accuracy == pytest.approx(P_SY.sum(axis=0).max(), abs=ACC_TOL)


def test_copy_label_with_zero_local_budget_reaches_each_clients_majority() -> None:
    # I(Y;Ŷ|S) = 0 forces Ŷ ⊥ Y | S: the best is each client's own majority label.
    result = solve(_copy_label(P_SY), math.inf, 0.0, compute_pid=False)
    assert result.accuracy == pytest.approx(P_SY.max(axis=1).sum(), abs=ACC_TOL)
    assert result.accuracy > P_SY.sum(axis=0).max() + 0.05  # the two closed forms differ


def _hamming_distortion(eps_bits: float, num_labels: int) -> float:
    """Inverse of the uniform-source rate-distortion R(D) = log m - h(D) - D log(m-1)."""

    def rate(d: float) -> float:
        h = -d * math.log2(d) - (1 - d) * math.log2(1 - d)
        return math.log2(num_labels) - h - d * math.log2(num_labels - 1) - eps_bits

    return brentq(rate, 1e-12, 1 - 1 / num_labels - 1e-12, xtol=1e-14)


@pytest.mark.parametrize(("num_labels", "eps"), [(2, 0.5), (2, 0.1), (3, 0.4)])
def test_single_client_copy_label_matches_rate_distortion(num_labels: int, eps: float) -> None:
    counts = _copy_label(np.full((1, num_labels), 1.0))
    expected = 1.0 - _hamming_distortion(eps, num_labels)
    for eps_g, eps_l in [(eps, eps), (eps, math.inf), (math.inf, eps)]:
        result = solve(counts, eps_g, eps_l, compute_pid=False)
        assert result.accuracy == pytest.approx(expected, abs=ACC_TOL)
        _assert_feasible(result, counts, eps_g, eps_l)


# --- zero budgets against an independent linear program --------------------------------------


@pytest.mark.parametrize(
    "counts", [TWO_CLIENTS, THREE_CLIENTS, MULTI, SPARSE], ids=["2c", "3c", "3x3x3", "sparse"]
)
@pytest.mark.parametrize(
    ("eps_g", "eps_l"), [(0.0, 0.0), (0.0, math.inf), (math.inf, 0.0)], ids=["both", "g", "l"]
)
def test_zero_budgets_match_linprog(counts: np.ndarray, eps_g: float, eps_l: float) -> None:
    result = solve(counts, eps_g, eps_l, compute_pid=False)
    expected = _lp_reference(counts, global_zero=eps_g == 0.0, local_zero=eps_l == 0.0)
    assert result.accuracy == pytest.approx(expected, abs=ACC_TOL)
    _assert_feasible(result, counts, eps_g, eps_l)


def test_zero_budget_limit_of_the_cone_matches_linprog() -> None:
    # A tiny positive budget goes through the exponential cone, not the LP.
    expected = _lp_reference(TWO_CLIENTS, True, True)
    result = solve(TWO_CLIENTS, 1e-9, 1e-9, compute_pid=False)
    assert expected - 1e-7 <= result.accuracy <= expected + 2e-4  # accuracy ~ sqrt(eps)


# --- feasibility and properties ------------------------------------------------------------


@pytest.mark.parametrize("counts", [THREE_CLIENTS, MULTI, SPARSE], ids=["3c", "3x3x3", "sparse"])
@pytest.mark.parametrize(("eps_g", "eps_l"), [(1e-4, 1e-3), (0.01, 0.002), (0.05, 0.3)])
def test_solution_is_feasible(counts: np.ndarray, eps_g: float, eps_l: float) -> None:
    result = solve(counts, eps_g, eps_l, compute_pid=False)
    _assert_feasible(result, counts, eps_g, eps_l)
    assert result.status == "optimal"
    assert 0 <= result.duality_gap < 1e-6


def test_zero_cells_stay_zero() -> None:
    result = solve(SPARSE, 0.01, 0.01, compute_pid=False)
    assert np.all(result.q[SPARSE == 0] == 0.0)
    assert np.all(solve(MULTI, 0.0, 0.0, compute_pid=False).q[1, 2] == 0.0)


def test_optimum_is_monotone_in_each_budget() -> None:
    grid = [0.0, 1e-3, 0.01, 0.03, 0.1]
    table = frontier(THREE_CLIENTS, grid, grid, compute_pid=False)
    acc = table.pivot(index="eps_global", columns="eps_local", values="accuracy").to_numpy()
    assert np.all(np.diff(acc, axis=0) >= -1e-7)
    assert np.all(np.diff(acc, axis=1) >= -1e-7)
    assert acc[-1, -1] > acc[0, 0] + 0.01  # the budgets do bind


def test_single_client_global_and_local_budgets_coincide() -> None:
    counts = THREE_CLIENTS[:1]
    for eps in (0.0, 0.003, 0.03):
        a = solve(counts, eps, 1.0, compute_pid=False).accuracy
        b = solve(counts, 1.0, eps, compute_pid=False).accuracy
        assert a == pytest.approx(b, abs=ACC_TOL)


@settings(max_examples=20, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=12, max_size=12),
    eps_g=st.sampled_from([0.0, 1e-3, 0.02, 0.2, math.inf]),
    eps_l=st.sampled_from([0.0, 1e-3, 0.02, 0.2, math.inf]),
)
def test_random_instances_are_feasible_and_beat_a_constant(
    counts: list[int], eps_g: float, eps_l: float
) -> None:
    table = np.array(counts, dtype=float).reshape(3, 2, 2)
    table[:, 0, 0] += 1.0  # every client has data
    result = solve(table, eps_g, eps_l, compute_pid=False)
    _assert_feasible(result, table, eps_g, eps_l)
    p_y = table.sum(axis=(0, 1)) / table.sum()
    assert p_y.max() - 1e-7 <= result.accuracy <= 1.0 + 1e-9  # a constant is always fair


# --- tiny budgets: the guard against inaccurate solves ---------------------------------------

TINY_RNG = np.random.default_rng(7)  # the tables of `python bench/aglfop.py --skip-timing`
TINY_TABLES = {f"{k}c": _counts(TINY_RNG, k) for k in (2, 3, 5, 10)}
TINY_BUDGETS = [0.0, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 3e-8, 1e-7]
TINY_TOL_BITS = 1e-12  # = aglfop_feasible.BUDGET_TOL_BITS: float error, not solver tolerance
TOP = TINY_BUDGETS[-1]


@pytest.mark.parametrize("name", list(TINY_TABLES))
def test_tiny_budgets_are_never_below_budget_zero_nor_over_budget(name: str) -> None:
    counts = TINY_TABLES[name]
    floors: dict[tuple[bool, bool], float] = {}
    for eps in TINY_BUDGETS:
        for eps_g, eps_l in [(eps, eps), (eps, math.inf), (math.inf, eps), (eps, TOP), (TOP, eps)]:
            key = (math.isfinite(eps_g), math.isfinite(eps_l))
            if key not in floors:  # budget 0 wherever a budget is finite: feasible for all
                zero_g, zero_l = (0.0 if finite else math.inf for finite in key)
                floors[key] = solve(counts, zero_g, zero_l, compute_pid=False).accuracy
            result = solve(counts, eps_g, eps_l, compute_pid=False)
            assert result.accuracy >= floors[key] - 1e-12, (eps_g, eps_l, result.status)
            global_bits, local_bits = _disparities(result.q)
            assert global_bits <= eps_g + TINY_TOL_BITS, (eps_g, eps_l, result.guard)
            assert local_bits <= eps_l + TINY_TOL_BITS, (eps_g, eps_l, result.guard)
            np.testing.assert_allclose(result.q.sum(axis=3), counts / counts.sum(), atol=1e-12)
            assert result.accuracy == pytest.approx(float(np.einsum("szkk->", result.q)))


def test_guard_mixes_back_inside_the_budget_and_keeps_the_better_point() -> None:
    from fedsim.fairness.aglfop_feasible import accuracy, disparities_bits, guard

    p = TWO_CLIENTS / TWO_CLIENTS.sum()
    zero = solve(TWO_CLIENTS, 0.0, 0.0, compute_pid=False).q
    free = solve(TWO_CLIENTS, 10.0, 10.0, compute_pid=False).q  # accuracy 1, disparity > 0
    budget = 0.1 * disparities_bits(free)[0]
    mixed = guard(free, zero, budget, math.inf)
    assert mixed.guard == "mixture" and 0.0 < mixed.weight < 1.0
    assert disparities_bits(mixed.q)[0] <= budget
    assert disparities_bits(mixed.q)[0] == pytest.approx(budget, rel=1e-6)  # largest weight
    assert accuracy(mixed.q) == pytest.approx(
        (1 - mixed.weight) * accuracy(zero) + mixed.weight * accuracy(free)
    )
    np.testing.assert_allclose(mixed.q.sum(axis=3), p, atol=1e-15)
    constant = np.zeros_like(free)  # always predict 0: fair, but below the budget-0 optimum
    constant[..., 0] = p
    assert guard(constant, zero, budget, budget).guard == "eps0"
    assert guard(free, zero, 10.0, 10.0).guard == "none"


# --- frontier ------------------------------------------------------------------------------


def test_frontier_agrees_with_solve_and_reports_progress() -> None:
    grid_g, grid_l = [0.0, 0.004, 0.05], [0.0, 0.01]
    calls: list[tuple[int, int]] = []
    table = frontier(TWO_CLIENTS, grid_g, grid_l, progress=lambda d, t: calls.append((d, t)))
    assert list(table.columns) == [
        "eps_global",
        "eps_local",
        "accuracy",
        "global_disparity",
        "local_disparity",
        "unique",
        "redundant",
        "masked",
        "status",
    ]
    assert calls == [(k, 6) for k in range(1, 7)]
    assert table[["eps_global", "eps_local"]].to_numpy().tolist() == [
        [eps_g, eps_l] for eps_g in grid_g for eps_l in grid_l
    ]
    for row in table.itertuples():
        single = solve(TWO_CLIENTS, row.eps_global, row.eps_local)
        assert row.accuracy == pytest.approx(single.accuracy, abs=1e-9)
        assert row.unique == pytest.approx(single.unique, abs=1e-6)
        assert row.status == single.status == "optimal"


def test_pid_terms_add_up_to_the_disparities() -> None:
    result = solve(THREE_CLIENTS, 0.02, 0.01)
    assert min(result.unique, result.redundant, result.masked) >= -1e-7
    assert result.unique + result.redundant == pytest.approx(result.global_disparity, abs=1e-6)
    assert result.unique + result.masked == pytest.approx(result.local_disparity, abs=1e-6)
    skipped = solve(THREE_CLIENTS, 0.02, 0.01, compute_pid=False)
    assert math.isnan(skipped.unique) and skipped.accuracy == pytest.approx(result.accuracy)


def test_programs_are_dpp_and_reused_across_budgets() -> None:
    model = AGLFOPModel(TWO_CLIENTS / TWO_CLIENTS.sum(), None)
    for eps in (0.001, 0.01, 0.02):
        model.solve_point(eps, eps)
    # One cone program, plus the budget-0 program the guard compares against (solved once).
    assert set(model._programs) == {("cone", "cone"), ("zero", "zero")}
    assert set(model._zero_solutions) == {("zero", "zero")}
    assert all(program.problem.is_dpp() for program in model._programs.values())


# --- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "eps_g", "eps_l", "match"),
    [
        (-TWO_CLIENTS, 0.1, 0.1, "non-negative"),
        (np.where(TWO_CLIENTS > 30, np.nan, TWO_CLIENTS), 0.1, 0.1, "NaN"),
        (np.concatenate([TWO_CLIENTS, np.zeros((1, 2, 2))]), 0.1, 0.1, r"client\(s\) \[2\]"),
        (TWO_CLIENTS.sum(axis=0), 0.1, 0.1, "3-D"),
        (TWO_CLIENTS, -0.1, 0.1, "eps_global must be >= 0"),
        (TWO_CLIENTS, 0.1, float("nan"), "eps_local must be >= 0"),
        (TWO_CLIENTS, "a lot", 0.1, "eps_global must be a number"),
    ],
)
def test_bad_inputs_raise_data_error(
    counts: np.ndarray, eps_g: float, eps_l: float, match: str
) -> None:
    with pytest.raises(DataError, match=match):
        solve(counts, eps_g, eps_l)


def test_bad_grid_and_roc_region_raise_data_error() -> None:
    with pytest.raises(DataError, match="eps_local_grid"):
        frontier(TWO_CLIENTS, [0.1], [0.1, -1.0])
    with pytest.raises(DataError, match="binary label"):
        solve(MULTI, 0.1, 0.1, roc_region=SQUARE)
    with pytest.raises(DataError, match="3 groups"):
        solve(TWO_CLIENTS, 0.1, 0.1, roc_region=[SQUARE, SQUARE, SQUARE])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        solve(TWO_CLIENTS, 0.1, 0.1, roc_region=[(0.0, 0.0), (1.2, 1.0)])


# --- model-specific variant: ROC regions ---------------------------------------------------


@pytest.mark.parametrize(("eps_g", "eps_l"), [(0.0, 0.0), (0.003, 0.01), (0.05, math.inf)])
def test_full_roc_square_equals_the_unrestricted_problem(eps_g: float, eps_l: float) -> None:
    free = solve(THREE_CLIENTS, eps_g, eps_l, compute_pid=False)
    square = solve(THREE_CLIENTS, eps_g, eps_l, roc_region=SQUARE, compute_pid=False)
    assert square.accuracy == pytest.approx(free.accuracy, abs=ACC_TOL)


def test_chance_line_reaches_each_groups_majority() -> None:
    # FPR_z = TPR_z = t_z: accuracy Σ_z P(z,0)(1 - t_z) + P(z,1) t_z, best t_z ∈ {0, 1}.
    p_zy = THREE_CLIENTS.sum(axis=0) / THREE_CLIENTS.sum()
    result = solve(THREE_CLIENTS, math.inf, math.inf, roc_region=CHANCE, compute_pid=False)
    assert result.accuracy == pytest.approx(p_zy.max(axis=1).sum(), abs=ACC_TOL)
    # With I(Z;Ŷ) = 0 every group must share t: only the overall majority label is left.
    fair = solve(THREE_CLIENTS, 0.0, math.inf, roc_region=[CHANCE, CHANCE], compute_pid=False)
    assert fair.accuracy == pytest.approx(p_zy.sum(axis=0).max(), abs=ACC_TOL)
    assert fair.accuracy < result.accuracy - 1e-3


def test_roc_region_from_a_score_model_lies_between_chance_and_free() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=400)
    groups = rng.integers(0, 2, size=400)
    scores = labels * (1.0 + groups) + rng.normal(size=400)
    curves = roc_points(scores, labels, groups)
    p = THREE_CLIENTS / THREE_CLIENTS.sum()
    result = solve(THREE_CLIENTS, 0.02, 0.02, roc_region=curves, compute_pid=False)
    free = solve(THREE_CLIENTS, 0.02, 0.02, compute_pid=False)
    chance = solve(THREE_CLIENTS, 0.02, 0.02, roc_region=CHANCE, compute_pid=False)
    assert chance.accuracy - 1e-7 <= result.accuracy <= free.accuracy + 1e-7
    _assert_feasible(result, THREE_CLIENTS, 0.02, 0.02)
    q_zy1 = result.q[..., 1].sum(axis=0)  # Q(z, y, ŷ = 1)
    for z, curve in enumerate(curves):
        rates = q_zy1[z] / p.sum(axis=0)[z]  # (FPR_z, TPR_z)
        assert _distance_to_hull(rates, curve) <= 1e-6


def _distance_to_hull(point: np.ndarray, vertices: np.ndarray) -> float:
    """L-infinity distance from ``point`` to the convex hull of ``vertices`` (an LP)."""
    k = len(vertices)
    cost = np.r_[np.zeros(k), 1.0]  # variables: theta (k), slack t
    a_ub = np.block([[vertices.T, -np.ones((2, 1))], [-vertices.T, -np.ones((2, 1))]])
    b_ub = np.r_[point, -point]
    a_eq = np.r_[np.ones(k), 0.0][None, :]
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0], bounds=(0, None))
    assert res.status == 0, res.message
    return float(res.fun)


def _scored_rows(seed: int) -> tuple[np.ndarray, ...]:
    """Rows (client, group, label, score) of a score model that is better on group 1."""
    rng = np.random.default_rng(seed)
    n = 600
    clients, groups = rng.integers(0, 3, size=n), rng.integers(0, 2, size=n)
    labels = (rng.random(n) < 0.3 + 0.4 * groups).astype(int)  # Z and Y correlated
    scores = (2 * labels - 1) * (0.5 + groups) + rng.normal(size=n) + 0.3 * clients
    return clients, groups, labels, scores


@pytest.mark.parametrize(("seed", "threshold"), [(0, 0.0), (1, 0.5), (2, -0.4)])
def test_model_specific_optimum_lies_between_the_model_and_the_agnostic_optimum(
    seed: int, threshold: float
) -> None:
    from fedsim.fairness.aglfop_feasible import accuracy, disparities_bits
    from fedsim.fairness.roc import hull_points

    clients, groups, labels, scores = _scored_rows(seed)
    counts = np.zeros((3, 2, 2))
    np.add.at(counts, (clients, groups, labels), 1.0)
    q_model = np.zeros((3, 2, 2, 2))  # the trained model: predict 1 when score > threshold
    np.add.at(q_model, (clients, groups, labels, (scores > threshold).astype(int)), 1.0)
    q_model /= q_model.sum()
    eps_g, eps_l = disparities_bits(q_model)
    roc = [hull_points(curve) for curve in roc_points(scores, labels, groups)]
    specific = solve(counts, eps_g, eps_l, roc_region=roc, compute_pid=False)
    agnostic = solve(counts, eps_g, eps_l, compute_pid=False)
    assert accuracy(q_model) - 1e-7 <= specific.accuracy <= agnostic.accuracy + 1e-7
    assert specific.accuracy < agnostic.accuracy - 1e-3  # the ROC hull does restrict
    _assert_feasible(specific, counts, eps_g, eps_l)


def test_infeasible_roc_region_raises_and_frontier_records_it() -> None:
    point = [(0.1, 0.9)]  # one operating point; base rates differ across groups
    with pytest.raises(SolverError, match="ROC region"):
        solve(THREE_CLIENTS, 0.0, math.inf, roc_region=point)
    table = frontier(THREE_CLIENTS, [0.0, 5.0], [5.0], roc_region=point, compute_pid=False)
    assert table.status.tolist() == ["infeasible", "optimal"]
    assert math.isnan(table.accuracy[0]) and table.accuracy[1] > 0.5


def test_frontier_returns_a_dataframe_even_for_one_point() -> None:
    table = frontier(SPARSE, 0.01, 0.01, compute_pid=False)
    assert isinstance(table, pd.DataFrame) and len(table) == 1
