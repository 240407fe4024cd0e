"""Local training and evaluation: plain PyTorch, no Flower imports."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsim.clients.fairness_penalty import make_penalty
from fedsim.clients.losses import proximal_term
from fedsim.clients.objective import LossSpec, objective
from fedsim.clients.optim import SGD, Adam
from fedsim.config import ClientConfig, LossConfig
from fedsim.errors import ConfigError, DataError
from fedsim.plugins import is_reference, resolve_callable

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def make_objective(
    cfg: LossConfig,
    generator: torch.Generator | None = None,
    input_range: tuple[float, float] | None = None,
) -> Objective:
    """The per-batch local objective selected by ``[client.loss]``.

    Plain cross-entropy takes PyTorch's fused kernel; every other combination goes
    through :func:`fedsim.clients.objective.objective`. ``input_range`` bounds adversarial
    inputs ((0, 1) for images; ``None`` for standardised tabular features).
    """
    plain = (
        (cfg.name == "ce" or (cfg.name == "comp-sum" and cfg.tau == 1.0))
        and cfg.margin_lambda == 0
        and cfg.adv_nu == 0
    )
    if plain:
        return lambda model, x, y: F.cross_entropy(model(x), y)
    if is_reference(cfg.name):  # the user's loss, plus the same additive terms
        base = plugin_loss(cfg)
        spec = loss_spec(replace(cfg, name="ce"), input_range)
        return lambda model, x, y: objective(model, x, y, spec, generator, base_loss=base)
    spec = loss_spec(cfg, input_range)
    return lambda model, x, y: objective(model, x, y, spec, generator=generator)


def plugin_loss(cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A user's loss ``fn(logits, target, **options)`` bound to ``[client.loss.options]``."""
    fn = resolve_callable(cfg.name, "client.loss.name")
    options = dict(cfg.options)
    return lambda logits, target: fn(logits, target, **options)


def check_loss(cfg: LossConfig, num_classes: int) -> None:
    """Call a plug-in loss once on a small batch: a scalar, finite, differentiable tensor.

    Raises
    ------
    ConfigError
        Naming the reference and what it returned, before any training.
    """
    if not is_reference(cfg.name):
        return
    logits = torch.zeros((4, num_classes), requires_grad=True)
    target = torch.arange(4) % num_classes
    try:
        out = plugin_loss(cfg)(logits, target)
    except Exception as exc:  # the user's code: report it as their error
        raise ConfigError(
            f"client.loss.name: {cfg.name}(logits, target, **client.loss.options) fails on "
            f"logits of shape (4, {num_classes}): {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 0:
        got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else out
        raise ConfigError(f"client.loss.name: {cfg.name} returned {got}, expected a scalar tensor")
    if not out.requires_grad or not torch.isfinite(out):
        raise ConfigError(
            f"client.loss.name: {cfg.name} returned {float(out.detach())} "
            f"{'without gradient' if not out.requires_grad else ''}; expected a finite loss "
            "differentiable in the logits"
        )


def learning_rate(cfg: ClientConfig, server_round: int, num_rounds: int) -> float:
    """The clients' learning rate in ``server_round`` (1-based) under ``lr_schedule``."""
    r = max(server_round, 1) - 1
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** (r // cfg.lr_step_rounds)
    if cfg.lr_schedule == "exponential":
        return cfg.lr * cfg.lr_decay**r
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * r / max(num_rounds, 1)))
    return cfg.lr


def make_optimizer(cfg: ClientConfig, params: Sequence[torch.Tensor], lr: float) -> Any:
    """fedsim's SGD/Adam, or any ``torch.optim`` class by reference with its options."""
    if cfg.optimizer == "sgd":
        return SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    cls = resolve_callable(cfg.optimizer, "client.optimizer")
    try:
        opt = cls(params, lr=lr, **dict(cfg.optimizer_options))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"client.optimizer: {cfg.optimizer}(params, lr=..., **client.optimizer_options) "
            f"failed: {exc}"
        ) from None
    if not (callable(getattr(opt, "step", None)) and callable(getattr(opt, "zero_grad", None))):
        raise ConfigError(
            f"client.optimizer: {cfg.optimizer} made {type(opt).__name__}, which has no "
            "step() and zero_grad(); expected a torch.optim.Optimizer class"
        )
    return opt


def check_optimizer(cfg: ClientConfig) -> None:
    """Build a reference optimizer once on a dummy parameter (errors before training)."""
    if cfg.optimizer in ("sgd", "adam"):
        if cfg.optimizer_options:
            raise ConfigError(
                "client.optimizer_options: only for an optimizer given by reference "
                f"(e.g. 'torch.optim:AdamW'); {cfg.optimizer!r} takes client.momentum and "
                "client.weight_decay"
            )
        return
    if cfg.momentum or cfg.weight_decay:
        raise ConfigError(
            f"client.momentum / client.weight_decay: with client.optimizer = "
            f"{cfg.optimizer!r} set them in client.optimizer_options"
        )
    make_optimizer(cfg, [torch.zeros(1, requires_grad=True)], cfg.lr)


def loss_spec(cfg: LossConfig, input_range: tuple[float, float] | None = None) -> LossSpec:
    """Translate the scenario's loss table into :class:`fedsim.clients.objective.LossSpec`."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(LossConfig)}
    return LossSpec(**fields, adv_clamp=input_range)


def client_generator(seed: int, *parts: int) -> torch.Generator:
    """A torch generator for one (seed, purpose, round, client): the same on every engine."""
    words = np.random.SeedSequence([seed, *parts]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(words[0] >> np.uint64(1)))


@dataclass(frozen=True)
class TrainResult:
    num_examples: int
    mean_loss: float


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: ClientConfig,
    generator: torch.Generator,
    proximal_mu: float = 0.0,
    input_range: tuple[float, float] | None = None,
    z: torch.Tensor | None = None,
    objective: Objective | None = None,
    lr: float | None = None,
) -> TrainResult:
    """Run ``cfg.epochs`` epochs of mini-batch training in place.

    With ``proximal_mu > 0`` the FedProx term µ/2‖w − w_global‖² is added, ``w_global``
    being the weights the model holds on entry. With a ``[client.fairness]`` penalty,
    ``z`` (the sensitive value of every training row) is required and
    ``weight × penalty(model(x), y, z)`` is added to the objective of every batch.
    ``objective`` replaces the one ``cfg.loss`` selects. ``lr`` (default ``cfg.lr``)
    is this round's learning rate (see :func:`learning_rate`).
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else None
    opt = make_optimizer(cfg, params, cfg.lr if lr is None else lr)
    if objective is None:
        objective = make_objective(cfg.loss, generator, input_range)
    penalty = make_penalty(cfg.fairness)
    if penalty is not None and z is None:
        raise DataError("client.fairness.penalty needs the sensitive value z of every row")
    n = len(y)
    total, seen = 0.0, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator, device="cpu").to(x.device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = objective(model, x[idx], y[idx])
            if penalty is not None and z is not None:  # its own forward: any objective composes
                loss = loss + penalty(model(x[idx]), y[idx], z[idx])
            if anchor is not None:
                loss = loss + proximal_term(params, anchor, proximal_mu)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
    return TrainResult(num_examples=n, mean_loss=total / max(seen, 1))


@dataclass(frozen=True)
class EvalResult:
    num_examples: int
    loss: float
    accuracy: float
    counts: np.ndarray  # int64 [z, y, y_hat]
    robust_accuracy: float | None = None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    z: np.ndarray,
    num_groups: int,
    num_classes: int,
) -> EvalResult:
    """Loss, accuracy and the (sensitive value, label, prediction) count table."""
    counts = np.zeros((num_groups, num_classes, num_classes), dtype=np.int64)
    if len(y) == 0:
        return EvalResult(0, 0.0, 0.0, counts)
    logits = predict(model, x)
    loss = float(F.cross_entropy(logits, y))
    pred = logits.argmax(1)
    np.add.at(counts, (z, y.cpu().numpy(), pred.cpu().numpy()), 1)
    return EvalResult(len(y), loss, float((pred == y).float().mean()), counts)
