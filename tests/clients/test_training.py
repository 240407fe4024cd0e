"""Local training: the scenario's loss table, FedProx's proximal term, evaluation counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import fedsim
from fedsim.clients.models import build_model
from fedsim.clients.objective import LossSpec, objective
from fedsim.clients.training import evaluate, make_objective, train
from fedsim.config import ClientConfig, LossConfig

REPO = Path(__file__).resolve().parents[2]


def _data(n: int = 256, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + 0.3 * x[:, 1] > 0).long()


def test_plain_ce_fast_path_equals_the_losses_module() -> None:
    x, y = _data()
    model = build_model("mlp", (6,), 2, (8,), 0)
    fast = make_objective(LossConfig(name="ce"))(model, x, y)
    general = objective(model, x, y, LossSpec(name="ce"))
    assert torch.allclose(fast, general, atol=1e-6)
    assert torch.allclose(fast, F.cross_entropy(model(x), y))


def test_composed_objective_is_the_sum_of_its_parts() -> None:
    x, y = _data()
    model = build_model("mlp", (6,), 2, (8,), 0)
    cfg = LossConfig(name="comp-sum", tau=0.5, margin_lambda=0.2)
    from fedsim.clients.losses import comp_sum_loss, margin_control_penalty

    logits = model(x)
    expected = comp_sum_loss(logits, y, 0.5) + margin_control_penalty(logits, 0.2, "batch")
    assert torch.allclose(make_objective(cfg)(model, x, y), expected, atol=1e-6)


def _distance_after_training(mu: float) -> float:
    x, y = _data()
    model = build_model("mlp", (6,), 2, (8,), 0)
    start = [p.detach().clone() for p in model.parameters()]
    cfg = ClientConfig(epochs=3, lr=0.5, batch_size=32)
    train(model, x, y, cfg, torch.Generator().manual_seed(0), proximal_mu=mu)
    return float(sum(((p - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True)))


def test_fedprox_proximal_term_pulls_towards_the_global_model() -> None:
    free, held = _distance_after_training(0.0), _distance_after_training(1.0)
    assert held < 0.5 * free, (held, free)
    assert _distance_after_training(0.0) == free  # same generator, same result


def test_fedprox_end_to_end_differs_from_fedavg_only_through_mu() -> None:
    base = {"rounds": 2, "partition.num_clients": 3, "fairness.enabled": False}
    fedavg = fedsim.run(REPO / "scenarios/default.toml", base)
    prox0 = fedsim.run(
        REPO / "scenarios/default.toml",
        {**base, "strategy.name": "fedprox", "strategy.options": {"proximal_mu": 0.0}},
    )
    prox = fedsim.run(
        REPO / "scenarios/default.toml",
        {**base, "strategy.name": "fedprox", "strategy.options": {"proximal_mu": 5.0}},
    )
    for k in fedavg.arrays:
        assert np.allclose(fedavg.arrays[k], prox0.arrays[k], atol=1e-6)
    assert any(not np.allclose(fedavg.arrays[k], prox.arrays[k]) for k in fedavg.arrays)


def test_evaluate_counts_table_matches_predictions() -> None:
    x, y = _data(300)
    model = build_model("logreg", (6,), 2, (), 1)
    z = np.random.default_rng(0).integers(0, 3, size=300)
    res = evaluate(model, x, y, z, num_groups=3, num_classes=2)
    pred = model(x).argmax(1).numpy()
    assert res.counts.sum() == 300
    for g in range(3):
        for t in range(2):
            for p in range(2):
                expected = int(((z == g) & (y.numpy() == t) & (pred == p)).sum())
                assert res.counts[g, t, p] == expected
    assert abs(res.accuracy - (pred == y.numpy()).mean()) < 1e-6


def test_adversarial_scenario_reports_robust_accuracy_below_clean() -> None:
    res = fedsim.run(REPO / "scenarios/loss-adversarial.toml", {"rounds": 2})
    final = res.summary["final"]
    assert 0.0 <= final["robust-acc"] <= final["eval-acc"]
