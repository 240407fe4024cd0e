"""Adversarial inputs and smoothing: PGD attack, robust accuracy, smooth adversarial loss.

The smooth adversarial comp-sum loss follows Mao, Mohri & Zhong, "Cross-Entropy Loss
Functions: Theoretical Analysis and Applications", ICML 2023 (Section 6): the comp-sum
loss of :mod:`fedsim.clients.losses` plus ``nu * sup_{||x' - x|| <= gamma}
||Delta(x') - Delta(x)||_2`` with ``Delta(x) = h(x, .) - h(x, y)``; the supremum is
approximated by projected gradient ascent (PGD, Madry et al., ICLR 2018).

Pure maths: no Flower or Ray imports. Randomness only through an explicit
``torch.Generator``. This module imports :mod:`fedsim.clients.losses` (comp-sum) and
:mod:`fedsim.clients.checks`; :mod:`fedsim.clients.objective` imports it, never the reverse.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedsim.clients.checks import NORMS, Norm, check_choice, check_clamp, check_number
from fedsim.clients.losses import comp_sum_loss
from fedsim.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_TINY = 1e-12


# --------------------------------------------------------------------------- PGD
@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (no BatchNorm statistic updates, no dropout draws), then restore
    every submodule's own flag, so mixed train/eval states come back exactly."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


@dataclass(frozen=True)
class _Attack:
    """Validated PGD settings (Madry et al., 2018) and the steps that use them."""

    radius: float
    steps: int
    step_size: float
    norm: str
    clamp: tuple[float, float] | None

    @classmethod
    def checked(
        cls, radius: float, steps: int, step_size: float, norm: str, clamp: object
    ) -> _Attack:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"steps: expected an integer >= 0, got {steps!r}")
        return cls(
            check_number("radius", radius),
            steps,
            check_number("step_size", step_size),
            check_choice("norm", norm, NORMS),
            check_clamp("clamp", clamp),
        )

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.radius, self.radius)
        else:
            delta = delta * (self.radius / _sample_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
        # Clamping each coordinate towards a range that holds x never leaves the ball.
        return x + delta if self.clamp is None else (x + delta).clamp(*self.clamp)

    def start(
        self, x: torch.Tensor, random_start: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``x`` itself, or a uniform draw from the ball (clamped) when ``random_start``."""
        if self.clamp is not None and (x.min() < self.clamp[0] or x.max() > self.clamp[1]):
            raise ValueError(f"inputs lie outside the clamp range {self.clamp}; pass clamp=None")
        if not random_start:
            return x
        if generator is None:
            raise ValueError("random_start=True needs an explicit torch.Generator (generator=...)")
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return self.project(x + self.radius * (2 * noise - 1), x)
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        length = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
        length = self.radius * length ** (1.0 / x[0].numel())
        return self.project(x + direction / _sample_norm(direction).clamp_min(_TINY) * length, x)

    def ascend(
        self,
        x: torch.Tensor,
        start: torch.Tensor,
        objective: Callable[[torch.Tensor], torch.Tensor],
        steps: int | None = None,
    ) -> torch.Tensor:
        """Projected ascent on ``objective``, differentiated w.r.t. the input only."""
        x_adv = start.detach()
        for _ in range(self.steps if steps is None else steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(x_adv), x_adv)
            if self.norm == "linf":
                direction = grad.sign()
            else:
                direction = grad / _sample_norm(grad).clamp_min(_TINY)
            x_adv = self.project(x_adv.detach() + self.step_size * direction, x)
        return x_adv.detach()


def pgd_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    radius: float,
    steps: int,
    step_size: float,
    norm: Norm = "linf",
    loss_fn: LossFn | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Projected gradient ascent on a classification loss (Madry et al., 2018).

    The model runs in eval mode during the attack and every submodule's train/eval flag is
    restored afterwards; gradients are taken w.r.t. the input only, so parameters, buffers
    and their ``.grad`` are left untouched.

    Parameters
    ----------
    model
        Maps a batch ``x`` to logits ``(N, C)``.
    x, target
        Clean inputs (inside ``clamp``) and class indices.
    radius, steps, step_size
        Ball radius ``gamma``, number of ascent steps and step length.
    norm
        ``"linf"`` (sign steps) or ``"l2"`` (normalised-gradient steps); per sample.
    loss_fn
        ``loss_fn(logits, target)`` to maximise, summed over the batch; default
        cross-entropy with ``reduction="sum"``.
    random_start
        Start uniformly inside the ball (needs ``generator``) instead of at ``x``.
    generator
        Source of the random start.
    clamp
        Valid input range ``(low, high)`` (images: ``(0, 1)``), or ``None``.

    Returns
    -------
    torch.Tensor
        Detached adversarial inputs with ``||x_adv - x|| <= radius`` inside ``clamp``.

    Raises
    ------
    ConfigError
        If a setting is out of range.
    ValueError
        If ``random_start`` lacks a generator or ``x`` lies outside ``clamp``.
    """
    attack = _Attack.checked(radius, steps, step_size, norm, clamp)
    x = x.detach()
    objective_fn = loss_fn or functools.partial(F.cross_entropy, reduction="sum")
    start = attack.start(x, random_start, generator)
    with _eval_mode(model), torch.enable_grad():
        return attack.ascend(x, start, lambda xa: objective_fn(model(xa), target))


def robust_accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    radius: float,
    steps: int,
    step_size: float,
    norm: Norm = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> float:
    """Accuracy in eval mode on :func:`pgd_attack`'s cross-entropy inputs (same parameters).

    Returns
    -------
    float
        Fraction of ``target`` still predicted, in ``[0, 1]``.
    """
    x_adv = pgd_attack(
        model, x, target, radius, steps, step_size, norm, None, random_start, generator, clamp
    )
    with _eval_mode(model), torch.no_grad():
        return (model(x_adv).argmax(dim=1) == target).float().mean().item()


# --------------------------------------------------------------------------- adversarial
def _score_gaps(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits - logits.gather(1, target.unsqueeze(1))


def adversarial_smoothness_term(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    logits: torch.Tensor,
    *,
    radius: float,
    steps: int,
    step_size: float,
    norm: Norm = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Batch mean of ``sup_{||x'-x|| <= radius} ||Delta(x') - Delta(x)||_2`` (Mao et al., Sec. 6).

    ``Delta(x) = h(x, .) - h(x, y)`` over all classes (its ``y`` entry is zero). ``x'`` is
    found by PGD on the squared deviation (same maximiser, smooth at ``x' = x``) with the
    model in eval mode, flags restored afterwards; ``x'`` is then detached, and the term
    is differentiable in the parameters through ``logits`` (the clean scores ``model(x)``
    the caller computed in the model's own mode) and ``model(x')`` (also in that mode, so
    BatchNorm in train mode sees a second batch, as in TRADES). The deviation's gradient
    vanishes at ``x' = x``, so with ``random_start=False`` the first step follows the
    cross-entropy gradient instead. Other parameters as in :func:`pgd_attack`.

    Returns
    -------
    torch.Tensor
        Scalar term, ``>= 0``.
    """
    attack = _Attack.checked(radius, steps, step_size, norm, clamp)
    x = x.detach()
    start = attack.start(x, random_start, generator)
    warm_steps = 0 if random_start else min(1, attack.steps)
    with _eval_mode(model), torch.enable_grad():
        start = attack.ascend(x, start, lambda xa: F.cross_entropy(model(xa), target), warm_steps)
        with torch.no_grad():
            clean_gaps = _score_gaps(model(x), target)

        def deviation(x_adv: torch.Tensor) -> torch.Tensor:
            return (_score_gaps(model(x_adv), target) - clean_gaps).square().sum()

        x_adv = attack.ascend(x, start, deviation, attack.steps - warm_steps)
    gaps_adv = _score_gaps(model(x_adv), target)
    return torch.linalg.vector_norm(gaps_adv - _score_gaps(logits, target), dim=1).mean()


def adversarial_comp_sum_loss(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    tau: float,
    nu: float,
    radius: float,
    steps: int,
    step_size: float,
    norm: Norm = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Smooth adversarial comp-sum loss ``comp_sum_loss(model(x)) + nu * smoothness term``.

    ``nu = 0`` returns ``comp_sum_loss(model(x), target, tau)`` without attacking. See
    :func:`adversarial_smoothness_term` for the attack and :func:`pgd_attack` for the
    parameters.

    Raises
    ------
    ConfigError
        If ``tau``, ``nu`` or an attack setting is out of range.
    """
    nu = check_number("nu", nu)
    logits = model(x)
    base = comp_sum_loss(logits, target, tau)
    if nu == 0:
        return base
    term = adversarial_smoothness_term(
        model,
        x,
        target,
        logits,
        radius=radius,
        steps=steps,
        step_size=step_size,
        norm=norm,
        random_start=random_start,
        generator=generator,
        clamp=clamp,
    )
    return base + nu * term
