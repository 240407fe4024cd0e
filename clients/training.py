"""Local training and evaluation: plain PyTorch, no Flower imports."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from fedsim.clients.fairness_penalty import make_penalty
from fedsim.clients.losses import proximal_term
from fedsim.clients.objective import LossSpec, objective
from fedsim.clients.optim import SGD, Adam
from torch import nn

from fedsim.config import ClientConfig, LossConfig
from fedsim.errors import DataError

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
    spec = loss_spec(cfg, input_range)
    return lambda model, x, y: objective(model, x, y, spec, generator=generator)


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
) -> TrainResult:
    """Run ``cfg.epochs`` epochs of mini-batch training in place.

    With ``proximal_mu > 0`` the FedProx term µ/2‖w − w_global‖² is added, ``w_global``
    being the weights the model holds on entry. With a ``[client.fairness]`` penalty,
    ``z`` (the sensitive value of every training row) is required and
    ``weight × penalty(model(x), y, z)`` is added to the objective of every batch.
    ``objective`` replaces the one ``cfg.loss`` selects.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else None
    opt: SGD | Adam
    if cfg.optimizer == "sgd":
        opt = SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
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
