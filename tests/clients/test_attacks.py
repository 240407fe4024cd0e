"""Tests of clients.attacks: PGD bounds, model state left untouched, smooth adversarial loss."""

from __future__ import annotations

from typing import TypedDict

import pytest
import torch
import torch.nn.functional as F

from fedsim.clients.attacks import (
    adversarial_comp_sum_loss,
    adversarial_smoothness_term,
    pgd_attack,
    robust_accuracy,
)
from fedsim.clients.checks import Norm
from fedsim.clients.losses import comp_sum_loss, margin_control_penalty
from fedsim.clients.objective import LossSpec, objective
from fedsim.errors import ConfigError


# --------------------------------------------------------------------------- PGD
def _model(dropout: float = 0.3, seed: int = 0) -> torch.nn.Sequential:
    norm = torch.nn.BatchNorm1d(32)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(16, 32),
        norm,
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(32, 4),
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        norm.running_mean = 0.1 * torch.randn(32, generator=g)
    return model


def _images(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


class _AttackArgs(TypedDict):
    radius: float
    steps: int
    step_size: float


ATTACK: _AttackArgs = {"radius": 0.1, "steps": 5, "step_size": 0.04}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_ball_and_range_and_raises_loss(norm: Norm, random_start: bool) -> None:
    model = _model()
    x, target = _images()
    radius = 0.1 if norm == "linf" else 0.5
    g = torch.Generator().manual_seed(2)
    x_adv = pgd_attack(
        model, x, target, radius, 8, radius / 3, norm, random_start=random_start, generator=g
    )
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= radius * (1 + 1e-5)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not x_adv.requires_grad
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), target, reduction="none")
        adv = F.cross_entropy(model(x_adv), target, reduction="none")
    assert adv.sum() > clean.sum()
    assert (adv >= clean - 1e-6).float().mean() >= 0.9


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_without_clamp_stays_in_ball(norm: Norm) -> None:
    model = _model()
    x, target = _images()
    x = 4.0 * x - 2.0  # standardised features, not images
    g = torch.Generator().manual_seed(7)
    x_adv = pgd_attack(model, x, target, 0.3, 6, 0.2, norm, generator=g, clamp=None)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= 0.3 * (1 + 1e-5)
    assert size.min() >= 0.3 * (1 - 1e-5)  # a step longer than the radius ends on the sphere
    assert x_adv.min() < 0.0 or x_adv.max() > 1.0


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_attacks_leave_model_untouched(mode: str) -> None:
    model = _model()
    model.train(mode != "eval")
    if mode == "mixed":
        model[2].eval()  # a frozen BatchNorm inside a training model
    modes = [m.training for m in model.modules()]
    before = _snapshot(model)
    x, target = _images()
    g = torch.Generator().manual_seed(3)
    pgd_attack(model, x, target, **ATTACK, generator=g)
    robust_accuracy(model, x, target, **ATTACK, norm="l2", generator=g)
    with torch.no_grad():  # callers under no_grad still get an attack
        pgd_attack(model, x, target, **ATTACK, random_start=False)
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == modes
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # params and BN buffers


def test_robust_accuracy_bounds() -> None:
    model = _model()
    x, target = _images(n=64)
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(dim=1) == target).float().mean().item()
    model.train()
    assert robust_accuracy(model, x, target, 0.0, 3, 0.1, random_start=False) == clean
    attacked = robust_accuracy(model, x, target, 0.3, 10, 0.05, random_start=False)
    assert 0.0 <= attacked < clean


def test_attack_argument_errors() -> None:
    model = _model()
    x, target = _images()
    with pytest.raises(ValueError, match="Generator"):
        pgd_attack(model, x, target, **ATTACK)
    with pytest.raises(ValueError, match="clamp"):
        pgd_attack(model, x + 2.0, target, **ATTACK, random_start=False)
    with pytest.raises(ConfigError, match="norm"):
        pgd_attack(model, x, target, **ATTACK, norm="l1", random_start=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="steps"):
        pgd_attack(model, x, target, 0.1, -1, 0.01, random_start=False)


# --------------------------------------------------------------------------- adversarial loss
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_nu_zero_reduces_exactly(tau: float) -> None:
    model = _model(dropout=0.0)
    x, target = _images()
    loss = adversarial_comp_sum_loss(model, x, target, tau, 0.0, **ATTACK)  # no generator needed
    assert torch.equal(loss, comp_sum_loss(model(x), target, tau))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_adversarial_loss_exceeds_clean_and_trains(norm: Norm, random_start: bool) -> None:
    model = _model(dropout=0.0)
    model.eval()
    x, target = _images()
    before = _snapshot(model)
    g = torch.Generator().manual_seed(4)
    loss = adversarial_comp_sum_loss(
        model, x, target, 0.5, 0.7, **ATTACK, norm=norm, random_start=random_start, generator=g
    )
    clean = comp_sum_loss(model(x), target, 0.5)
    assert loss.item() > clean.item()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert not model.training


def test_smoothness_term_matches_its_attack_and_is_seeded() -> None:
    model = _model(dropout=0.0).eval()
    x, target = _images()
    logits = model(x)

    def term(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return adversarial_smoothness_term(model, x, target, logits, **ATTACK, generator=g)

    assert torch.equal(term(5), term(5))
    random_point = torch.Generator().manual_seed(5)
    zero_steps = adversarial_smoothness_term(
        model, x, target, logits, radius=0.1, steps=0, step_size=0.0, generator=random_point
    )
    assert 0.0 < zero_steps.item() < term(5).item()  # ascent improves on the random start
    nu = 0.25
    g = torch.Generator().manual_seed(5)
    full = adversarial_comp_sum_loss(model, x, target, 1.0, nu, **ATTACK, generator=g)
    torch.testing.assert_close(full, F.cross_entropy(logits, target) + nu * term(5))


# --------------------------------------------------------------------------- objective
def test_objective_matches_components() -> None:
    model = _model(dropout=0.0).eval()
    x, target = _images()
    assert torch.equal(objective(model, x, target, LossSpec()), F.cross_entropy(model(x), target))
    spec = LossSpec(
        name="gce",
        q=0.5,
        margin_lambda=0.03,
        adv_nu=0.2,
        adv_radius=8 / 255,
        adv_steps=3,
        adv_step_size=2 / 255,
    )
    g1, g2 = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    logits = model(x)
    expected = adversarial_comp_sum_loss(
        model, x, target, 1.5, 0.2, 8 / 255, 3, 2 / 255, generator=g2
    ) + margin_control_penalty(logits, 0.03, "batch")
    torch.testing.assert_close(objective(model, x, target, spec, generator=g1), expected)
    assert spec.base_tau == 1.5
