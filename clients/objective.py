"""The composed local objective: comp-sum loss (+ adversarial smoothing) (+ margin control).

:class:`LossSpec` is the scenario's ``[client.loss]`` table (:class:`fedsim.config.LossConfig`)
plus the attack settings that are not scenario keys, validated; :func:`objective` combines
:mod:`fedsim.clients.losses` and :mod:`fedsim.clients.attacks` (both import neither this
module nor each other's composer, so the arrows point one way).

Pure maths: no Flower or Ray imports. Randomness only through an explicit
``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedsim.clients.attacks import adversarial_smoothness_term
from fedsim.clients.checks import NORMS, check_choice, check_clamp, check_number
from fedsim.clients.losses import (
    MARGIN_MODES,
    comp_sum_loss,
    margin_control_penalty,
    resolve_tau,
)
from fedsim.config import LossConfig
from fedsim.errors import ConfigError


@dataclass(frozen=True)
class LossSpec(LossConfig):
    """Validated choice of local objective; see :func:`objective`.

    The scenario's ``[client.loss]`` fields and their defaults are inherited from
    :class:`fedsim.config.LossConfig` (their one owner), so calling :func:`objective`
    directly gives the same defaults as a scenario. Fields named ``adv_*`` are the
    :func:`fedsim.clients.attacks.adversarial_comp_sum_loss` settings, used when
    ``adv_nu > 0``; ``adv_random_start`` and ``adv_clamp`` are not scenario keys.
    """

    adv_random_start: bool = True
    adv_clamp: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        resolve_tau(self.name, tau=self.tau, q=self.q)
        check_number("loss.margin_lambda", self.margin_lambda)
        check_choice("loss.margin_mode", self.margin_mode, MARGIN_MODES)
        check_number("loss.adv_nu", self.adv_nu)
        check_number("loss.adv_radius", self.adv_radius)
        steps = self.adv_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"loss.adv_steps: expected an integer >= 0, got {steps!r}")
        check_number("loss.adv_step_size", self.adv_step_size)
        check_choice("loss.adv_norm", self.adv_norm, NORMS)
        if not isinstance(self.adv_random_start, bool):
            raise ConfigError(
                f"loss.adv_random_start: expected a bool, got {self.adv_random_start!r}"
            )
        check_clamp("loss.adv_clamp", self.adv_clamp)

    @property
    def base_tau(self) -> float:
        """The comp-sum ``tau`` of ``name``."""
        return resolve_tau(self.name, tau=self.tau, q=self.q)


def objective(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    spec: LossSpec,
    generator: torch.Generator | None = None,
    base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Local objective: comp-sum loss (+ adversarial smoothing) (+ margin control).

    The FedProx :func:`proximal_term` is added by the trainer, which holds the global
    weights. ``generator`` drives the attack's random start (needed when ``adv_nu > 0``
    and ``adv_random_start``). ``base_loss(logits, target)`` replaces the comp-sum
    loss of ``spec.name`` (a user's own loss); the other terms are added to it alike.

    Returns
    -------
    torch.Tensor
        Scalar loss with gradients to the model's parameters.
    """
    logits = model(x)
    if base_loss is not None:
        loss = base_loss(logits, target)
    else:
        loss = comp_sum_loss(logits, target, spec.base_tau)
    if spec.adv_nu > 0:
        loss = loss + spec.adv_nu * adversarial_smoothness_term(
            model,
            x,
            target,
            logits,
            radius=spec.adv_radius,
            steps=spec.adv_steps,
            step_size=spec.adv_step_size,
            norm=spec.adv_norm,
            random_start=spec.adv_random_start,
            generator=generator,
            clamp=spec.adv_clamp,
        )
    if spec.margin_lambda > 0:
        loss = loss + margin_control_penalty(logits, spec.margin_lambda, spec.margin_mode)
    return loss
