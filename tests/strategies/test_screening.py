"""Reply screening: a non-finite aggregate is counted and never becomes the global model."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

import fedsim
from fedsim.engine.core import initial_arrays
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
# An infinite server rate (TOML `eta = inf`) makes FedAdam's step non-finite.
OVERFLOW = {**SMALL, "strategy.name": "fedadam", "strategy.options": {"eta": math.inf}}


def test_nonfinite_aggregate_keeps_previous_model_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedsim.strategies.screening"):
        result = fedsim.run(REPO / "scenarios/default.toml", OVERFLOW)
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
