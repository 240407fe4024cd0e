"""FedLD: oracles for the principal-gradient maths and the Flower strategy end to end."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsim.errors import AggregationError, ConfigError
from strategies.fedld import (
    FedLD,
    aggregate_principal,
    num_directions,
    principal_gradient,
)
from strategies.records import array_view

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


# ------------------------------------------------------------------------- strategy


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages need the identity of the process task; restored after each test."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


class InMemoryGrid(Grid):
    """Grid that answers every message at once with ``handler(message)``."""

    def __init__(self, node_ids: list[int], handler: Any = None) -> None:
        self.node_ids = node_ids
        self.handler = handler

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return [self.handler(msg) for msg in messages]


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _reply(instruction: Message, arrays: dict[str, np.ndarray], num_examples: int) -> Message:
    content = RecordDict(
        {
            "arrays": _record(arrays),
            "metrics": MetricRecord({"num-examples": num_examples, "loss": 0.1 * num_examples}),
        }
    )
    return Message(content, reply_to=instruction)


def _round(
    strategy: FedAvg, server_round: int, current: dict, nodes: list[int]
) -> dict[int, Message]:
    """configure_train for exactly ``nodes``; instruction message per node id."""
    strategy.min_available_nodes = strategy.min_train_nodes = len(nodes)
    grid = InMemoryGrid(nodes)
    msgs = strategy.configure_train(server_round, _record(current), ConfigRecord(), grid)
    return {msg.metadata.dst_node_id: msg for msg in msgs}


def _float_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "w": rng.standard_normal((6, 7)).astype(np.float32),
        "b": rng.standard_normal(6).astype(np.float32),
    }


def _client_model(rng: np.random.Generator, current: dict, node: int) -> dict[str, np.ndarray]:
    return {
        k: (v + 0.05 * node * rng.standard_normal(v.shape)).astype(v.dtype)
        for k, v in current.items()
    }


def test_warmup_round_equals_fedavg_exactly() -> None:
    rng = np.random.default_rng(20)
    current = _float_model(rng)
    models = {n: _client_model(rng, current, n) for n in (1, 2, 3, 4)}
    counts = {1: 10, 2: 30, 3: 5, 4: 55}
    fedld = FedLD(weighting="num-examples", warmup_rounds=1)
    fedavg = FedAvg()
    results = []
    for strategy in (fedld, fedavg):
        msgs = _round(strategy, 1, current, list(models))
        replies = [_reply(msgs[n], models[n], counts[n]) for n in models]
        results.append(strategy.aggregate_train(1, replies))
    (ld_arrays, ld_metrics), (avg_arrays, avg_metrics) = results
    assert ld_arrays is not None and avg_arrays is not None
    for key, value in _numpy(avg_arrays).items():
        assert np.array_equal(_numpy(ld_arrays)[key], value)
    assert ld_metrics is not None and avg_metrics is not None
    assert ld_metrics["loss"] == avg_metrics["loss"]
    assert ld_metrics["fedld-dropped"] == 0 and ld_metrics["fedld-usable"] == 4


def test_after_warmup_uses_principal_gradients() -> None:
    rng = np.random.default_rng(21)
    current = _float_model(rng)
    models = {n: _client_model(rng, current, n) for n in (1, 2, 3, 4, 5)}
    strategy = FedLD(keep_ratio=0.4, server_lr=0.7)
    msgs = _round(strategy, 2, current, list(models))
    arrays, _ = strategy.aggregate_train(2, [_reply(msgs[n], models[n], 10 * n) for n in models])
    expected = aggregate_principal(
        current, list(models.values()), None, keep_ratio=0.4, server_lr=0.7
    )
    assert arrays is not None
    mean = {k: np.mean([m[k] for m in models.values()], axis=0) for k in current}
    for key, value in _numpy(arrays).items():
        assert np.array_equal(value, expected[key])
        assert not np.allclose(value, current[key] + 0.7 * (mean[key] - current[key]), atol=1e-4)


def test_one_usable_client_equals_fedavg() -> None:
    # M = 1: r_1 = ‖g‖ v = g, so FedLD = FedAvg = that client's model.
    rng = np.random.default_rng(22)
    current = _float_model(rng)
    good = _client_model(rng, current, 1)
    bad = {k: np.full_like(v, np.nan) for k, v in current.items()}
    strategy = FedLD()
    msgs = _round(strategy, 3, current, [1, 2])
    arrays, metrics = strategy.aggregate_train(
        3, [_reply(msgs[1], good, 7), _reply(msgs[2], bad, 9)]
    )
    assert arrays is not None and metrics is not None
    assert all(np.array_equal(v, good[k]) for k, v in _numpy(arrays).items())
    assert metrics["fedld-dropped"] == 1 and metrics["fedld-usable"] == 1


@pytest.mark.parametrize("problem", ["nan", "inf", "shape", "missing-key", "extra-key", "weight"])
def test_bad_reply_is_dropped_and_counted(problem: str, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(23)
    current = _float_model(rng)
    models = {n: _client_model(rng, current, n) for n in (1, 2, 3, 4)}
    bad = dict(models[4])
    counts = {1: 10, 2: 20, 3: 30, 4: 40}
    if problem in ("nan", "inf"):
        bad["w"] = bad["w"].copy()
        bad["w"][2, 3] = np.nan if problem == "nan" else -np.inf
    elif problem == "shape":
        bad["w"] = bad["w"].T.copy()
    elif problem == "missing-key":
        del bad["b"]
    elif problem == "extra-key":
        bad["c"] = np.zeros(2, np.float32)
    else:
        counts[4] = 0
    strategy = FedLD(keep_ratio=0.7)
    msgs = _round(strategy, 2, current, [1, 2, 3, 4])
    replies = [_reply(msgs[n], models[n], counts[n]) for n in (1, 2, 3)]
    replies.append(_reply(msgs[4], bad, counts[4]))
    with caplog.at_level(logging.WARNING, logger="strategies.fedld"):
        arrays, metrics = strategy.aggregate_train(2, replies)
    assert "node 4" in caplog.text
    expected = aggregate_principal(current, [models[n] for n in (1, 2, 3)], keep_ratio=0.7)
    assert arrays is not None and metrics is not None
    assert all(np.array_equal(v, expected[k]) for k, v in _numpy(arrays).items())
    assert metrics["fedld-dropped"] == 1 and metrics["fedld-usable"] == 3
    assert metrics["loss"] == pytest.approx((1 + 4 + 9) / 6)  # weighted over usable replies


def test_no_usable_reply_keeps_model(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(24)
    current = _float_model(rng)
    strategy = FedLD()
    msgs = _round(strategy, 2, current, [1, 2, 3])
    nan = {k: np.full_like(v, np.nan) for k, v in current.items()}
    wrong = {k: np.zeros((2, 2), np.float32) for k in current}
    replies = [
        _reply(msgs[1], nan, 5),
        _reply(msgs[2], wrong, 5),
        Message(Error(code=0, reason="client crashed"), reply_to=msgs[3]),
    ]
    with caplog.at_level(logging.WARNING, logger="strategies.fedld"):
        arrays, metrics = strategy.aggregate_train(2, replies)
    assert arrays is None
    assert metrics is not None
    assert dict(metrics) == {"fedld-dropped": 2, "fedld-usable": 0}
    assert "keeping the current model" in caplog.text


def test_partial_participation_across_rounds() -> None:
    rng = np.random.default_rng(25)
    current = _float_model(rng)
    strategy = FedLD(weighting="num-examples", keep_ratio=0.5, server_lr=0.9)
    for server_round, nodes in enumerate(([1, 2, 3], [4, 5], [2, 5, 6, 7], [1, 7]), start=1):
        msgs = _round(strategy, server_round, current, nodes)
        models = {n: _client_model(rng, current, n) for n in nodes}
        arrays, metrics = strategy.aggregate_train(
            server_round, [_reply(msgs[n], models[n], n) for n in nodes]
        )
        assert arrays is not None and metrics is not None
        assert metrics["fedld-usable"] == len(nodes)
        expected = aggregate_principal(
            current,
            [models[n] for n in nodes],
            [float(n) for n in nodes],
            keep_ratio=0.5,
            server_lr=0.9,
            principal=server_round > 1,
        )
        current = _numpy(arrays)
        assert all(np.array_equal(current[k], expected[k]) for k in expected)


def test_aggregate_without_configure_raises() -> None:
    strategy = FedLD()
    with pytest.raises(AggregationError, match="configure_train"):
        strategy.aggregate_train(1, [])
    _round(strategy, 1, {"w": np.zeros(2, np.float32)}, [1, 2])
    with pytest.raises(AggregationError, match="configure_train"):
        strategy.aggregate_train(2, [])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_ratio": 0.0},
        {"keep_ratio": 1.01},
        {"server_lr": 0.0},
        {"server_lr": math.inf},
        {"weighting": "median"},
        {"warmup_rounds": -1},
        {"warmup_rounds": 1.5},
    ],
)
def test_invalid_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        FedLD(**kwargs)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        FedLD(0.5)  # type: ignore[misc]


def test_start_with_in_memory_grid() -> None:
    """Strategy.start drives FedLD with 3 of 6 nodes sampled per round."""
    rng = np.random.default_rng(26)
    initial = _float_model(rng)
    targets = {n: _client_model(rng, initial, n) for n in range(1, 7)}
    seen: list[int] = []

    def train(msg: Message) -> Message:
        assert msg.metadata.message_type == MessageType.TRAIN
        node = msg.metadata.dst_node_id
        seen.append(node)
        arrays = _numpy(msg.content.array_records["arrays"])
        local = {k: v + 0.5 * (targets[node][k] - v) for k, v in arrays.items()}
        return _reply(msg, local, 10 * node)

    strategy = FedLD(fraction_train=0.5, fraction_evaluate=0.0, min_available_nodes=6)
    result = strategy.start(InMemoryGrid(list(range(1, 7)), train), _record(initial), 3)
    assert len(seen) == 9
    assert sorted(result.train_metrics_clientapp) == [1, 2, 3]
    assert all(m["fedld-usable"] == 3 for m in result.train_metrics_clientapp.values())
    final = _numpy(result.arrays)
    assert all(
        final[k].shape == v.shape and np.all(np.isfinite(final[k])) for k, v in initial.items()
    )
    assert any(not np.array_equal(final[k], v) for k, v in initial.items())


@pytest.mark.parametrize(
    "value",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(5, dtype=">i8"),
        np.array(7, dtype=np.int64),
        np.zeros((0, 3), dtype=np.float16),
    ],
)
def test_array_view_contract(value: np.ndarray) -> None:
    """Flower serialises Arrays as .npy bytes; FedLD reads them without copying."""
    array = Array(value)
    view = array_view(array)
    expected = array.numpy()
    assert view.dtype == expected.dtype and view.shape == expected.shape
    assert np.array_equal(view, expected)
    assert not view.flags.writeable  # the zero-copy view was taken, not np.load's copy


def test_array_view_falls_back_to_a_copy() -> None:
    """An .npy version the view does not parse (3.0) still decodes, via Array.numpy()."""
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    stream = io.BytesIO()
    np.lib.format.write_array(stream, value, version=(3, 0))
    array = Array(dtype="float32", shape=(2, 3), stype=Array(value).stype, data=stream.getvalue())
    decoded = array_view(array)
    assert decoded.flags.writeable and np.array_equal(decoded, value)  # np.load's copy
