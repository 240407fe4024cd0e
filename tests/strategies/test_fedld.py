"""FedLD strategy: reply screening, warm-up, partial participation, Flower end to end.

The maths is tested against its oracles in ``test_principal.py``; here FedLD's arrays
are compared with :func:`fedsim.strategies.principal.aggregate_principal` on the usable replies.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
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
from flwr.serverapp.strategy import FedAvg

from fedsim.engine import _flower_compat
from fedsim.engine._flower_compat import array_view
from fedsim.engine.grid import InProcessGrid
from fedsim.errors import AggregationError, ConfigError
from fedsim.strategies.fedld import FedLD
from fedsim.strategies.principal import aggregate_principal
from fedsim.strategies.screening import MALFORMED, NONFINITE, USABLE, Screened


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Messages need the identity of the process task; restored after each test."""
    with _flower_compat.task_identity(run_id=1, node_id=0, task_id=1):
        yield


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
    grid = InProcessGrid(nodes, handler=lambda batch: [])
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
    with caplog.at_level(logging.WARNING, logger="fedsim.strategies.fedld"):
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
    with caplog.at_level(logging.WARNING, logger="fedsim.strategies.fedld"):
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
    grid = InProcessGrid(list(range(1, 7)), lambda batch: [train(m) for m in batch])
    result = strategy.start(grid, _record(initial), 3)
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


@pytest.mark.parametrize("mean_only", [[1, 2], "running_mean", [None]])
def test_mean_only_that_is_not_a_list_of_names_is_one_config_error(mean_only: object) -> None:
    with pytest.raises(ConfigError, match="mean_only must be a list of parameter-name"):
        FedLD(mean_only=mean_only)  # type: ignore[arg-type]


def test_screening_wrapper_and_fedld_drop_the_same_replies() -> None:
    rng = np.random.default_rng(25)
    current = _float_model(rng)
    good = {n: _client_model(rng, current, n) for n in (1, 2)}
    nan = {k: np.full_like(v, np.nan) for k, v in current.items()}
    transposed = {**current, "w": current["w"].T.copy()}
    missing = {"w": current["w"]}
    bad = {3: nan, 4: transposed, 5: missing}
    counted = {}
    for strategy in (FedLD(), Screened(FedAvg())):
        msgs = _round(strategy, 2, current, [1, 2, 3, 4, 5])
        replies = [_reply(msgs[n], m, 10) for n, m in (good | bad).items()]
        _, metrics = strategy.aggregate_train(2, replies)
        assert metrics is not None
        counted[type(strategy).__name__] = metrics
    assert counted["FedLD"]["fedld-dropped"] == 3 and counted["FedLD"]["fedld-usable"] == 2
    screened = counted["Screened"]
    assert (screened[MALFORMED], screened[NONFINITE], screened[USABLE]) == (2, 1, 2)
