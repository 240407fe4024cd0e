"""PID of global and local disparity: closed forms, identities and oracles."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize

import fedsim.fairness.pid as pid
from fedsim.errors import DataError, SolverError
from fedsim.fairness.information import conditional_mutual_information, mutual_information
from fedsim.fairness.pid import PIDResult, decompose
from fedsim.fairness.pid_tables import decompose_counts_frame, pid_from_csv

TOL = 1e-6  # bits, for closed forms and oracles


def _table(
    cells: list[tuple[int, int, int]], shape: tuple[int, int, int] = (2, 2, 2)
) -> np.ndarray:
    """Uniform distribution over the listed (z, yhat, s) cells."""
    table = np.zeros(shape)
    for cell in cells:
        table[cell] += 1.0
    return table


def _assert_terms(result: PIDResult, **expected: float) -> None:
    for name, value in expected.items():
        assert getattr(result, name) == pytest.approx(value, abs=TOL), name


# Closed forms (Hamman & Dutta 2024, Sec. 3 examples), with and without shortcuts.
COPY_Z = _table([(z, z, s) for z in range(2) for s in range(2)])  # Z ⊥ S, Ŷ = Z
COPY_S = _table([(s, s, s) for s in range(2)])  # Z = S, Ŷ = S
XOR = _table([(z, z ^ s, s) for z in range(2) for s in range(2)])  # Z ⊥ S, Ŷ = Z xor S
AND = _table([(s & y, y, s) for s in range(2) for y in range(2)])  # Z = S and Ŷ


@pytest.mark.parametrize("shortcuts", [True, False])
def test_unique_only(shortcuts: bool) -> None:
    result = decompose(COPY_Z, shortcuts=shortcuts)
    _assert_terms(result, global_disparity=1, local_disparity=1, unique=1, redundant=0, masked=0)


@pytest.mark.parametrize("shortcuts", [True, False])
def test_redundant_only(shortcuts: bool) -> None:
    result = decompose(COPY_S, shortcuts=shortcuts)
    _assert_terms(result, global_disparity=1, local_disparity=0, unique=0, redundant=1, masked=0)


@pytest.mark.parametrize("shortcuts", [True, False])
def test_masked_only(shortcuts: bool) -> None:
    result = decompose(XOR, shortcuts=shortcuts)
    _assert_terms(result, global_disparity=0, local_disparity=1, unique=0, redundant=0, masked=1)


@pytest.mark.parametrize("solver", ["CLARABEL", "SCS"])
def test_and_gate(solver: str) -> None:
    result = decompose(AND, solver=solver)
    assert result.solver == solver and result.status == "optimal"
    red = 1.5 - 0.75 * math.log2(3)  # H(Z) - 1/2 = h(1/4) - 1/2
    assert red == pytest.approx(0.311278, abs=1e-6)
    _assert_terms(result, unique=0, redundant=red, masked=0.5, local_disparity=0.5)


# Every shortcut against the solver on random tables that satisfy its condition.
def _random_shortcut_tables(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def cond(*shape: int) -> np.ndarray:  # random conditional over the first axis
        table = rng.random(shape) + 0.05
        return table / table.sum(axis=0, keepdims=True)

    p_z, p_y, p_s = cond(3), cond(2), cond(4)
    return {
        "Z ⊥ S": p_z[:, None, None] * p_s[None, None, :] * cond(2, 3, 4).transpose(1, 0, 2),
        "one client": rng.random((3, 2, 1)),
        "constant prediction": rng.random((3, 1, 4)),
        "one z value": rng.random((1, 3, 4)),
        "Z ⊥ Ŷ": (p_z[:, None] * p_y[None, :])[:, :, None] * cond(4, 3, 2).transpose(1, 2, 0),
        "Z ⊥ Ŷ | S": cond(3, 4)[:, None, :] * cond(2, 4)[None, :, :] * p_s,
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_shortcuts_match_solver(seed: int) -> None:
    for name, table in _random_shortcut_tables(np.random.default_rng(seed)).items():
        fast, solved = decompose(table), decompose(table, shortcuts=False)
        assert fast.status == "closed-form", name
        assert solved.status == "optimal", name
        for term in ("unique", "redundant", "masked"):
            assert getattr(fast, term) == pytest.approx(getattr(solved, term), abs=TOL), (
                name,
                term,
            )


def test_dependent_tables_are_solved() -> None:
    table = np.random.default_rng(0).random((2, 2, 3))
    assert decompose(table).solver == "CLARABEL"


# Identities on random tables.
SHAPES = [(2, 2, 2), (2, 2, 10), (3, 3, 5), (2, 3, 4), (4, 2, 3)]


def _random_tables(shape: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    sparse = rng.random(shape) * (rng.random(shape) > 0.3)
    peaky = rng.dirichlet(np.full(math.prod(shape), 0.3)).reshape(shape)
    return [rng.random(shape), peaky, sparse + 1e-12 * (sparse.sum() == 0)]


def _check_identities(table: np.ndarray, result: PIDResult) -> None:
    p = table / table.sum()
    assert result.global_disparity == pytest.approx(mutual_information(p.sum(axis=2)), abs=1e-12)
    assert result.local_disparity == pytest.approx(conditional_mutual_information(p), abs=1e-12)
    assert result.unique + result.redundant == pytest.approx(result.global_disparity, abs=1e-12)
    assert result.unique + result.masked == pytest.approx(result.local_disparity, abs=1e-12)
    assert min(result.unique, result.redundant, result.masked) >= -1e-9
    i_zs = mutual_information(p.sum(axis=1))
    assert result.redundant <= min(result.global_disparity, i_zs) + TOL


@pytest.mark.parametrize("shape", SHAPES)
def test_identities_on_random_tables(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for table in _random_tables(shape, rng):
        _check_identities(table, decompose(table))
        _check_identities(table, decompose(table, shortcuts=False))


@settings(max_examples=40, deadline=None)
@given(arrays(np.int64, (2, 2, 3), elements=st.integers(0, 20)))
def test_identities_on_count_tables(counts: np.ndarray) -> None:
    if counts.sum() == 0:
        with pytest.raises(DataError):
            decompose(counts)
        return
    _check_identities(counts.astype(float), decompose(counts))


# Independent oracles for Uni.
def _cmi_nats(q: np.ndarray) -> np.ndarray:
    """I_Q(Z;Ŷ|S) in nats over the last three axes [z, yhat, s] of ``q``."""
    q_zs = q.sum(axis=-2, keepdims=True)
    q_ys = q.sum(axis=-3, keepdims=True)
    q_s = q.sum(axis=(-3, -2), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q * q_s / (q_zs * q_ys)), 0.0)
    return terms.sum(axis=(-3, -2, -1))


def _grid_unique_bits(p: np.ndarray, levels: int = 8, points: int = 41) -> float:
    """Zooming grid search over the 2x2x2 feasible set, parameterised by t_z = Q(z,0,0)."""
    p = p / p.sum()
    p_z, p_z_y0, p_z_s0 = p.sum(axis=(1, 2)), p[:, 0, :].sum(axis=1), p[:, :, 0].sum(axis=1)
    low = np.maximum(0.0, p_z_y0 + p_z_s0 - p_z)
    high = np.minimum(p_z_y0, p_z_s0)
    window_low, window_high = low.copy(), high.copy()
    for _ in range(levels):
        axes = [np.linspace(window_low[z], window_high[z], points) for z in range(2)]
        grid = np.meshgrid(*axes, indexing="ij")
        q = np.empty(grid[0].shape + (2, 2, 2))
        for z, t in enumerate(grid):
            q[..., z, 0, 0] = t
            q[..., z, 0, 1] = p_z_y0[z] - t
            q[..., z, 1, 0] = p_z_s0[z] - t
            q[..., z, 1, 1] = p_z[z] - p_z_y0[z] - p_z_s0[z] + t
        values = _cmi_nats(np.maximum(q, 0.0))
        best = np.unravel_index(np.argmin(values), values.shape)
        centre = np.array([axes[z][best[z]] for z in range(2)])
        width = 4 * (window_high - window_low) / points
        window_low = np.maximum(low, centre - width)
        window_high = np.minimum(high, centre + width)
    return float(values[best]) / math.log(2)


def _slsqp_unique_bits(p: np.ndarray) -> float:
    """SLSQP over the free block Q(z, :-1, :-1); the last row and column follow from margins."""
    p = p / p.sum()
    num_z, num_y, num_s = p.shape
    p_zy, p_zs, p_z = p.sum(axis=2), p.sum(axis=1), p.sum(axis=(1, 2))
    num_free = num_z * (num_y - 1) * (num_s - 1)

    def full(x: np.ndarray) -> np.ndarray:
        free = x.reshape(num_z, num_y - 1, num_s - 1)
        q = np.empty(p.shape)
        q[:, :-1, :-1] = free
        q[:, :-1, -1] = p_zy[:, :-1] - free.sum(axis=2)
        q[:, -1, :-1] = p_zs[:, :-1] - free.sum(axis=1)
        q[:, -1, -1] = p_z - p_zy[:, :-1].sum(axis=1) - p_zs[:, :-1].sum(axis=1)
        q[:, -1, -1] += free.sum(axis=(1, 2))
        return q.ravel()

    offset = full(np.zeros(num_free))
    basis = np.stack([full(e) - offset for e in np.eye(num_free)], axis=1)

    def objective(x: np.ndarray) -> float:
        return float(_cmi_nats(np.maximum(basis @ x + offset, 0.0).reshape(p.shape)))

    def gradient(x: np.ndarray) -> np.ndarray:
        q = np.maximum(basis @ x + offset, 1e-300).reshape(p.shape)
        ratio = q * q.sum(axis=(0, 1), keepdims=True)
        ratio /= q.sum(axis=1, keepdims=True) * q.sum(axis=0, keepdims=True)
        return basis.T @ np.log(ratio).ravel()

    start = (p_zy[:, :, None] * p_zs[:, None, :] / p_z[:, None, None])[:, :-1, :-1].ravel()
    feasible = {"type": "ineq", "fun": lambda x: basis @ x + offset, "jac": lambda x: basis}
    result = minimize(
        objective,
        start,
        jac=gradient,
        method="SLSQP",
        constraints=[feasible],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert result.success, result.message
    return result.fun / math.log(2)


@pytest.mark.parametrize("seed", range(6))
def test_unique_matches_grid_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(8, 0.5 if seed % 2 else 2.0)).reshape(2, 2, 2)
    result = decompose(table, shortcuts=False)
    assert result.unique == pytest.approx(_grid_unique_bits(table), abs=1e-5)


@pytest.mark.parametrize(("shape", "seed"), [((2, 2, 2), 0), ((4, 2, 3), 1), ((2, 3, 4), 2)])
def test_unique_matches_slsqp(shape: tuple[int, int, int], seed: int) -> None:
    table = np.random.default_rng(seed).dirichlet(np.ones(math.prod(shape))).reshape(shape)
    result = decompose(table, shortcuts=False)
    assert result.unique == pytest.approx(_slsqp_unique_bits(table), abs=1e-5)


@pytest.mark.parametrize("shape", [(2, 2, 10), (3, 3, 5)])
def test_clarabel_matches_scs(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(7)
    for table in _random_tables(shape, rng)[:2]:
        clarabel = decompose(table, shortcuts=False, solver="CLARABEL")
        scs = decompose(table, shortcuts=False, solver="SCS")
        assert (clarabel.solver, scs.solver) == ("CLARABEL", "SCS")
        assert clarabel.unique == pytest.approx(scs.unique, abs=1e-5)


# Degenerate tables.
def test_client_without_one_group_matches_oracles() -> None:
    table = np.array([[[5.0, 3.0], [1.0, 4.0]], [[0.0, 2.0], [0.0, 6.0]]])  # client 0: no z=1
    result = decompose(table, shortcuts=False)
    assert result.status == "optimal"
    assert result.unique == pytest.approx(_grid_unique_bits(table), abs=1e-5)
    scs = decompose(table, shortcuts=False, solver="SCS")
    assert result.unique == pytest.approx(scs.unique, abs=1e-5)


def test_zero_mass_values_are_removed() -> None:
    table = np.random.default_rng(3).random((2, 3, 4))
    padded = np.zeros((3, 4, 6))
    padded[np.ix_([0, 2], [0, 1, 3], [1, 2, 4, 5])] = table
    expected, result = decompose(table), decompose(padded)
    assert dataclasses.astuple(result) == pytest.approx(dataclasses.astuple(expected), abs=1e-9)


def test_constant_prediction_is_zero() -> None:
    table = np.zeros((2, 3, 4))
    table[:, 1, :] = np.random.default_rng(0).random((2, 4))
    for shortcuts in (True, False):
        result = decompose(table, shortcuts=shortcuts)
        _assert_terms(result, unique=0, redundant=0, masked=0, global_disparity=0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (np.zeros((2, 2, 2)), "sums to zero"),
        (-np.ones((2, 2, 2)), "negative"),
        (np.full((2, 2, 2), np.nan), "NaN"),
        (np.ones((2, 2)), "3 axes"),
        (np.ones((2, 2, 2, 2)), "3 axes"),
    ],
)
def test_bad_tables_raise_data_error(table: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        decompose(table)


def test_unknown_solver_is_rejected() -> None:
    with pytest.raises(ValueError, match="solver"):
        decompose(AND, solver="ECOS")


def test_result_is_frozen() -> None:
    result = decompose(COPY_Z)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.unique = 0.5  # type: ignore[misc]


# Solver plumbing: caching, status checks, fallback and round-off clipping.
def test_program_is_dpp_and_cached() -> None:
    table = np.random.default_rng(11).random((2, 2, 7))
    decompose(table)
    before = pid._program.cache_info()
    decompose(np.random.default_rng(12).random((2, 2, 7)))
    after = pid._program.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    support = np.ones((2, 2, 7), dtype=bool)
    assert pid._program((2, 2, 7), support.tobytes()).problem.is_dpp()


def test_non_optimal_status_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {**pid._SOLVER_OPTIONS, "CLARABEL": {"max_iter": 1}}
    monkeypatch.setattr(pid, "_SOLVER_OPTIONS", options)
    with pytest.raises(SolverError, match="CLARABEL ended with status"):
        decompose(AND, solver="CLARABEL")


def test_falls_back_to_the_barrier_then_scs_when_clarabel_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert decompose(AND).solver == "CLARABEL"
    options = {**pid._SOLVER_OPTIONS, "CLARABEL": {"max_iter": 1}}
    monkeypatch.setattr(pid, "_SOLVER_OPTIONS", options)
    result = decompose(AND)
    assert result.solver == pid.BLOCK_BARRIER
    assert result.redundant == pytest.approx(0.311278, abs=1e-5)

    def barrier_fails(*args: object, **kwargs: object) -> None:
        raise SolverError("barrier stopped (test)")

    monkeypatch.setattr(pid, "unique_information", barrier_fails)
    result = decompose(AND)
    assert result.solver == "SCS"
    assert result.redundant == pytest.approx(0.311278, abs=1e-5)
    options["SCS"] = {"max_iters": 1}
    with pytest.raises(SolverError, match="CLARABEL.*; barrier stopped.*; SCS"):
        decompose(AND)


@pytest.mark.parametrize(
    ("uni", "upper", "expected"),
    [(-5e-8, 0.3, 0.0), (0.3 + 5e-8, 0.3, 0.3), (0.1, 0.3, 0.1), (0.0, 0.0, 0.0)],
)
def test_round_off_is_clipped_within_tolerance(uni: float, upper: float, expected: float) -> None:
    assert pid._clip_unique(uni, upper) == expected


@pytest.mark.parametrize(("uni", "term"), [(-1e-6, "Unique"), (0.3 + 1e-6, "Redundant")])
def test_larger_violations_raise(uni: float, term: str) -> None:
    with pytest.raises(SolverError, match=term):
        pid._clip_unique(uni, 0.3)


# Long-form counts and CSV input.
def _frame(table: np.ndarray) -> pd.DataFrame:
    z, yhat, s = np.indices(table.shape).reshape(3, -1)
    return pd.DataFrame({"z": z, "yhat": yhat, "s": s, "count": table.ravel()})


def test_counts_frame_matches_array() -> None:
    table = np.random.default_rng(5).integers(1, 30, size=(2, 2, 3)).astype(float)
    frame = _frame(table)
    expected = decompose(table)
    assert decompose_counts_frame(frame) == expected
    # Split every cell over two true labels and relabel with strings: same answer.
    split = pd.concat([frame.assign(y=0, count=frame["count"] - 1), frame.assign(y=1, count=1)])
    split["s"] = "client-" + split["s"].astype(str)
    assert decompose_counts_frame(split.sample(frac=1.0, random_state=0)) == expected


def test_csv_round_trip(tmp_path: pytest.TempPathFactory) -> None:
    table = np.random.default_rng(6).integers(0, 30, size=(2, 3, 4)).astype(float)
    path = tmp_path / "counts.csv"  # type: ignore[operator]
    _frame(table).assign(y=1).to_csv(path, index=False)
    assert pid_from_csv(path) == decompose(table)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="count"), "missing: \\['count'\\]"),
        (lambda f: f.rename(columns={"yhat": "y_hat"}), "unexpected: \\['y_hat'\\]"),
        (lambda f: f.iloc[:0], "no rows"),
        (lambda f: f.assign(count=-1.0), "negative"),
        (lambda f: f.assign(count=np.inf), "infinite"),
        (lambda f: f.assign(count="many"), "non-numeric"),
        (lambda f: f.assign(count=[np.nan] + [1.0] * (len(f) - 1)), "missing"),
        (lambda f: f.assign(s=[None] + [0] * (len(f) - 1)), "empty z, yhat or s"),
        (lambda f: f.assign(count=0.0), "sums to zero"),
    ],
)
def test_bad_frames_raise_data_error(change: object, message: str) -> None:
    frame = _frame(np.ones((2, 2, 2)))
    with pytest.raises(DataError, match=message):
        decompose_counts_frame(change(frame))  # type: ignore[operator]


def test_unreadable_csv_raises_data_error(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(DataError, match="cannot read"):
        pid_from_csv(tmp_path / "missing.csv")  # type: ignore[operator]
    empty = tmp_path / "empty.csv"  # type: ignore[operator]
    empty.write_text("")
    with pytest.raises(DataError, match="cannot read"):
        pid_from_csv(empty)
