"""FedLD maths: oracles, reductions and properties of strategies.principal."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsim.errors import AggregationError
from fedsim.strategies.principal import (
    aggregate_principal,
    num_directions,
    principal_gradient,
)

# ----------------------------------------------------------------------------- oracles


def _fedld_from_basis(
    x: np.ndarray, lam: np.ndarray, v: np.ndarray, rho: float, weights: Any
) -> np.ndarray:
    """Σ_m p_m ‖g_m‖ Σ_{j≤k} (λ_j/Σλ) sign⟨g_m, v_j⟩ v_j with explicit v_j (rows of v)."""
    m = x.shape[0]
    p = np.full(m, 1.0 / m) if weights is None else np.asarray(weights) / np.sum(weights)
    k = max(1, int(np.floor(rho * m + 1e-9)))
    total = lam.sum()
    norms = np.linalg.norm(x, axis=1)
    out = np.zeros(x.shape[1])
    for j in range(min(k, len(lam))):
        if lam[j] <= 1e-12 * lam[0]:  # zero eigenvalue: weight 0, direction undefined
            continue
        proj = x @ v[j]
        signs = np.where(np.abs(proj) <= 1e-9 * norms, 0.0, np.sign(proj))
        out += (lam[j] / total) * np.sum(p * norms * signs) * v[j]
    return out


def naive_svd(x: np.ndarray, rho: float, weights: Any = None) -> np.ndarray:
    """Reference through a full SVD of X (V formed explicitly)."""
    x = np.asarray(x, dtype=np.float64)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return _fedld_from_basis(x, s**2 / x.shape[0], vt, rho, weights)


def naive_eigh(x: np.ndarray, rho: float, weights: Any = None) -> np.ndarray:
    """Reference through eigh of the d x d matrix XᵀX / M (small d only)."""
    x = np.asarray(x, dtype=np.float64)
    lam, vecs = np.linalg.eigh(x.T @ x / x.shape[0])
    lam, vecs = lam[::-1], vecs[:, ::-1]
    rank = min(x.shape)
    return _fedld_from_basis(x, np.clip(lam[:rank], 0, None), vecs[:, :rank].T, rho, weights)


def _random_deltas(rng: np.random.Generator, m: int, d: int) -> np.ndarray:
    return rng.standard_normal((m, d)) * rng.uniform(0.1, 3.0, size=(m, 1))


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    scale = max(float(np.linalg.norm(expected)), 1e-300)
    assert np.linalg.norm(actual - expected) <= rtol * scale, (actual, expected)


# ------------------------------------------------------------------ principal_gradient


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("d", [1, 5, 100, 1000])
@pytest.mark.parametrize("m", [1, 2, 3, 7, 10])
def test_matches_full_svd_reference(m: int, d: int, rho: float, weighted: bool) -> None:
    rng = np.random.default_rng(1000 * m + d)
    x = _random_deltas(rng, m, d)
    weights = rng.uniform(1, 50, size=m) if weighted else None
    _close(principal_gradient(x, rho, weights), naive_svd(x, rho, weights), 1e-6)


@pytest.mark.parametrize(("m", "d"), [(3, 5), (7, 20), (10, 4)])
def test_matches_eigh_reference(m: int, d: int) -> None:
    rng = np.random.default_rng(m * d)
    x = _random_deltas(rng, m, d)
    for rho in (0.1, 0.5, 1.0):
        _close(principal_gradient(x, rho), naive_eigh(x, rho), 1e-6)


def test_float32_and_multi_block_inputs() -> None:
    rng = np.random.default_rng(3)
    x = _random_deltas(rng, 6, 200_000).astype(np.float32)  # > one 2 MiB block
    _close(principal_gradient(x, 0.5), naive_svd(x, 0.5), 1e-6)


def test_identical_deltas_give_that_delta() -> None:
    # X = 1gᵀ: λ_1 = ‖g‖², all other λ = 0, so λ_1/Σλ = 1, v_1 = ±g/‖g‖ and every
    # sign⟨g, v_1⟩ is the same: r_m = ‖g‖ (g/‖g‖) = g, for every ρ and weighting.
    g = np.random.default_rng(4).standard_normal(50)
    for m in (2, 5, 10):
        for rho in (0.1, 1.0):
            np.testing.assert_allclose(principal_gradient(np.tile(g, (m, 1)), rho), g, rtol=1e-12)
    np.testing.assert_allclose(principal_gradient(np.tile(g, (3, 1)), 1.0, [1, 2, 3]), g, 1e-12)


def test_orthogonal_deltas_closed_form_uses_sign_zero() -> None:
    # Disjoint supports: v_m = g_m/‖g_m‖, λ_m = ‖g_m‖²/M and ⟨g_m, v_j⟩ = 0 for m ≠ j, so
    # with sign(0) = 0: avg = Σ_{m kept} p_m (‖g_m‖²/Σ‖g‖²) g_m over the k largest norms.
    # (sign(0) = +1 would add ±v_j terms from every other client.)
    scales = np.array([4.0, 3.0, 2.0, 1.0])
    x = np.zeros((4, 12))
    for m, s in enumerate(scales):
        x[m, 3 * m : 3 * m + 3] = s * np.array([1.0, -2.0, 0.5])
    sq = np.sum(x**2, axis=1)
    p = np.array([1.0, 2.0, 3.0, 4.0]) / 10
    for rho, kept in ((1.0, 4), (0.5, 2), (0.25, 1)):
        expected = ((p * sq / sq.sum())[:kept, None] * x[:kept]).sum(axis=0)
        np.testing.assert_allclose(principal_gradient(x, rho, p * 10), expected, atol=1e-14)


def test_one_coordinate_is_the_weighted_mean() -> None:
    # d = 1: v = ±1, λ_1/Σλ = 1, r_m = |g_m| sign(g_m) = g_m.
    x = np.array([[2.0], [-1.0], [0.5], [0.0]])
    # (2·1 - 1·1 + 0.5·2 + 0·4) / 8 = 0.25 and (2 - 1 + 0.5 + 0) / 4 = 0.375
    np.testing.assert_allclose(principal_gradient(x, 0.5, [1, 1, 2, 4]), [0.25])
    np.testing.assert_allclose(principal_gradient(x, 0.5), [0.375])


def test_opposite_deltas_cancel() -> None:
    g = np.arange(1.0, 6.0)
    np.testing.assert_allclose(principal_gradient(np.stack([g, -g]), 1.0), 0.0, atol=1e-14)


def test_single_client_and_zero_deltas_are_the_mean() -> None:
    g = np.random.default_rng(5).standard_normal((1, 30))
    assert np.array_equal(principal_gradient(g, 0.8), g[0])
    assert np.array_equal(principal_gradient(np.zeros((4, 9)), 0.8), np.zeros(9))


def test_client_order_does_not_matter() -> None:
    rng = np.random.default_rng(6)
    for m, d in ((3, 40), (7, 500), (10, 1000)):
        x, w = _random_deltas(rng, m, d), rng.uniform(1, 9, m)
        perm = rng.permutation(m)
        _close(principal_gradient(x[perm], 0.8, w[perm]), principal_gradient(x, 0.8, w), 1e-10)


def test_homogeneous_and_rotation_equivariant() -> None:
    rng = np.random.default_rng(7)
    x = _random_deltas(rng, 5, 8)
    base = principal_gradient(x, 0.8)
    for alpha in (-3.0, 1e-3, 250.0):
        _close(principal_gradient(alpha * x, 0.8), alpha * base, 1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    _close(principal_gradient(x @ q, 0.8), base @ q, 1e-10)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 12)),
        elements=st.floats(-100, 100, allow_subnormal=False),
    ),
    st.floats(0.05, 1.0),
)
def test_update_norm_is_bounded_by_mean_norm(x: np.ndarray, rho: float) -> None:
    # ‖r_m‖ = ‖g_m‖ (Σ_j c_j²)^½ ≤ ‖g_m‖ Σ_j c_j ≤ ‖g_m‖, so ‖avg‖ ≤ mean_m ‖g_m‖.
    out = principal_gradient(x, rho)
    assert out.shape == (x.shape[1],)
    assert np.linalg.norm(out) <= np.mean(np.linalg.norm(x, axis=1)) * (1 + 1e-9) + 1e-12


def test_num_directions() -> None:
    assert [num_directions(10, r) for r in (0.01, 0.1, 0.29, 0.8, 1.0)] == [1, 1, 2, 8, 10]
    assert num_directions(100, 0.29) == 29  # 0.29·100 = 28.999999999999996


@pytest.mark.parametrize(
    ("deltas", "kwargs"),
    [
        (np.ones(3), {}),
        (np.ones((0, 3)), {}),
        (np.ones((2, 3)), {"keep_ratio": 0.0}),
        (np.ones((2, 3)), {"keep_ratio": 1.5}),
        (np.ones((2, 3)), {"weights": [1.0]}),
        (np.ones((2, 3)), {"weights": [1.0, -1.0]}),
        (np.ones((2, 3)), {"weights": [0.0, 0.0]}),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), {}),
        (np.array([[np.inf, 1.0]]), {}),
    ],
)
def test_principal_gradient_rejects_bad_input(deltas: np.ndarray, kwargs: dict[str, Any]) -> None:
    with pytest.raises(AggregationError):
        principal_gradient(deltas, **kwargs)


# ------------------------------------------------------------------ aggregate_principal


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "bn.running_var": rng.uniform(0.5, 2.0, 4).astype(np.float32),
        "bn.num_batches_tracked": np.array(10, dtype=np.int64),
        "scale": np.array([1.5], dtype=np.float64),
        "fc.weight": rng.standard_normal((3, 5)),
    }


def _clients(rng: np.random.Generator, current: dict[str, np.ndarray], m: int) -> list[dict]:
    clients = []
    for i in range(m):
        client = {}
        for key, value in current.items():
            if value.dtype.kind == "i":
                client[key] = np.asarray(value + 3 * i + 1)
            else:
                noise = rng.standard_normal(value.shape) * 0.1 * (i + 1)
                client[key] = (
                    np.abs(value + noise).astype(value.dtype)
                    if "var" in key
                    else (value + noise).astype(value.dtype)
                )
        clients.append(client)
    return clients


def _deltas(current: dict, clients: list[dict], key: str) -> np.ndarray:
    base = current[key].astype(np.float64).reshape(-1)
    return np.stack([c[key].astype(np.float64).reshape(-1) - base for c in clients])


def test_aggregate_principal_per_tensor_matches_principal_gradient() -> None:
    rng = np.random.default_rng(10)
    current = _model(rng)
    clients = _clients(rng, current, 5)
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    for lr in (1.0, 0.5):
        out = aggregate_principal(current, clients, weights, keep_ratio=0.6, server_lr=lr)
        assert list(out) == list(current)
        for key in ("conv.weight", "conv.bias", "fc.weight"):
            update = principal_gradient(_deltas(current, clients, key), 0.6, weights)
            expected = current[key].astype(np.float64) + lr * update.reshape(current[key].shape)
            assert out[key].dtype == current[key].dtype
            tol = 1e-6 if current[key].dtype == np.float32 else 1e-12
            np.testing.assert_allclose(out[key], expected, rtol=tol, atol=tol)


def test_aggregate_principal_large_tensor_spans_blocks() -> None:
    rng = np.random.default_rng(15)
    current = {"w": rng.standard_normal(150_001).astype(np.float32)}  # 3 blocks at M = 4
    clients = [
        {"w": (current["w"] + 0.01 * rng.standard_normal(150_001)).astype(np.float32)}
        for _ in range(4)
    ]
    out = aggregate_principal(current, clients, keep_ratio=0.5, server_lr=2.0)
    expected = current["w"] + 2.0 * principal_gradient(_deltas(current, clients, "w"), 0.5)
    np.testing.assert_allclose(out["w"], expected, rtol=1e-6, atol=1e-6)


def test_aggregate_principal_buffers_and_fallbacks() -> None:
    rng = np.random.default_rng(11)
    current = _model(rng)
    clients = _clients(rng, current, 4)
    p = [0.1, 0.2, 0.3, 0.4]
    out = aggregate_principal(current, clients, [1, 2, 3, 4], server_lr=0.5)
    # integer buffer: weighted mean of 11, 14, 17, 20 = 17, rounded, own dtype, no server_lr
    assert out["bn.num_batches_tracked"].dtype == np.int64
    assert int(out["bn.num_batches_tracked"]) == 17
    # mean_only float buffer: plain weighted mean, no server_lr
    expected_var = sum(pi * c["bn.running_var"] for pi, c in zip(p, clients, strict=True))
    np.testing.assert_allclose(out["bn.running_var"], expected_var, rtol=1e-6)
    # one-element tensor: mean delta with server_lr
    mean = sum(pi * c["scale"] for pi, c in zip(p, clients, strict=True))
    np.testing.assert_allclose(out["scale"], 1.5 + 0.5 * (mean - 1.5), rtol=1e-12)
    # without mean_only the running variance is a parameter and goes through the eigen step
    plain = aggregate_principal(current, clients, [1, 2, 3, 4], server_lr=0.5, mean_only=())
    assert not np.allclose(plain["bn.running_var"], out["bn.running_var"], rtol=1e-4)


def test_aggregate_principal_warmup_single_client_zero_deltas() -> None:
    rng = np.random.default_rng(12)
    current = _model(rng)
    clients = _clients(rng, current, 3)
    warm = aggregate_principal(current, clients, [1, 1, 2], principal=False)
    for key in ("conv.weight", "fc.weight"):
        fedavg = clients[0][key] * 0.25
        fedavg += clients[1][key] * 0.25
        fedavg += clients[2][key] * 0.5
        assert np.array_equal(warm[key], fedavg)  # Flower's arithmetic, bit for bit
    single = aggregate_principal(current, clients[:1])
    for key, value in clients[0].items():
        assert np.array_equal(single[key], value) and single[key].dtype == value.dtype
    same = aggregate_principal(current, [dict(current), dict(current)], server_lr=0.3)
    for key, value in current.items():
        assert np.array_equal(same[key], value)


def test_aggregate_principal_streams_one_tensor_at_a_time() -> None:
    rng = np.random.default_rng(13)
    current = _model(rng)
    clients = _clients(rng, current, 3)
    log: list[str] = []

    class Lazy(Mapping[str, np.ndarray]):
        def __init__(self, data: dict[str, np.ndarray]) -> None:
            self.data = data

        def __getitem__(self, key: str) -> np.ndarray:
            log.append(key)
            return self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    out = aggregate_principal(current, [Lazy(c) for c in clients])
    assert log == [key for key in current for _ in clients]  # each value read once, in order
    direct = aggregate_principal(current, clients)
    assert all(np.array_equal(out[k], direct[k]) for k in current)


@pytest.mark.parametrize("problem", ["missing", "shape", "nan", "no-clients"])
def test_aggregate_principal_rejects_bad_clients(problem: str) -> None:
    rng = np.random.default_rng(14)
    current = _model(rng)
    clients = _clients(rng, current, 3)
    if problem == "missing":
        del clients[1]["conv.bias"]
    elif problem == "shape":
        clients[2]["fc.weight"] = np.zeros((5, 3))
    elif problem == "nan":
        clients[0]["conv.weight"][0, 0, 0, 0] = np.nan
    else:
        clients = []
    with pytest.raises(AggregationError):
        aggregate_principal(current, clients)


def test_principal_does_not_import_flower() -> None:
    """The maths stays importable without Flower (house rule: glue at the edge)."""
    code = (
        "import sys, fedsim.strategies.principal; "
        "print(sorted(m for m in sys.modules if m.startswith(('flwr', 'ray'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
