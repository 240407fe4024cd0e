"""FairnessAccounting: oracles for the pooled tables, disparities, PID and group metrics.

Replies are built from per-sample arrays (z, y, ŷ) per client, so every number the
wrapper derives from counts can be checked against a direct per-sample computation
(scikit-learn's mutual information, group rates by boolean masks).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedMedian, Strategy
from sklearn.metrics import mutual_info_score

import fedsim
import fedsim.fairness.accounting as accounting
import fedsim.strategies.fairness_accounting as fa
from fedsim.clients import keys
from fedsim.engine.grid import task_identity
from fedsim.errors import DataError, SolverError
from fedsim.fairness.accounting import round_fairness
from fedsim.fairness.information import conditional_mutual_information, mutual_information
from fedsim.fairness.metrics import PER_GROUP
from fedsim.strategies.fairness_accounting import FairnessAccounting

LN2 = math.log(2)
Samples = tuple[np.ndarray, np.ndarray, np.ndarray]  # z, y, yhat


@pytest.fixture(autouse=True)
def _identity() -> Iterator[None]:
    with task_identity(run_id=1):
        yield


class Recorder:
    """Collects the per-client rows the wrapper hands to ``add``."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str, str], float] = {}

    def add(self, server_round: int, client: str, metric: str, value: float) -> None:
        self.rows[(server_round, client, metric)] = value


# ----------------------------------------------------------------------- builders


def counts_of(samples: Samples, groups: int = 2, classes: int = 2) -> np.ndarray:
    z, y, yhat = samples
    table = np.zeros((groups, classes, classes), dtype=np.int64)
    np.add.at(table, (z, y, yhat), 1)
    return table


def reply(table: np.ndarray, partition_id: int, **extra: Any) -> Message:
    """An evaluate reply as clients.app.handle_evaluate writes it."""
    instruction = Message(
        RecordDict(), dst_node_id=1000 + partition_id, message_type=MessageType.EVALUATE
    )
    n = int(table.sum())
    correct = int(np.trace(table, axis1=1, axis2=2).sum()) if n else 0
    metrics: dict[str, Any] = {
        keys.NUM_EXAMPLES: n,
        keys.EVAL_LOSS: 0.5 + 0.01 * partition_id,
        keys.EVAL_ACC: correct / n if n else 0.0,
        keys.PARTITION_ID: partition_id,
        keys.NUM_GROUPS: table.shape[0],
        keys.NUM_CLASSES: table.shape[1],
        keys.FAIR_COUNTS: table.reshape(-1).tolist(),
    }
    metrics.update(extra)
    return Message(RecordDict({keys.METRICS: MetricRecord(metrics)}), reply_to=instruction)


def random_samples(rng: np.random.Generator, n: int) -> Samples:
    """Binary z, y, ŷ with a client-specific group mix and bias."""
    z = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(np.int64)
    y = np.where(rng.random(n) < 0.7, z, 1 - z)
    flip = rng.random(n) < np.where(z == 1, rng.uniform(0.05, 0.3), rng.uniform(0.2, 0.5))
    return z, y, np.where(flip, 1 - y, y)


def random_clients(seed: int, num_clients: int = 4) -> dict[int, Samples]:
    rng = np.random.default_rng(seed)
    ids = rng.choice(100, size=num_clients, replace=False)
    return {int(i): random_samples(rng, int(rng.integers(40, 300))) for i in ids}


def account(
    clients: dict[int, Samples], strategy: FairnessAccounting | None = None, rnd: int = 1
) -> tuple[FairnessAccounting, dict[str, float]]:
    """Run the wrapper's aggregate_evaluate on the clients' replies; its scalar metrics."""
    strategy = strategy or FairnessAccounting(FedAvg(), recorder=Recorder())
    replies = [reply(counts_of(s), pid) for pid, s in clients.items()]  # unsorted ids
    metrics = strategy.aggregate_evaluate(rnd, replies)
    assert metrics is not None
    return strategy, {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def rate(yhat: np.ndarray, mask: np.ndarray) -> float:
    return float(yhat[mask].mean())


def direct_spd(s: Samples) -> float:
    z, _, yhat = s
    if len(np.unique(z)) < 2:
        return 0.0
    return abs(rate(yhat, z == 1) - rate(yhat, z == 0))


def direct_eod(s: Samples) -> float:
    z, y, yhat = s
    gaps = [
        abs(rate(yhat, (y == c) & (z == 1)) - rate(yhat, (y == c) & (z == 0)))
        for c in (0, 1)
        if ((y == c) & (z == 1)).any() and ((y == c) & (z == 0)).any()
    ]
    return max(gaps, default=0.0)


def concat(clients: dict[int, Samples]) -> Samples:
    return tuple(np.concatenate(parts) for parts in zip(*clients.values(), strict=True))  # type: ignore[return-value]


# ----------------------------------------------------------------------- pooling


def test_pooled_table_stacks_client_tables_in_partition_order() -> None:
    clients = random_clients(0, num_clients=5)
    strategy, _ = account(clients, rnd=3)
    order = sorted(clients)
    assert strategy.partition_history[3] == order
    pooled = strategy.counts_history[3]
    assert pooled.shape == (5, 2, 2, 2)
    for s, pid in enumerate(order):
        np.testing.assert_array_equal(pooled[s], counts_of(clients[pid]))
    np.testing.assert_array_equal(pooled.sum(axis=0), sum(counts_of(c) for c in clients.values()))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_disparities_match_per_sample_mutual_information(seed: int) -> None:
    clients = random_clients(seed)
    _, metrics = account(clients)
    z, _, yhat = concat(clients)
    n = len(z)
    global_oracle = mutual_info_score(z, yhat) / LN2
    # I(Z;Ŷ|S) = sum_k P(S=k) I(Z;Ŷ | S=k), P(S=k) = n_k / n
    local_oracle = sum(
        len(c[0]) / n * mutual_info_score(c[0], c[2]) / LN2 for c in clients.values()
    )
    assert metrics["global-disparity"] == pytest.approx(global_oracle, abs=1e-12)
    assert metrics["local-disparity"] == pytest.approx(local_oracle, abs=1e-12)
    # and fairness.information on the pooled joint [z, yhat, s] built here
    joint = np.stack([counts_of(clients[p]).sum(axis=1) for p in sorted(clients)], axis=-1)
    assert metrics["global-disparity"] == pytest.approx(mutual_information(joint.sum(axis=2)))
    assert metrics["local-disparity"] == pytest.approx(conditional_mutual_information(joint))


@pytest.mark.parametrize("seed", [4, 5, 6, 7])
def test_pid_identities(seed: int) -> None:
    _, m = account(random_clients(seed, num_clients=3 + seed % 3))
    assert m["pid-solved"] == 1.0
    assert m["unique"] + m["redundant"] == pytest.approx(m["global-disparity"], abs=1e-9)
    assert m["unique"] + m["masked"] == pytest.approx(m["local-disparity"], abs=1e-9)
    assert min(m["unique"], m["redundant"], m["masked"]) >= 0.0


def _canonical(yhat_of: Any, z_per_client: list[list[int]]) -> dict[int, Samples]:
    clients = {}
    for pid, zs in enumerate(z_per_client):
        z = np.repeat(np.asarray(zs), 50)
        y = z.copy()
        clients[pid] = (z, y, yhat_of(pid, z))
    return clients


@pytest.mark.parametrize(
    ("case", "yhat_of", "z_per_client", "expected"),
    [
        # Ŷ = Z, every client half and half (Z ⊥ S): all disparity is unique
        ("unique", lambda k, z: z, [[0, 1], [0, 1], [0, 1]], (1.0, 0.0, 0.0)),
        # Ŷ = Z, each client one group (S = Z): globally visible, locally none
        ("redundant", lambda k, z: z, [[0], [1]], (0.0, 1.0, 0.0)),
        # Ŷ = Z on client 0 and Ŷ = 1 − Z on client 1: only visible locally
        ("masked", lambda k, z: z if k == 0 else 1 - z, [[0, 1], [0, 1]], (0.0, 0.0, 1.0)),
    ],
)
def test_canonical_cases(case: str, yhat_of: Any, z_per_client: Any, expected: Any) -> None:
    _, m = account(_canonical(yhat_of, z_per_client))
    got = (m["unique"], m["redundant"], m["masked"])
    np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=case)


# ----------------------------------------------------------------- group metrics


@pytest.mark.parametrize("seed", [8, 9])
def test_client_and_global_group_metrics_match_per_sample_computation(seed: int) -> None:
    clients = random_clients(seed)
    strategy, m = account(clients, rnd=2)
    rows = strategy.recorder.rows  # type: ignore[union-attr]
    for pid, s in clients.items():
        z, y, yhat = s
        dpd, eod = direct_spd(s), direct_eod(s)
        assert rows[(2, str(pid), "demographic_parity_difference")] == pytest.approx(dpd, abs=1e-12)
        assert rows[(2, str(pid), "equalized_odds_difference")] == pytest.approx(eod, abs=1e-12)
        assert rows[(2, str(pid), "disparity")] == pytest.approx(mutual_info_score(z, yhat) / LN2)
        for g in (0, 1):
            acc = float((y == yhat)[z == g].mean())
            assert rows[(2, str(pid), f"accuracy-{g}")] == pytest.approx(acc, abs=1e-12)
    pooled = concat(clients)
    assert m["demographic_parity_difference"] == pytest.approx(direct_spd(pooled), abs=1e-12)
    assert m["equalized_odds_difference"] == pytest.approx(direct_eod(pooled), abs=1e-12)
    z, y, yhat = pooled
    for g in (0, 1):
        assert m[f"accuracy-{g}"] == pytest.approx(float((y == yhat)[z == g].mean()))


# -------------------------------------------------------------- inner strategies


@pytest.mark.parametrize("inner_cls", [FedAvg, FedMedian])
def test_inner_strategy_metrics_are_preserved(inner_cls: type[Strategy]) -> None:
    clients = random_clients(10)
    replies = [reply(counts_of(s), pid) for pid, s in clients.items()]
    expected = inner_cls().aggregate_evaluate(1, replies)
    got = FairnessAccounting(inner_cls()).aggregate_evaluate(1, replies)
    assert expected is not None and got is not None
    scalars = {k: v for k, v in expected.items() if not isinstance(v, list)}
    assert {keys.EVAL_ACC, keys.EVAL_LOSS} <= scalars.keys()
    for key, value in scalars.items():
        assert got[key] == value, key
    ours = {
        "global-disparity",
        "local-disparity",
        "unique",
        "redundant",
        "masked",
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equalized_odds_difference",
        "equalized_odds_ratio",
        "worst-client-accuracy",
        "client-accuracy-spread",
        "client-accuracy-std",
        *(f"{m}-{g}" for m in PER_GROUP for g in (0, 1)),
        "pid-solved",
    }
    assert set(got) == set(expected) | ours


class Spy(Strategy):
    """Records every hook call and returns a sentinel."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def summary(self) -> None:
        self.calls.append(("summary", ()))

    def configure_train(self, *args: Any) -> Any:
        self.calls.append(("configure_train", args))
        return ["train-messages"]

    def aggregate_train(self, *args: Any) -> Any:
        self.calls.append(("aggregate_train", args))
        return "arrays", MetricRecord({"train-loss": 0.3})

    def configure_evaluate(self, *args: Any) -> Any:
        self.calls.append(("configure_evaluate", args))
        return ["evaluate-messages"]

    def aggregate_evaluate(self, *args: Any) -> Any:
        self.calls.append(("aggregate_evaluate", args))
        return None


def test_other_hooks_are_delegated_unchanged() -> None:
    spy = Spy()
    wrapper = FairnessAccounting(spy)
    arrays, config, grid, replies = object(), ConfigRecord(), object(), ["r1", "r2"]
    assert wrapper.configure_train(4, arrays, config, grid) == ["train-messages"]  # type: ignore[arg-type]
    assert wrapper.aggregate_train(4, replies)[1]["train-loss"] == 0.3  # type: ignore[arg-type, index]
    assert wrapper.configure_evaluate(4, arrays, config, grid) == ["evaluate-messages"]  # type: ignore[arg-type]
    wrapper.summary()
    assert spy.calls == [
        ("configure_train", (4, arrays, config, grid)),
        ("aggregate_train", (4, replies)),
        ("configure_evaluate", (4, arrays, config, grid)),
        ("summary", ()),
    ]
    # An inner strategy that aggregates nothing still gets fairness metrics out.
    m = wrapper.aggregate_evaluate(
        4, [reply(counts_of(s), p) for p, s in random_clients(11).items()]
    )
    assert m is not None and "global-disparity" in m and "eval-acc" not in m


# --------------------------------------------------------------- degenerate input


def test_unusable_replies_are_skipped() -> None:
    clients = random_clients(12, num_clients=3)
    good = [reply(counts_of(s), p) for p, s in clients.items()]
    instruction = Message(RecordDict(), dst_node_id=7, message_type=MessageType.EVALUATE)
    no_counts = Message(
        RecordDict({"metrics": MetricRecord({keys.NUM_EXAMPLES: 5, keys.PARTITION_ID: 90})}),
        reply_to=instruction,
    )
    bad = [
        reply(np.zeros((2, 2, 2), dtype=np.int64), 91),  # no test samples
        no_counts,
        reply(counts_of(clients[next(iter(clients))]), 92, **{keys.NUM_CLASSES: 3}),  # length
        Message(Error(code=1, reason="crashed"), reply_to=instruction),
    ]
    # (FedAvg itself rejects replies with differing keys; the accounting must not.)
    strategy = FairnessAccounting(Spy())
    m = strategy.aggregate_evaluate(1, good + bad)
    reference = FairnessAccounting(Spy())
    m_ref = reference.aggregate_evaluate(1, good)
    assert strategy.partition_history[1] == sorted(clients)
    np.testing.assert_array_equal(strategy.counts_history[1], reference.counts_history[1])
    assert m is not None and m_ref is not None
    for key in ("global-disparity", "local-disparity", "unique", "demographic_parity_difference"):
        assert m[key] == m_ref[key]


def test_no_usable_counts_returns_inner_metrics_only() -> None:
    instruction = Message(RecordDict(), dst_node_id=7, message_type=MessageType.EVALUATE)
    plain = Message(
        RecordDict({"metrics": MetricRecord({keys.NUM_EXAMPLES: 5, keys.EVAL_ACC: 0.5})}),
        reply_to=instruction,
    )
    strategy = FairnessAccounting(FedAvg())
    m = strategy.aggregate_evaluate(1, [plain])
    assert m is not None and set(m) == {keys.EVAL_ACC}
    assert strategy.counts_history == {}


def test_single_group_gives_zero_disparity_without_solving(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decompose must not be called with one group")

    monkeypatch.setattr(accounting, "decompose", refuse)
    tables = [np.array([[[30, 5], [8, 40]]]), np.array([[[10, 2], [1, 12]]])]
    strategy = FairnessAccounting(FedAvg(), recorder=Recorder())
    m = strategy.aggregate_evaluate(1, [reply(t, i) for i, t in enumerate(tables)])
    assert m is not None
    for key in (
        "global-disparity",
        "local-disparity",
        "unique",
        "redundant",
        "masked",
        "demographic_parity_difference",
        "equalized_odds_difference",
    ):
        assert m[key] == 0.0, key
    assert m["pid-solved"] == 1.0 and m["accuracy-0"] == pytest.approx((30 + 40 + 10 + 12) / 108)
    # A client with one group has no disparity to speak of: n/a (NaN), not a perfect 0.
    assert math.isnan(strategy.recorder.rows[(1, "0", "disparity")])  # type: ignore[union-attr]


def test_solver_failure_records_nan_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise SolverError("CLARABEL ended with status 'infeasible'")

    monkeypatch.setattr(accounting, "decompose", fail)
    clients = random_clients(13)
    with caplog.at_level(logging.WARNING, logger=fa.__name__):
        _, m = account(clients, rnd=5)
    assert m["pid-solved"] == 0.0
    assert all(math.isnan(m[k]) for k in ("unique", "redundant", "masked"))
    z, _, yhat = concat(clients)
    assert m["global-disparity"] == pytest.approx(mutual_info_score(z, yhat) / LN2)
    assert any("round 5" in r.message and "infeasible" in r.message for r in caplog.records)


def test_pid_off_skips_decomposition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounting, "decompose", lambda *a, **k: pytest.fail("decompose called"))
    strategy = FairnessAccounting(FedAvg(), pid=False)
    _, m = account(random_clients(14), strategy)
    assert not {"unique", "redundant", "masked", "pid-solved"} & set(m)
    assert m["global-disparity"] > 0 and m["local-disparity"] > 0


def test_state_round_trips_through_npz() -> None:
    strategy = FairnessAccounting(FedAvg())
    for rnd in (1, 2):
        account(random_clients(20 + rnd, num_clients=2 + rnd), strategy, rnd=rnd)
    buffer = io.BytesIO()
    np.savez(buffer, **strategy.state())  # type: ignore[arg-type]
    buffer.seek(0)
    restored = FairnessAccounting(FedAvg())
    with np.load(buffer) as data:
        restored.load_state(dict(data))
    assert restored.partition_history == strategy.partition_history
    assert restored.counts_history.keys() == {1, 2}
    for rnd, counts in strategy.counts_history.items():
        np.testing.assert_array_equal(restored.counts_history[rnd], counts)
        assert round_fairness(counts) == strategy.history[rnd]
    with pytest.raises(DataError, match="counts/<round>"):
        restored.load_state({"weights/1": np.zeros(3)})
    with pytest.raises(DataError, match="round 1"):
        restored.load_state({"counts/1": strategy.counts_history[1]})


# ---------------------------------------------------------------------- end to end


def test_end_to_end_default_scenario() -> None:
    result = fedsim.run("scenarios/default.toml", {"rounds": 2, "fairness.enabled": True})
    server = result.server_metrics()
    names = ["global-disparity", "local-disparity", "unique", "redundant", "masked"]
    fairlearn = ["demographic_parity_difference", "equalized_odds_difference"]
    assert set(names + ["pid-solved", *fairlearn, "accuracy-0"]) <= set(server.columns)
    assert list(server.index) == [1, 2]
    assert (server["pid-solved"] == 1.0).all()
    np.testing.assert_allclose(
        server.unique + server.redundant, server["global-disparity"], atol=1e-6
    )
    np.testing.assert_allclose(server.unique + server.masked, server["local-disparity"], atol=1e-6)
    assert (server["global-disparity"] > 0).all()
    frame = result.metrics
    per_client = frame[(frame.client != "server") & (frame.metric == "disparity")]
    assert per_client.groupby("round").client.nunique().tolist() == [10, 10]
