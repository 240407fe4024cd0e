"""Local training objectives: comp-sum losses, adversarial smoothing, margin control, FedProx.

Comp-sum losses follow Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical
Analysis and Applications", ICML 2023 (eq. 2 and Section 5). With scores ``h(x, .)``,
``p_y = softmax(h)_y`` and ``u = sum_{y' != y} exp(h(x, y') - h(x, y)) = 1/p_y - 1``::

    Phi^tau(u) = ((1 + u)^(1 - tau) - 1) / (1 - tau)   (tau != 1),   log(1 + u)   (tau = 1)
               = (p_y^(tau - 1) - 1) / (1 - tau)

so tau = 0 is sum-exponential, tau = 1 cross-entropy, tau = 1 + q generalized
cross-entropy ``(1 - p_y^q) / q`` and tau = 2 mean absolute error ``1 - p_y``. The smooth
adversarial comp-sum loss (Section 6) adds ``nu * sup_{||x' - x|| <= gamma}
||Delta(x') - Delta(x)||_2`` with ``Delta(x) = h(x, .) - h(x, y)``; the supremum is
approximated by projected gradient ascent (PGD).

The margin-control penalty follows the code released with FedLD (Zeng et al., MICCAI
2024), see :func:`margin_control_penalty`. :func:`proximal_term` is FedProx's
``mu/2 ||w - w_global||^2`` (Li et al., MLSys 2020).

Pure maths: no Flower or Ray imports. Randomness only through an explicit
``torch.Generator``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fedsim.errors import ConfigError

Reduction = Literal["mean", "sum", "none"]
Norm = Literal["linf", "l2"]
MarginMode = Literal["batch", "sample"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSS_NAMES = ("sum-exp", "ce", "gce", "mae", "comp-sum")
REDUCTIONS = ("mean", "sum", "none")
NORMS = ("linf", "l2")
MARGIN_MODES = ("batch", "sample")
#: Below this ``|1 - tau|`` the loss is cross-entropy itself: the relative error of doing
#: so is ``|1 - tau| * r / 2``, below float32 resolution while ``r < 1e5``; above it the
#: ``expm1`` form has no cancellation, so there is no jump at the switch.
TAU_ONE_TOLERANCE = 1e-12
_TINY = 1e-12


# --------------------------------------------------------------------------- validation
def _number(field: str, value: object, *, positive: bool = False) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{field}: expected a finite number {bound}, got {value!r}")
    return float(number)


def _choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{field}: expected one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _clamp_range(field: str, clamp: object) -> tuple[float, float] | None:
    if clamp is None:
        return None
    if not (isinstance(clamp, tuple | list) and len(clamp) == 2):
        raise ConfigError(f"{field}: expected None or a pair (low, high), got {clamp!r}")
    low, high = (float(v) for v in clamp)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{field}: expected finite low < high, got {clamp!r}")
    return low, high


# --------------------------------------------------------------------------- comp-sum
class _CompSum(torch.autograd.Function):
    """``expm1((1 - tau) r) / (1 - tau)`` with ``r = -log p_y``; gradients in log space.

    Autograd's own chain ``exp((1-tau) r) * (p - e_y)`` forms ``inf * 0 = nan`` once the
    loss overflows (tau < 1, huge margins). Here ``p_y^(tau-1) p_j`` is evaluated as
    ``exp((1-tau) r + log p_j)``, which is ``inf`` or finite but never ``nan``.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, one_minus_tau: float
    ) -> torch.Tensor:
        log_probs = torch.log_softmax(logits, dim=1)
        scaled = log_probs.gather(1, target.unsqueeze(1)).squeeze(1) * -one_minus_tau
        ctx.save_for_backward(log_probs, scaled, target)
        return torch.expm1(scaled) / one_minus_tau

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        log_probs, scaled, target = ctx.saved_tensors
        index = target.unsqueeze(1)
        # |g| p_y^(tau-1) p_j = exp(log p_j + (1-tau) r + log|g|): a zero upstream g gives
        # exp(-inf) = 0, never inf * 0.
        log_scale = scaled + grad_loss.abs().log()
        grad = torch.add(log_probs, log_scale.unsqueeze(1)).exp_().scatter_(1, index, 0.0)
        # d/dh_y = -p_y^(tau-1) (1 - p_y) = -sum_{j != y}: no cancellation as p_y -> 1.
        grad.scatter_(1, index, -grad.sum(dim=1, keepdim=True))
        return grad.mul_(grad_loss.sign().unsqueeze(1)), None, None


def comp_sum_loss(
    logits: torch.Tensor, target: torch.Tensor, tau: float, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Comp-sum loss ``(p_y^(tau-1) - 1) / (1 - tau)`` (cross-entropy at ``tau = 1``).

    Computed from the log-softmax as ``expm1((1 - tau) r) / (1 - tau)`` with ``r`` the
    per-sample cross-entropy, so it is exact for logits of any magnitude: finite for every
    ``tau >= 1``; for ``tau < 1`` finite wherever the value fits the dtype, ``inf`` (never
    ``nan``, also in the gradient) beyond. At ``|1 - tau| < TAU_ONE_TOLERANCE`` it calls
    :func:`torch.nn.functional.cross_entropy` directly. Other ``tau`` use a custom autograd
    function that is first-order only (double backward raises).

    Parameters
    ----------
    logits
        Scores ``(N, C)``. Half precision is computed in float32.
    target
        Class indices ``(N,)``, int64.
    tau
        Loss parameter ``tau >= 0``.
    reduction
        ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses).

    Returns
    -------
    torch.Tensor
        The reduced loss, in ``logits``' dtype promoted to at least float32.

    Raises
    ------
    ConfigError
        If ``tau`` is negative or not finite, or ``reduction`` is unknown.
    ValueError
        If the shapes of ``logits`` and ``target`` do not match.
    """
    tau = _number("tau", tau)
    _choice("reduction", reduction, REDUCTIONS)
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, C) and target (N,), got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if abs(1.0 - tau) < TAU_ONE_TOLERANCE:
        return F.cross_entropy(logits, target, reduction=reduction)
    losses = _CompSum.apply(logits, target, 1.0 - tau)
    if reduction == "mean":
        return losses.mean()
    return losses.sum() if reduction == "sum" else losses


def resolve_tau(name: str, *, tau: float | None = None, q: float | None = None) -> float:
    """Return the comp-sum ``tau`` of a named loss.

    Parameters
    ----------
    name
        ``"sum-exp"`` (0), ``"ce"`` (1), ``"gce"`` (``1 + q``), ``"mae"`` (2) or
        ``"comp-sum"`` (``tau``).
    tau
        Required for ``"comp-sum"``; ignored for the other names.
    q
        Required for ``"gce"``, in ``(0, 1]``; ignored for the other names.

    Returns
    -------
    float
        The ``tau`` to pass to :func:`comp_sum_loss`.

    Raises
    ------
    ConfigError
        If the name is unknown or its own parameter is missing or out of range.

    Notes
    -----
    Parameters of other losses are ignored rather than rejected because a scenario's
    ``[client.loss]`` table carries defaults for both ``tau`` and ``q`` whatever the name.
    """
    _choice("loss.name", name, LOSS_NAMES)
    if name == "comp-sum":
        if tau is None:
            raise ConfigError("loss.tau: 'comp-sum' expected tau >= 0, got None")
        return _number("loss.tau", tau)
    if name == "gce":
        if q is None or _number("loss.q", q, positive=True) > 1:
            raise ConfigError(f"loss.q: 'gce' expected q in (0, 1], got {q!r}")
        return 1.0 + float(q)
    return {"sum-exp": 0.0, "ce": 1.0, "mae": 2.0}[name]


def loss_by_name(
    name: str, *, tau: float | None = None, q: float | None = None
) -> Callable[..., torch.Tensor]:
    """Return ``comp_sum_loss`` with the ``tau`` of a named loss bound (see :func:`resolve_tau`).

    The result is called as ``loss(logits, target, reduction="mean")``.
    """
    return functools.partial(comp_sum_loss, tau=resolve_tau(name, tau=tau, q=q))


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
            _number("radius", radius),
            steps,
            _number("step_size", step_size),
            _choice("norm", norm, NORMS),
            _clamp_range("clamp", clamp),
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
    nu = _number("nu", nu)
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


# --------------------------------------------------------------------------- margin, prox
def margin_control_penalty(
    logits: torch.Tensor, lam: float = 0.03, mode: MarginMode = "batch"
) -> torch.Tensor:
    """Margin-control penalty of FedLD, as in the authors' released code.

    ``mode="batch"`` (their code): ``lam * log(1 + ||softmax(Z)||_F^2)`` with ``Z`` the
    whole mini-batch's logits, the Frobenius norm taken over the batch's ``(N, C)``
    probability matrix (so it depends on the batch size). ``mode="sample"``:
    ``lam * mean_i log(1 + ||softmax(z_i)||_2^2)``. Add it to any base loss.

    Parameters
    ----------
    logits
        Scores ``(N, C)``; half precision is computed in float32.
    lam
        Weight ``lambda >= 0``; ``0`` gives an exact zero.
    mode
        ``"batch"`` or ``"sample"``.

    Returns
    -------
    torch.Tensor
        Scalar penalty.

    Raises
    ------
    ConfigError
        If ``lam`` is negative or ``mode`` unknown.
    """
    lam = _number("lam", lam)
    _choice("mode", mode, MARGIN_MODES)
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    if lam == 0:
        return probs.new_zeros(())
    if mode == "batch":
        return lam * torch.log1p(probs.square().sum())
    return lam * torch.log1p(probs.square().sum(dim=1)).mean()


def margin_control_loss(
    logits: torch.Tensor, target: torch.Tensor, lam: float = 0.03, mode: MarginMode = "batch"
) -> torch.Tensor:
    """Cross-entropy plus :func:`margin_control_penalty` (FedLD authors' code); ``lam = 0``
    returns plain cross-entropy exactly."""
    base = comp_sum_loss(logits, target, 1.0)
    return base if _number("lam", lam) == 0 else base + margin_control_penalty(logits, lam, mode)


def proximal_term(
    params: Iterable[torch.Tensor], global_params: Iterable[torch.Tensor], mu: float
) -> torch.Tensor:
    """FedProx proximal term ``mu/2 * sum ||w - w_global||^2``; ``w_global`` is a constant.

    Raises
    ------
    ConfigError
        If ``mu`` is negative.
    ValueError
        If the two parameter lists differ in length or shapes.
    """
    mu = _number("mu", mu)
    total: torch.Tensor | None = None
    for w, w_global in zip(params, global_params, strict=True):
        if w.shape != w_global.shape:
            raise ValueError(
                f"parameter shapes differ: {tuple(w.shape)} vs {tuple(w_global.shape)}"
            )
        sq = (w - w_global.detach()).square().sum()
        total = sq if total is None else total + sq
    if total is None:
        return torch.zeros(())
    return 0.5 * mu * total


# --------------------------------------------------------------------------- composer
@dataclass(frozen=True)
class LossSpec:
    """Validated choice of local objective; see :func:`objective`. Fields named ``adv_*``
    are the :func:`adversarial_comp_sum_loss` settings, used when ``adv_nu > 0``."""

    name: str = "ce"
    tau: float | None = None
    q: float | None = None
    margin_lambda: float = 0.0
    margin_mode: MarginMode = "batch"
    adv_nu: float = 0.0
    adv_radius: float = 8 / 255
    adv_steps: int = 10
    adv_step_size: float = 2 / 255
    adv_norm: Norm = "linf"
    adv_random_start: bool = True
    adv_clamp: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        resolve_tau(self.name, tau=self.tau, q=self.q)
        _number("loss.margin_lambda", self.margin_lambda)
        _choice("loss.margin_mode", self.margin_mode, MARGIN_MODES)
        _number("loss.adv_nu", self.adv_nu)
        _number("loss.adv_radius", self.adv_radius)
        steps = self.adv_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"loss.adv_steps: expected an integer >= 0, got {steps!r}")
        _number("loss.adv_step_size", self.adv_step_size)
        _choice("loss.adv_norm", self.adv_norm, NORMS)
        if not isinstance(self.adv_random_start, bool):
            raise ConfigError(
                f"loss.adv_random_start: expected a bool, got {self.adv_random_start!r}"
            )
        _clamp_range("loss.adv_clamp", self.adv_clamp)

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
) -> torch.Tensor:
    """Local objective: comp-sum loss (+ adversarial smoothing) (+ margin control).

    The FedProx :func:`proximal_term` is added by the trainer, which holds the global
    weights. ``generator`` drives the attack's random start (needed when ``adv_nu > 0``
    and ``adv_random_start``).

    Returns
    -------
    torch.Tensor
        Scalar loss with gradients to the model's parameters.
    """
    logits = model(x)
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
