"""Tests of clients.losses against closed forms, reductions and invariants."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.clients.losses import (
    comp_sum_loss,
    loss_by_name,
    margin_control_loss,
    margin_control_penalty,
    proximal_term,
    resolve_tau,
)
from fedsim.clients.objective import LossSpec, objective
from fedsim.clients.training import loss_spec
from fedsim.config import LossConfig
from fedsim.errors import ConfigError
from tests.clients.test_attacks import _images, _model

TAUS = [0.0, 0.3, 0.5, 1.0, 1.5, 1.9, 2.0, 3.0]


def _batch(n: int = 6, c: int = 5, seed: int = 0, scale: float = 2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, c, generator=g, dtype=dtype)
    return logits, torch.randint(0, c, (n,), generator=g)


def _p_y(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).gather(1, target[:, None]).squeeze(1)


def _reference(logits: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """Closed form (p_y^(tau-1) - 1) / (1 - tau) in float64, log(1/p_y) at tau = 1."""
    log_p = logits.double().log_softmax(dim=1).gather(1, target[:, None]).squeeze(1)
    if tau == 1.0:
        return -log_p
    return torch.expm1((tau - 1.0) * log_p) / (1.0 - tau)


# --------------------------------------------------------------------------- comp-sum values
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("n", [2, 10, 100])
def test_uniform_logits_give_closed_form(tau: float, n: int) -> None:
    logits = torch.full((3, n), 7.25, dtype=torch.float64)
    target = torch.tensor([0, n - 1, n // 2])
    expected = math.log(n) if tau == 1.0 else (n ** (1.0 - tau) - 1.0) / (1.0 - tau)
    loss = comp_sum_loss(logits, target, tau, reduction="none")
    torch.testing.assert_close(loss, torch.full((3,), expected, dtype=torch.float64))
    assert comp_sum_loss(logits, target, tau).item() == pytest.approx(expected, rel=1e-12)
    assert comp_sum_loss(logits, target, tau, "sum").item() == pytest.approx(3 * expected)


@pytest.mark.parametrize("tau", TAUS)
def test_gradient_is_p_y_power_times_p_minus_onehot(tau: float) -> None:
    logits, target = _batch(seed=1)
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(comp_sum_loss(logits, target, tau, "sum"), logits)
    p = logits.detach().softmax(dim=1)
    p_y = p.gather(1, target[:, None])
    expected = p_y ** (tau - 1.0) * (p - F.one_hot(target, p.shape[1]))
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.5, 3.0])
def test_gradient_follows_signed_upstream_weights(tau: float) -> None:
    logits, target = _batch(n=6, seed=2)
    logits.requires_grad_(True)
    weights = torch.tensor([1.0, -2.0, 0.0, 0.5, -0.25, 3.0], dtype=torch.float64)
    losses = comp_sum_loss(logits, target, tau, reduction="none")
    (grad,) = torch.autograd.grad(losses, logits, grad_outputs=weights)
    (g_sum,) = torch.autograd.grad(comp_sum_loss(logits, target, tau, "sum"), logits)
    torch.testing.assert_close(grad, weights[:, None] * g_sum, rtol=1e-12, atol=1e-15)
    (g_mean,) = torch.autograd.grad(comp_sum_loss(logits, target, tau), logits)
    torch.testing.assert_close(g_mean * 6, g_sum)


@pytest.mark.parametrize("offset", [1e-7, -1e-7, 1e-4, -1e-4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tau_near_one_is_continuous(offset: float, dtype: torch.dtype) -> None:
    logits, target = _batch(n=32, seed=3, scale=3.0, dtype=dtype)
    ce = F.cross_entropy(logits, target, reduction="none").double()
    loss = comp_sum_loss(logits, target, 1.0 + offset, reduction="none").double()
    # Series of expm1(a r) / a in a = 1 - tau, exact to ~1e-14 here.
    a = -offset
    series = ce + a * ce**2 / 2 + a**2 * ce**3 / 6 + a**3 * ce**4 / 24
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(loss, series, rtol=rtol, atol=0)
    assert torch.all((loss >= ce) if offset < 0 else (loss <= ce))
    assert (loss - ce).abs().max() <= 3 * abs(offset) * (ce**2).max()


@pytest.mark.parametrize("q", [0.1, 0.5, 0.7, 1.0])
def test_gce_is_tau_one_plus_q_and_closed_form(q: float) -> None:
    logits, target = _batch(seed=4)
    gce = loss_by_name("gce", q=q)(logits, target, reduction="none")
    assert torch.equal(gce, comp_sum_loss(logits, target, 1.0 + q, reduction="none"))
    torch.testing.assert_close(gce, (1.0 - _p_y(logits, target) ** q) / q)


def test_mae_is_one_minus_p_y() -> None:
    logits, target = _batch(seed=5)
    mae = loss_by_name("mae")(logits, target, reduction="none")
    torch.testing.assert_close(mae, 1.0 - _p_y(logits, target))


def test_sum_exp_is_sum_of_exponentiated_margins() -> None:
    logits, target = _batch(seed=6)
    loss = loss_by_name("sum-exp")(logits, target, reduction="none")
    gaps = logits - logits.gather(1, target[:, None])
    expected = gaps.exp().sum(dim=1) - 1.0  # the y' = y term is exp(0) = 1
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_alias_equals_torch_cross_entropy(reduction: str) -> None:
    logits, target = _batch(n=16, c=10, seed=7, dtype=torch.float32)
    ours = loss_by_name("ce")(logits, target, reduction=reduction)
    assert torch.equal(ours, F.cross_entropy(logits, target, reduction=reduction))


def test_comp_sum_alias_and_resolve_tau() -> None:
    assert [resolve_tau(n) for n in ("sum-exp", "ce", "mae")] == [0.0, 1.0, 2.0]
    assert resolve_tau("gce", q=0.7) == pytest.approx(1.7)
    assert resolve_tau("comp-sum", tau=0.5) == 0.5
    # A config table carries defaults for both tau and q: the other loss's one is ignored.
    assert resolve_tau("gce", tau=1.0, q=0.5) == 1.5
    assert resolve_tau("comp-sum", tau=0.25, q=0.7) == 0.25
    assert resolve_tau("mae", tau=1.0, q=0.7) == 2.0
    logits, target = _batch(seed=8)
    assert torch.equal(
        loss_by_name("comp-sum", tau=0.5)(logits, target), comp_sum_loss(logits, target, 0.5)
    )


@pytest.mark.parametrize(
    ("name", "kwargs", "field"),
    [
        ("hinge", {}, "loss.name"),
        ("gce", {}, "loss.q"),
        ("gce", {"q": 0.0}, "loss.q"),
        ("gce", {"q": 1.5}, "loss.q"),
        ("comp-sum", {}, "loss.tau"),
        ("comp-sum", {"tau": -0.1}, "loss.tau"),
    ],
)
def test_bad_loss_names_and_parameters_raise(name: str, kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        loss_by_name(name, **kwargs)


@pytest.mark.parametrize("tau", [-1e-3, -1.0, math.nan, math.inf])
def test_invalid_tau_raises(tau: float) -> None:
    logits, target = _batch()
    with pytest.raises(ConfigError, match="tau"):
        comp_sum_loss(logits, target, tau)


def test_bad_reduction_and_shapes_raise() -> None:
    logits, target = _batch()
    with pytest.raises(ConfigError, match="reduction"):
        comp_sum_loss(logits, target, 0.5, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        comp_sum_loss(logits, target[:-1], 0.5)


# --------------------------------------------------------------------------- numerics
def _extreme_logits(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    signs = torch.randint(0, 2, (64, 10), generator=g) * 2 - 1
    logits = (1e4 * signs * torch.rand(64, 10, generator=g)).to(dtype)
    logits[:4] = torch.tensor([1e4, -1e4] * 5, dtype=dtype)  # saturated rows
    return logits, torch.randint(0, 10, (64,), generator=g)


@pytest.mark.parametrize("tau", [1.0, 1.0 + 1e-7, 1.3, 2.0, 3.0])
def test_extreme_logits_finite_for_tau_at_least_one(tau: float) -> None:
    logits, target = _extreme_logits()
    logits.requires_grad_(True)
    loss = comp_sum_loss(logits, target, tau, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(
        loss.double(), _reference(logits.detach(), target, tau), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.5, 0.9])
def test_tau_below_one_exact_while_representable_and_never_nan(tau: float) -> None:
    g = torch.Generator().manual_seed(10)
    margins = 40.0 * torch.rand(32, 6, generator=g)  # h(y') - h(y) <= 40: value fits float32
    target = torch.randint(0, 6, (32,), generator=g)
    logits = (1e4 - 40.0 + margins).scatter(1, target[:, None], 1e4 - 40.0).requires_grad_(True)
    loss = comp_sum_loss(logits, target, tau, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(
        loss.double(), _reference(logits.detach(), target, tau), rtol=1e-4, atol=0
    )

    extreme, target = _extreme_logits()
    extreme.requires_grad_(True)
    loss = comp_sum_loss(extreme, target, tau, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), extreme)
    assert not loss.isnan().any() and not grad.isnan().any()
    assert torch.isinf(loss).any()  # margins of 2e4 do not fit: inf, as the true value


def test_overflowed_rows_masked_out_leave_no_nan_gradient() -> None:
    logits, target = _extreme_logits()
    logits.requires_grad_(True)
    loss = comp_sum_loss(logits, target, 0.0, reduction="none")
    finite = torch.isfinite(loss)
    assert 0 < finite.sum() < len(loss)
    (grad,) = torch.autograd.grad(loss[finite].sum(), logits)  # zero upstream on inf rows
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[~finite], torch.zeros_like(grad[~finite]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tau", [0.5, 1.0, 1.5, 2.0])
def test_half_precision_inputs(dtype: torch.dtype, tau: float) -> None:
    logits, target = _extreme_logits(dtype)
    logits[4:] = logits[4:] * 1e-3  # moderate rows: finite for tau < 1 too
    logits.requires_grad_(True)
    loss = comp_sum_loss(logits[4:], target[4:], tau)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.equal(loss, comp_sum_loss(logits[4:].float(), target[4:], tau))
    if tau >= 1.0:  # saturated rows too
        assert torch.isfinite(comp_sum_loss(logits, target, tau))


@settings(max_examples=60, deadline=None)
@given(
    row=st.lists(st.floats(-30, 30), min_size=2, max_size=8),
    tau=st.floats(0.0, 4.0),
    bump=st.floats(0.01, 10.0),
    target=st.integers(0, 7),
)
def test_nonnegative_and_nonincreasing_in_p_y(
    row: list[float], tau: float, bump: float, target: int
) -> None:
    logits = torch.tensor([row], dtype=torch.float64)
    y = torch.tensor([target % len(row)])
    higher = logits.clone()
    higher[0, y] += bump  # raises p_y
    before, after = comp_sum_loss(logits, y, tau), comp_sum_loss(higher, y, tau)
    assert before >= 0 and after >= 0
    assert after <= before * (1 + 1e-12) + 1e-300


# --------------------------------------------------------------------------- margin control
def test_margin_control_batch_mode_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    z = logits.numpy()
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    ce = -np.mean(np.log(p[[0, 1], [0, 1]]))
    lam = 0.03
    expected = ce + lam * np.log(1.0 + (p**2).sum())
    assert margin_control_loss(logits, target, lam).item() == pytest.approx(expected, rel=1e-12)
    penalty = margin_control_penalty(logits, lam, "batch").item()
    assert penalty == pytest.approx(lam * np.log(1.0 + (p**2).sum()), rel=1e-12)


def test_margin_control_sample_mode_matches_hand_computation() -> None:
    logits, target = _batch(n=5, c=4, seed=11)
    z = logits.numpy()
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    ce = -np.mean(np.log(p[np.arange(5), target.numpy()]))
    expected = ce + 0.2 * np.mean(np.log1p((p**2).sum(axis=1)))
    loss = margin_control_loss(logits, target, 0.2, mode="sample")
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert margin_control_loss(logits, target, 0.2, "batch") != loss  # the modes differ


def test_margin_lambda_zero_reduces_exactly() -> None:
    logits, target = _batch(n=16, seed=12, dtype=torch.float32)
    assert torch.equal(margin_control_loss(logits, target, 0.0), F.cross_entropy(logits, target))
    assert torch.equal(margin_control_penalty(logits, 0.0), torch.zeros(()))
    with pytest.raises(ConfigError, match="mode"):
        margin_control_penalty(logits, 0.1, "class")  # type: ignore[arg-type]


def test_margin_control_composes_with_comp_sum_in_objective() -> None:
    model = _model(dropout=0.0)
    x, target = _images()
    spec = LossSpec(name="comp-sum", tau=0.5, margin_lambda=0.1, margin_mode="sample")
    logits = model(x)
    expected = comp_sum_loss(logits, target, 0.5) + margin_control_penalty(logits, 0.1, "sample")
    torch.testing.assert_close(objective(model, x, target, spec), expected)


# --------------------------------------------------------------------------- proximal term
def test_proximal_term_closed_form_and_gradient() -> None:
    w = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    w_global = [torch.tensor([0.0, 4.0]), torch.tensor([[1.0]])]
    prox = proximal_term(w, w_global, mu=0.5)
    assert prox.item() == pytest.approx(0.25 * (1.0 + 4.0 + 4.0))
    prox.backward()
    torch.testing.assert_close(w[0].grad, 0.5 * (w[0].detach() - w_global[0]))
    assert proximal_term(w, w_global, mu=0.0).item() == 0.0
    with pytest.raises(ConfigError, match="mu"):
        proximal_term(w, w_global, mu=-1.0)
    with pytest.raises(ValueError):
        proximal_term(w, w_global[:1], mu=1.0)


# --------------------------------------------------------------------------- LossSpec
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "focal"}, "loss.name"),
        ({"name": "gce", "q": None}, "loss.q"),
        ({"margin_lambda": -0.1}, "loss.margin_lambda"),
        ({"margin_mode": "class"}, "loss.margin_mode"),
        ({"adv_nu": math.nan}, "loss.adv_nu"),
        ({"adv_radius": -1.0}, "loss.adv_radius"),
        ({"adv_steps": 2.5}, "loss.adv_steps"),
        ({"adv_steps": True}, "loss.adv_steps"),
        ({"adv_step_size": "big"}, "loss.adv_step_size"),
        ({"adv_norm": "l1"}, "loss.adv_norm"),
        ({"adv_random_start": 1}, "loss.adv_random_start"),
        ({"adv_clamp": (1.0, 0.0)}, "loss.adv_clamp"),
    ],
)
def test_loss_spec_rejects_bad_fields(fields: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        LossSpec(**fields)
    assert "expected" in str(info.value) and "got" in str(info.value)


def test_loss_spec_defaults_are_the_scenario_defaults() -> None:
    # One owner: calling objective() directly must train what a scenario would.
    # (fields read one by one: asdict cannot copy the read-only options mapping)
    scenario = {f.name: getattr(LossConfig(), f.name) for f in dataclasses.fields(LossConfig)}
    spec = {f.name: getattr(LossSpec(), f.name) for f in dataclasses.fields(LossSpec)}
    assert {k: spec[k] for k in scenario} == scenario
    assert loss_spec(LossConfig()) == LossSpec(adv_clamp=None)
