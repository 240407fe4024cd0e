"""Fault injection: failed and bad replies are counted, never aggregated; runs finish."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import fedsim
from fedsim import results
from tests.conftest import SMALL

DEFAULT = Path(__file__).resolve().parents[2] / "scenarios" / "default.toml"


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("fedsim.strategies.screening").setLevel(logging.ERROR)


def test_crashing_clients_are_counted_and_the_run_finishes() -> None:
    res = fedsim.run(DEFAULT, {**SMALL, "rounds": 4, "faults.crash_prob": 0.5})
    server = res.server_metrics()
    assert list(server.index) == [1, 2, 3, 4]
    failed = server["train-failed-replies"]
    usable = server["train-usable-replies"]
    assert (failed + usable == 4).all()
    assert 2 <= failed.sum() <= 14  # 16 draws at p = 0.5
    assert res.summary["failed_replies_total"] == failed.sum()


@pytest.mark.parametrize(
    ("fault", "counter"), [("nan_prob", "nonfinite"), ("shape_prob", "malformed")]
)
def test_all_bad_replies_keep_the_model(fault: str, counter: str) -> None:
    over = {**SMALL, f"faults.{fault}": 1.0}
    res = fedsim.run(DEFAULT, over)
    server = res.server_metrics()
    assert (server[f"train-{counter}-replies"] == 4).all()
    assert (server["train-model-kept"] == 1).all()
    # Nothing was aggregated: the weights are the initial ones, finite.
    start = fedsim.run(DEFAULT, {**over, "rounds": 1})
    for key, value in res.arrays.items():
        assert np.isfinite(value).all()
        assert np.array_equal(value, start.arrays[key])


def test_some_nan_replies_are_dropped_and_the_rest_averaged() -> None:
    res = fedsim.run(DEFAULT, {**SMALL, "rounds": 3, "faults.nan_prob": 0.4})
    server = res.server_metrics()
    assert server["train-nonfinite-replies"].sum() > 0
    assert all(np.isfinite(v).all() for v in res.arrays.values())
    assert np.isfinite(server["eval-acc"]).all()


def test_robust_strategies_resist_byzantine_scaling() -> None:
    over = {
        "rounds": 5,
        "faults.byzantine_fraction": 0.3,
        "faults.byzantine_mode": "scale",
        "faults.byzantine_scale": -5.0,
        "fairness.enabled": False,
    }
    fedavg = fedsim.run(DEFAULT, over).summary["final"]["eval-acc"]
    median = fedsim.run(DEFAULT, {**over, "strategy.name": "fedmedian"}).summary["final"][
        "eval-acc"
    ]
    assert median > fedavg + 0.1, (median, fedavg)


def test_results_are_never_pickled(tmp_path: Path) -> None:
    fedsim.run(DEFAULT, SMALL, out=tmp_path)
    for name in ("model.safetensors", "checkpoint.safetensors"):
        head = (tmp_path / name).read_bytes()[:16]
        assert not head.startswith(b"\x80")  # a pickle stream starts with PROTO
        header_len = int.from_bytes(head[:8], "little")
        assert head[8:9] == b"{" and header_len > 0  # safetensors: length + JSON header
    crafted = tmp_path / "evil"
    crafted.mkdir()
    import pickle

    (crafted / "model.safetensors").write_bytes(pickle.dumps({"w": np.zeros(2)}))
    with pytest.raises(Exception) as exc:
        results.load_weights(crafted)
    assert "pickle" not in type(exc.value).__name__.lower()
