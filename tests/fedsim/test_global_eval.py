"""Server-side evaluation on one held-out global test set (``[evaluation]``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, log_loss

import fedsim
from fedsim.clients.models import build_model
from fedsim.config import load_scenario
from fedsim.data import build_federated

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
ON = {
    "rounds": 2,
    "partition.num_clients": 3,
    "fairness.enabled": False,
    "evaluation.global_test": True,
    "evaluation.global_fraction": 0.2,
}


def _fed(overrides: dict) -> object:
    sc = load_scenario(DEFAULT, overrides)
    return build_federated(sc.data, sc.partition, sc.seed, None, sc.evaluation)


def test_global_test_rows_are_held_out_of_every_client() -> None:
    fed = _fed({**ON, "data.dataset": "digits"})
    x, y, _ = fed.global_test
    assert len(y) == round(0.2 * 1797)
    client_rows = {r.tobytes() for c in fed.clients for r in np.concatenate([c.x_train, c.x_test])}
    assert not any(r.tobytes() in client_rows for r in x)
    assert sum(len(c.y_train) + len(c.y_test) for c in fed.clients) + len(y) == 1797


def test_global_test_rows_are_the_same_for_every_seed_and_partition() -> None:
    a = _fed({**ON, "data.dataset": "digits", "seed": 0})
    b = _fed({**ON, "data.dataset": "digits", "seed": 5, "partition.method": "dirichlet-label"})
    np.testing.assert_array_equal(a.global_test[0], b.global_test[0])
    np.testing.assert_array_equal(a.global_test[1], b.global_test[1])


def test_global_metrics_equal_an_independent_evaluation_of_the_final_model() -> None:
    result = fedsim.run(DEFAULT, ON)
    fed = _fed(ON)
    x, y, z = fed.global_test
    sc = result.scenario
    model = build_model(sc.model.name, (x.shape[1],), 2, sc.model.hidden, sc.seed)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in result.arrays.items()})
    with torch.no_grad():
        probs = torch.softmax(model(torch.as_tensor(x)), 1).numpy()
    final = result.server_metrics().iloc[-1]
    assert abs(final["global-acc"] - accuracy_score(y, probs.argmax(1))) < 1e-6  # float32 mean
    assert abs(final["global-loss"] - log_loss(y, probs, labels=[0, 1])) < 1e-5
    pred = probs.argmax(1)
    rates = [pred[z == g].mean() for g in (0, 1)]
    assert abs(final["global-demographic_parity_difference"] - abs(rates[0] - rates[1])) < 1e-12
    assert {"global-accuracy-0", "global-accuracy-1", "global-equalized_odds_difference"} <= set(
        result.server_metrics()
    )


def test_global_evaluation_is_off_by_default() -> None:
    result = fedsim.run(DEFAULT, {**ON, "evaluation.global_test": False})
    assert not any(c.startswith("global-") for c in result.server_metrics().columns)
