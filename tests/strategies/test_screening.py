"""Reply screening: a non-finite aggregate is counted and never becomes the global model."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg

import fedsim
from fedsim.engine.core import initial_arrays
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


class OverflowingFedAvg(FedAvg):
    """FedAvg whose aggregate overflows to inf (as a huge server step would)."""

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = ArrayRecord({k: Array(v.numpy() * math.inf) for k, v in arrays.items()})
        return arrays, metrics


def test_nonfinite_aggregate_keeps_previous_model_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedsim.strategies.screening"):
        result = fedsim.run(REPO / "scenarios/default.toml", SMALL, strategy=OverflowingFedAvg)
    server = result.server_metrics()
    assert (server["train-nonfinite-aggregate"] == 1).all()
    assert (server["train-model-kept"] == 1).all()
    assert len(server) == SMALL["rounds"]
    start = initial_arrays(result.scenario, _data(result.scenario))
    for key, value in start.items():  # every round kept the initial model
        assert np.array_equal(result.arrays[key], value.numpy()), key
    warned = [r for r in caplog.records if "NaN or Inf" in r.getMessage()]
    assert len(warned) == 1


def test_finite_aggregate_is_not_counted() -> None:
    result = fedsim.run(REPO / "scenarios/default.toml", SMALL)
    server = result.server_metrics()
    assert (server["train-nonfinite-aggregate"] == 0).all()
    assert (server["train-model-kept"] == 0).all()


def _data(scenario: fedsim.Scenario) -> object:
    from fedsim.clients.app import get_runtime

    return get_runtime({"scenario": scenario.to_toml(), "data-dir": ""}).data
