"""The state protocol: Flower strategies restore exactly their table's attributes."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedMedian, FedYogi, QFedAvg

from fedsim.errors import CheckpointError
from fedsim.state import Stateful
from fedsim.strategies.fedld import FedLD
from fedsim.strategies.state import FLOWER_STATE, AttributeState, stateful

MODEL = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}


def _arrays(scale: float) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, scale) for k, v in MODEL.items()}


def test_fedadam_state_round_trips_moments_and_not_configuration() -> None:
    strategy = FedAdam(eta=0.5)
    strategy.current_arrays, strategy.m_t, strategy.v_t = _arrays(1), _arrays(2), _arrays(3)
    state = stateful(strategy, MODEL).state()
    names = ("current_arrays", "m_t", "v_t")
    assert sorted(state) == sorted(f"{a}/{k}" for a in names for k in MODEL)
    fresh = FedAdam(eta=0.1)
    stateful(fresh, MODEL).load_state(state)
    assert fresh.m_t is not None and fresh.v_t is not None and fresh.current_arrays is not None
    assert all((fresh.m_t[k] == 2).all() and (fresh.v_t[k] == 3).all() for k in MODEL)
    assert list(fresh.m_t) == list(MODEL)  # the model's key order, whatever the file's
    assert fresh.eta == 0.1  # configuration comes from the scenario, never the checkpoint


def test_absent_attribute_restores_as_none() -> None:
    fresh = FedYogi()
    fresh.m_t = _arrays(5)
    stateful(fresh, MODEL).load_state({})
    assert fresh.m_t is None and fresh.v_t is None


@pytest.mark.parametrize("name", ["configure_train", "eta", "__class__", "summary"])
def test_load_state_rejects_names_outside_the_table(name: str) -> None:
    strategy = FedAdam()
    with pytest.raises(CheckpointError, match="keeps no state named"):
        stateful(strategy, MODEL).load_state({f"{name}/w": np.zeros((2, 3))})
    assert callable(strategy.configure_train) and strategy.eta == FedAdam().eta


def test_load_state_checks_shapes_and_sets_nothing_on_failure() -> None:
    strategy = FedAdam()
    state = {f"m_t/{k}": v for k, v in _arrays(1).items()}
    state["v_t/w"], state["v_t/b"] = np.zeros((3, 2), np.float32), np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="shape"):
        stateful(strategy, MODEL).load_state(state)
    assert strategy.m_t is None  # m_t was valid but is not set alone


def test_fedavgm_momentum_list_round_trips_and_checks_its_length() -> None:
    strategy = FedAvgM(server_momentum=0.9)
    strategy.momentum_vector = list(_arrays(4).values())
    strategy.current_arrays = ArrayRecord({k: Array(v) for k, v in _arrays(1).items()})
    state = stateful(strategy, MODEL).state()
    fresh = FedAvgM(server_momentum=0.9)
    stateful(fresh, MODEL).load_state(state)
    assert fresh.momentum_vector is not None and len(fresh.momentum_vector) == 2
    assert isinstance(fresh.current_arrays, ArrayRecord)
    state.pop("momentum_vector/1")
    with pytest.raises(CheckpointError, match=r"items 0\.\.1"):
        stateful(FedAvgM(), MODEL).load_state(state)


def test_table_covers_flower_strategies_by_class() -> None:
    assert isinstance(stateful(QFedAvg(client_learning_rate=0.1), MODEL), AttributeState)
    assert stateful(FedMedian(), MODEL).state() == {}  # a FedAvg: no state
    assert FLOWER_STATE[FedAvg] == {}


def test_fedld_is_stateful_itself_and_accepts_only_empty_state() -> None:
    strategy = FedLD()
    assert isinstance(strategy, Stateful) and stateful(strategy, MODEL) is strategy
    assert strategy.state() == {}
    with pytest.raises(CheckpointError, match="keeps no state"):
        strategy.load_state({"x": np.zeros(1)})
