"""FairFed: the weight update on hand-computed tables, β = 0 = FedAvg, state, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

import fedsim
from fedsim.clients import keys
from fedsim.config import StrategyConfig
from fedsim.engine._flower_compat import task_identity
from fedsim.errors import ConfigError, DataError
from fedsim.strategies.fairfed import FairFed
from fedsim.strategies.fairfed_weights import fairfed_deltas, fairness_vector, update_weights
from fedsim.strategies.registry import build_strategy
from fedsim.strategies.state import stateful

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def identity() -> Iterator[None]:
    """Messages need the identity of the process task; restored after each test."""
    with task_identity(1):
        yield


def _table(cells: dict[tuple[int, int, int], int]) -> np.ndarray:
    """A [z, y, yhat] count table from {(z, y, yhat): count}."""
    table = np.zeros((2, 2, 2), dtype=np.int64)
    for index, count in cells.items():
        table[index] = count
    return table


def _train_reply(pid: int, arrays: dict[str, np.ndarray], n: int) -> Message:
    instruction = Message(RecordDict(), dst_node_id=100 + pid, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: n, keys.PARTITION_ID: pid}),
        }
    )
    return Message(content, reply_to=instruction)


def _eval_reply(pid: int, table: np.ndarray) -> Message:
    instruction = Message(RecordDict(), dst_node_id=100 + pid, message_type=MessageType.EVALUATE)
    n = int(table.sum())
    metrics = {
        keys.NUM_EXAMPLES: n,
        keys.EVAL_ACC: float(np.trace(table, axis1=1, axis2=2).sum() / n),
        keys.PARTITION_ID: pid,
        keys.NUM_GROUPS: 2,
        keys.NUM_CLASSES: 2,
        keys.FAIR_COUNTS: table.reshape(-1).tolist(),
    }
    return Message(RecordDict({keys.METRICS: MetricRecord(metrics)}), reply_to=instruction)


# Round 1 (every prediction correct): P(yhat=1 | z) per client
#   A: z0 6/10, z1 2/10 -> SPD 0.4;  B: 8/20, 8/20 -> 0;  C: 5/10, 3/10 -> 0.2
#   pooled: 19/40 - 13/40 = 0.15;  deltas (0.25, 0.15, 0.05), mean 0.15
#   beta = 1: (0.25, 0.5, 0.25) - (0.10, 0, -0.10) = (0.15, 0.5, 0.35)
ROUND1 = [
    _table({(0, 1, 1): 6, (0, 0, 0): 4, (1, 1, 1): 2, (1, 0, 0): 8}),
    _table({(0, 1, 1): 8, (0, 0, 0): 12, (1, 1, 1): 8, (1, 0, 0): 12}),
    _table({(0, 1, 1): 5, (0, 0, 0): 5, (1, 1, 1): 3, (1, 0, 0): 7}),
]
# Round 2: A: 5/10, 5/10 -> 0;  B: 10/20, 6/20 -> 0.2;  C holds only z = 0 (SPD
#   undefined) with accuracy 8/10. Pooled (70 rows): 21/40 - 11/30 = 19/120, accuracy
#   68/70. deltas: 19/120, |19/120 - 24/120| = 5/120, |68/70 - 8/10| = 6/35, i.e.
#   (133, 35, 144)/840, mean 104/840
#   beta = 1: (126, 420, 294)/840 - (29, -69, 40)/840 = (97, 489, 254)/840
ROUND2 = [
    _table({(0, 1, 1): 5, (0, 0, 0): 5, (1, 1, 1): 5, (1, 0, 0): 5}),
    _table({(0, 1, 1): 10, (0, 0, 0): 10, (1, 1, 1): 6, (1, 0, 0): 14}),
    _table({(0, 1, 1): 4, (0, 0, 1): 2, (0, 0, 0): 4}),
]
SIZES = [100, 200, 100]
VALUES = [1.0, 2.0, 4.0]  # each client's one-parameter "model"


def _train(strategy: FedAvg, server_round: int, values: list[float] = VALUES) -> np.ndarray:
    replies = [
        _train_reply(pid, {"w": np.array([v])}, n)
        for pid, (v, n) in enumerate(zip(values, SIZES, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    assert arrays is not None
    return arrays["w"].numpy()


def _shares(strategy: FairFed) -> np.ndarray:
    return strategy.weights / strategy.weights.sum()


def test_weights_follow_the_update_rule_on_hand_computed_tables() -> None:
    strategy = FairFed(beta=1.0, metric="demographic-parity")
    assert _train(strategy, 1)[0] == pytest.approx((100 * 1 + 200 * 2 + 100 * 4) / 400)
    strategy.aggregate_evaluate(1, [_eval_reply(k, t) for k, t in enumerate(ROUND1)])
    assert _shares(strategy) == pytest.approx([0.15, 0.5, 0.35], abs=1e-12)
    assert strategy.weights.sum() == pytest.approx(400.0)  # kept in examples
    assert _train(strategy, 2)[0] == pytest.approx(0.15 * 1 + 0.5 * 2 + 0.35 * 4, abs=1e-12)
    strategy.aggregate_evaluate(2, [_eval_reply(k, t) for k, t in enumerate(ROUND2)])
    assert _shares(strategy) == pytest.approx(np.array([97, 489, 254]) / 840, abs=1e-12)
    assert _train(strategy, 3)[0] == pytest.approx((97 + 489 * 2 + 254 * 4) / 840, abs=1e-12)


def test_pure_maths_on_the_same_tables() -> None:
    assert fairness_vector(ROUND1[0], "demographic-parity") == pytest.approx([0.4])
    assert fairness_vector(ROUND2[2], "demographic-parity") is None
    assert fairfed_deltas(np.stack(ROUND2), "demographic-parity") == pytest.approx(
        np.array([133, 35, 144]) / 840
    )
    assert update_weights(np.array([0.25, 0.5, 0.25]), np.array([0.25, 0.15, 0.05]), 1.0) == (
        pytest.approx([0.15, 0.5, 0.35])
    )


def test_equal_opportunity_is_the_true_positive_rate_difference() -> None:
    table = _table({(0, 1, 1): 3, (0, 1, 0): 1, (1, 1, 1): 1, (1, 1, 0): 3, (0, 0, 1): 4})
    assert fairness_vector(table, "equal-opportunity") == pytest.approx([0.75 - 0.25])
    assert fairness_vector(table, "equalized-odds") is None  # no (z=1, y=0) rows
    table[1, 0, 0] = 2  # FPR: z0 4/4 = 1, z1 0/2 = 0
    assert fairness_vector(table, "equalized-odds") == pytest.approx([1.0, 0.5])


def test_a_large_beta_clips_weights_at_zero_and_keeps_the_total() -> None:
    out = update_weights(np.array([10.0, 10.0]), np.array([1.0, 0.0]), 5.0)
    assert out.tolist() == [0.0, 20.0]


def test_beta_zero_is_fedavg_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    fedavg, fairfed = FedAvg(), FairFed(beta=0.0)
    for server_round in (1, 2, 3):
        models = [{"a": rng.standard_normal((3, 4)).astype(np.float32)} for _ in SIZES]
        pairs = list(enumerate(zip(models, SIZES, strict=True)))
        expected, _ = fedavg.aggregate_train(
            server_round, [_train_reply(k, m, n) for k, (m, n) in pairs]
        )
        got, _ = fairfed.aggregate_train(
            server_round, [_train_reply(k, m, n) for k, (m, n) in pairs]
        )
        assert expected is not None and got is not None
        assert np.array_equal(expected["a"].numpy(), got["a"].numpy())
        fairfed.aggregate_evaluate(server_round, [_eval_reply(k, t) for k, t in enumerate(ROUND1)])


def test_positive_beta_moves_away_from_fedavg() -> None:
    strategy = FairFed(beta=1.0)
    _train(strategy, 1)
    strategy.aggregate_evaluate(1, [_eval_reply(k, t) for k, t in enumerate(ROUND1)])
    assert _train(strategy, 2)[0] != pytest.approx(2.25)


def test_state_round_trips_through_the_checkpoint_state_protocol() -> None:
    strategy = FairFed(beta=1.0)
    _train(strategy, 1)
    strategy.aggregate_evaluate(1, [_eval_reply(k, t) for k, t in enumerate(ROUND1)])
    restored = FairFed(beta=1.0)
    restored.load_state(strategy.state())
    assert np.array_equal(restored.weights, strategy.weights)
    assert np.array_equal(restored.partition_ids, [0, 1, 2])
    # what the checkpoint stores and restores: the strategy's own state() protocol
    assert stateful(strategy, {}) is strategy
    resumed = FairFed(beta=1.0)
    stateful(resumed, {}).load_state(stateful(strategy, {}).state())
    assert np.array_equal(resumed.weights, strategy.weights)
    assert _train(resumed, 2)[0] == _train(strategy, 2)[0]


def test_load_state_rejects_foreign_or_inconsistent_state() -> None:
    strategy = FairFed()
    with pytest.raises(DataError, match="partition-ids"):
        strategy.load_state({"weights": np.ones(2)})
    with pytest.raises(DataError, match="non-negative"):
        strategy.load_state({"partition-ids": np.arange(2), "weights": np.array([1.0, -1.0])})


@pytest.mark.parametrize(
    ("options", "message"),
    [({"beta": -0.5}, "beta"), ({"metric": "parity"}, "metric"), ({"gamma": 1}, "gamma")],
)
def test_invalid_options_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_strategy(StrategyConfig(name="fairfed", options=options), num_nodes=3)


def test_fairfed_runs_end_to_end_through_fedsim_run() -> None:
    over = {
        "rounds": 3,
        "partition.num_clients": 4,
        "data.num_samples": 1200,
        "fairness.pid": False,
        "fairness.bounds": False,
        "strategy.name": "fairfed",
        "strategy.options": {"beta": 1.0, "metric": "equalized-odds"},
    }
    default = REPO / "scenarios" / "default.toml"
    fair = fedsim.run(default, over)
    plain = fedsim.run(default, {**over, "strategy.name": "fedavg", "strategy.options": {}})
    frame = fair.metrics
    shares = frame[(frame["client"] == "server") & (frame["metric"] == "fairfed-max-share")]
    assert sorted(shares["round"]) == [1, 2, 3]
    assert float(shares["value"].iloc[-1]) > 0.25  # 4 clients moved off their n_k/n
    assert any(not np.array_equal(fair.arrays[k], plain.arrays[k]) for k in plain.arrays)
