"""Vectorised local training: a whole cohort of clients as one batched computation.

Every client of a round starts from the same global weights and trains the same
architecture, so the cohort's weights stack into tensors ``(K, ...)`` and one
:func:`torch.func.vmap` of :func:`torch.func.functional_call` runs all K forward passes
at once; ordinary autograd then gives every client its own gradient (the clients'
losses are summed, and no client's loss depends on another client's weights).

Each client keeps the data order and RNG stream of :func:`fedsim.clients.training.train`:
one ``randperm`` per epoch from its own generator, batches cut from it in order.
Clients with fewer rows have fewer batches and a shorter last batch; their batches
are padded to ``batch_size`` and masked, every per-client mean divides by the
client's own row count, and a client whose batch is empty takes no optimiser step
(its SGD momentum buffer and Adam step count stay as they were). The update rules
are those of :mod:`fedsim.clients.optim`, on stacked tensors. Losses are computed
per row on the valid rows only, outside ``vmap`` (comp-sum's custom autograd function
has no vmap rule); a plug-in per-row loss runs inside ``vmap`` and must be vmap-safe.

What cannot be batched falls back to per-client :func:`~fedsim.clients.training.train`
with the reason logged: the PGD adversarial term (``adv_nu > 0``), models with batch
norm or other buffers, models whose forward is not vmap-safe, plug-in losses that are
not. Pure PyTorch: no Flower or Ray imports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from fedsim.clients.losses import comp_sum_loss, margin_control_penalty, resolve_tau
from fedsim.clients.training import Objective, TrainResult, train
from fedsim.config import ClientConfig, LossConfig
from fedsim.plugins import is_reference

log = logging.getLogger(__name__)

#: A plug-in per-row loss: ``(logits (N, C), target (N,)) -> losses (N,)``.
SampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class CohortResult:
    """Outcome of :func:`train_cohort`.

    ``params`` maps each trainable parameter name to the stacked ``(K, ...)`` weights
    of the K clients, in cohort order; ``reason`` says why the cohort fell back to
    per-client training (``None`` when it was vectorised).
    """

    params: Params
    results: list[TrainResult]
    reason: str | None = None

    @property
    def vectorized(self) -> bool:
        return self.reason is None

    def client_params(self, k: int) -> Params:
        """Client ``k``'s trained parameters (views into the stacked tensors)."""
        return {name: p[k] for name, p in self.params.items()}


def unsupported_settings(cfg: ClientConfig) -> str | None:
    """Client settings the cohort path does not implement (the engine then trains each
    client through the ClientApp, as without ``vectorize``); ``None`` if all are."""
    if cfg.fairness.penalty != "none" and cfg.fairness.weight > 0:
        return "a [client.fairness] penalty needs each client's sensitive rows per batch"
    if cfg.optimizer not in ("sgd", "adam"):
        return f"client.optimizer = {cfg.optimizer!r}: only fedsim's sgd and adam are stacked"
    if is_reference(cfg.loss.name):
        return f"client.loss.name = {cfg.loss.name!r}: a plug-in loss sees whole batches"
    return None


def fallback_reason(
    model: nn.Module, loss: LossConfig, sample_loss: SampleLoss | None = None
) -> str | None:
    """Why a cohort with this model and loss cannot be vectorised; ``None`` if it can."""
    if loss.adv_nu > 0:
        return "the PGD adversarial term (loss.adv_nu > 0) attacks each client's model separately"
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            return f"the model has batch norm ({name or 'root'}: per-client running statistics)"
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return f"the model has buffers ({', '.join(buffers)}) updated in its forward pass"
    if any(not p.requires_grad for p in model.parameters()):
        return "the model has frozen parameters"
    return _probe(model, sample_loss)


def _probe(model: nn.Module, sample_loss: SampleLoss | None) -> str | None:
    """Run the model (and a plug-in loss) under vmap on two rows; say what fails."""
    params = _stack({n: p.detach() for n, p in model.named_parameters()}, 2)
    shape = _input_shape(model)
    if shape is None:
        return None  # unknown input shape: the first real forward will tell
    x = torch.zeros(2, 1, *shape, device=next(iter(params.values())).device)
    try:
        logits = vmap(lambda p, xb: functional_call(model, p, (xb,)))(params, x)
    except Exception as exc:  # noqa: BLE001 - any failure means: not vmap-safe
        return f"the model's forward is not vmap-safe ({type(exc).__name__}: {exc})"
    if sample_loss is None:
        return None
    target = torch.zeros(2, 1, dtype=torch.long, device=x.device)
    try:
        out = vmap(sample_loss)(logits, target)
    except Exception as exc:  # noqa: BLE001
        return f"the plug-in loss is not vmap-safe ({type(exc).__name__}: {exc})"
    if tuple(out.shape) != (2, 1):
        return f"the plug-in loss returned shape {tuple(out.shape)} for 1 row (expected (1,))"
    return None


def _input_shape(model: nn.Module) -> tuple[int, ...] | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return (module.in_channels, 8, 8)
        if isinstance(module, nn.Linear):
            return (module.in_features,)
    return None


def train_cohort(
    model: nn.Module,
    cohort: Sequence[tuple[torch.Tensor, torch.Tensor]],
    cfg: ClientConfig,
    generators: Sequence[torch.Generator],
    proximal_mu: float = 0.0,
    input_range: tuple[float, float] | None = None,
    sample_loss: SampleLoss | None = None,
) -> CohortResult:
    """Train every client of ``cohort`` from ``model``'s weights, as one computation.

    Parameters
    ----------
    model
        Holds the global weights every client starts from. Left unchanged by the
        vectorised path; the fallback trains it in place (it ends with the last
        client's weights, as sequential training does).
    cohort
        Each client's training rows ``(x, y)``; sizes may differ.
    cfg
        Local training settings, as for :func:`fedsim.clients.training.train`.
    generators
        One generator per client (:func:`~fedsim.clients.training.client_generator`).
    proximal_mu
        FedProx's µ; the anchor is the global weights.
    input_range
        Bounds of adversarial inputs (used by the fallback only).
    sample_loss
        A plug-in per-row loss replacing ``cfg.loss``'s comp-sum loss (margin control
        is still added).

    Returns
    -------
    CohortResult
        Stacked trained weights and one :class:`TrainResult` per client.
    """
    if len(generators) != len(cohort):
        raise ValueError(f"expected {len(cohort)} generators, got {len(generators)}")
    reason = fallback_reason(model, cfg.loss, sample_loss)
    if reason is not None:
        log.info("vectorize: training %d clients one by one: %s", len(cohort), reason)
        params, results = _sequential(
            model, cohort, cfg, generators, proximal_mu, input_range, sample_loss
        )
        return CohortResult(params, results, reason)
    return _vectorized(model, cohort, cfg, generators, proximal_mu, sample_loss)


def _sequential(model, cohort, cfg, generators, mu, input_range, sample_loss):  # type: ignore[no-untyped-def]
    """Per-client :func:`train` from the same start; returns (stacked params, results)."""
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    objective = None if sample_loss is None else plugin_objective(cfg.loss, sample_loss)
    trained: list[Params] = []
    results = []
    for (x, y), generator in zip(cohort, generators, strict=True):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(start[n])
        results.append(train(model, x, y, cfg, generator, mu, input_range, objective=objective))
        trained.append({n: p.detach().clone() for n, p in model.named_parameters()})
    return {n: torch.stack([t[n] for t in trained]) for n in start}, results


def plugin_objective(loss: LossConfig, sample_loss: SampleLoss) -> Objective:
    """The per-batch objective of a plug-in per-row loss plus ``loss``'s margin control."""

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        value = sample_loss(logits, y).mean()
        if loss.margin_lambda > 0:
            value = value + margin_control_penalty(logits, loss.margin_lambda, loss.margin_mode)
        return value

    return objective


def _stack(params: Params, k: int) -> Params:
    return {n: p.unsqueeze(0).expand(k, *p.shape).clone() for n, p in params.items()}


def _vectorized(model, cohort, cfg, generators, mu, sample_loss) -> CohortResult:  # type: ignore[no-untyped-def]
    k, bs = len(cohort), cfg.batch_size
    start = {n: p.detach() for n, p in model.named_parameters()}
    params = {n: t.requires_grad_() for n, t in _stack(start, k).items()}
    opt: _StackedSGD | _StackedAdam
    if cfg.optimizer == "sgd":
        opt = _StackedSGD(list(params.values()), cfg.lr, cfg.momentum, cfg.weight_decay)
    else:
        opt = _StackedAdam(list(params.values()), cfg.lr, cfg.weight_decay)
    device = next(iter(start.values())).device
    x_all = torch.cat([x for x, _ in cohort])
    y_all = torch.cat([y for _, y in cohort])
    sizes = [len(y) for _, y in cohort]
    steps = -(-max(sizes, default=0) // bs)
    tau = resolve_tau(cfg.loss.name, tau=cfg.loss.tau, q=cfg.loss.q)
    forward = vmap(lambda p, xb: functional_call(model, p, (xb,)))
    owner = torch.arange(k, device=device).repeat_interleave(bs)
    total = torch.zeros(k, dtype=torch.float64, device=device)
    model.train()
    for _ in range(cfg.epochs):
        table = _order_table(sizes, generators, steps * bs).to(device)
        for s in range(steps):
            idx = table[:, s * bs : (s + 1) * bs]
            valid = idx >= 0
            counts = valid.sum(1)
            rows = idx.clamp(min=0)
            logits = forward(params, x_all[rows])
            loss = _client_losses(
                logits, y_all[rows], valid, owner, counts, cfg.loss, tau, sample_loss
            )
            if mu > 0:
                loss = loss + (counts > 0) * _proximal(params, start, mu)
            opt.zero_grad()
            loss.sum().backward()
            opt.step(counts > 0)
            total += loss.detach().double() * counts
    seen = torch.tensor(sizes, dtype=torch.float64) * cfg.epochs
    means = (total.cpu() / seen.clamp(min=1)).tolist()
    results = [TrainResult(n, m) for n, m in zip(sizes, means, strict=True)]
    return CohortResult({n: p.detach() for n, p in params.items()}, results)


def _order_table(
    sizes: list[int], generators: Sequence[torch.Generator], width: int
) -> torch.Tensor:
    """Each client's epoch order as rows of global row indices, padded with -1.

    One ``randperm`` per client from its own generator, exactly as ``train`` draws it.
    """
    table = torch.full((len(sizes), width), -1, dtype=torch.long)
    offset = 0
    for i, (n, generator) in enumerate(zip(sizes, generators, strict=True)):
        table[i, :n] = torch.randperm(n, generator=generator, device="cpu") + offset
        offset += n
    return table


def _client_losses(  # noqa: PLR0913 - the loss's inputs, named
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    owner: torch.Tensor,
    counts: torch.Tensor,
    loss: LossConfig,
    tau: float,
    sample_loss: SampleLoss | None,
) -> torch.Tensor:
    """Each client's mean loss over its own valid rows (plus margin control), ``(K,)``."""
    k, b, c = logits.shape
    flat = valid.reshape(-1)
    if sample_loss is None:
        rows = comp_sum_loss(logits.reshape(k * b, c)[flat], target.reshape(-1)[flat], tau, "none")
    else:
        rows = vmap(sample_loss)(logits, target).reshape(-1)[flat]
    denom = counts.clamp(min=1).to(rows.dtype)
    value = rows.new_zeros(k).index_add(0, owner[flat], rows) / denom
    if loss.margin_lambda > 0:
        probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=2)
        norms = probs.square().sum(dim=2)
        if loss.margin_mode == "batch":
            penalty = torch.log1p(torch.where(valid, norms, 0.0).sum(dim=1))
        else:
            penalty = torch.where(valid, torch.log1p(norms), 0.0).sum(dim=1) / denom
        value = value + loss.margin_lambda * penalty
    return value


def _proximal(params: Params, anchor: Params, mu: float) -> torch.Tensor:
    """FedProx's µ/2‖w_k − w_global‖² for every client k, ``(K,)``."""
    total = sum((p - anchor[n]).square().reshape(len(p), -1).sum(dim=1) for n, p in params.items())
    return 0.5 * mu * torch.as_tensor(total)


def _grad(p: torch.Tensor) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _per_client(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


class _StackedSGD:
    """:class:`fedsim.clients.optim.SGD` on stacked weights; inactive clients stand still."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float, wd: float) -> None:
        self.params, self.lr, self.momentum, self.weight_decay = params, lr, momentum, wd
        # A zero buffer gives buf = 0 * m + g = g exactly on a client's first step.
        self.buffers = [torch.zeros_like(p) for p in params] if momentum else []

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        for i, p in enumerate(self.params):
            mask, g = _per_client(active, p), _grad(p)
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            if self.momentum:
                g = self.buffers[i].mul(self.momentum).add_(g)
                self.buffers[i] = torch.where(mask, g, self.buffers[i])
            p.copy_(torch.where(mask, p.add(g, alpha=-self.lr), p))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class _StackedAdam:
    """:class:`fedsim.clients.optim.Adam` on stacked weights, one step count per client."""

    def __init__(self, params: list[torch.Tensor], lr: float, wd: float) -> None:
        self.params, self.lr, self.weight_decay = params, lr, wd
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros(len(params[0]), dtype=torch.float64, device=params[0].device)

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.t += active
        t = self.t.clamp(min=1)
        step_size = (-self.lr / (1 - b1**t)).to(self.params[0].dtype)
        bias2_sqrt = (1 - b2**t).sqrt().to(self.params[0].dtype)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            mask, g = _per_client(active, p), _grad(p)
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            m_new = torch.lerp(m, g, 1 - b1)
            v_new = v.mul(b2).addcmul_(g, g, value=1 - b2)
            denom = (v_new.sqrt() / _per_client(bias2_sqrt, p)).add_(self.eps)
            # addcdiv computes value * m / denom in this order
            p_new = p + _per_client(step_size, p) * m_new / denom
            m.copy_(torch.where(mask, m_new, m))
            v.copy_(torch.where(mask, v_new, v))
            p.copy_(torch.where(mask, p_new, p))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
