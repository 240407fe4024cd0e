"""Local training objectives: comp-sum losses, margin control, FedProx, and their composer.

Comp-sum losses follow Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical
Analysis and Applications", ICML 2023 (eq. 2 and Section 5). With scores ``h(x, .)``,
``p_y = softmax(h)_y`` and ``u = sum_{y' != y} exp(h(x, y') - h(x, y)) = 1/p_y - 1``::

    Phi^tau(u) = ((1 + u)^(1 - tau) - 1) / (1 - tau)   (tau != 1),   log(1 + u)   (tau = 1)
               = (p_y^(tau - 1) - 1) / (1 - tau)

so tau = 0 is sum-exponential, tau = 1 cross-entropy, tau = 1 + q generalized
cross-entropy ``(1 - p_y^q) / q`` and tau = 2 mean absolute error ``1 - p_y``. The smooth
adversarial comp-sum loss (Section 6) and the PGD attack live in :mod:`fedsim.clients.attacks`,
which imports the validators and :func:`comp_sum_loss` from here; :func:`objective`
imports :mod:`fedsim.clients.attacks` inside the function, so there is no import cycle.

The margin-control penalty follows the code released with FedLD (Zeng et al., MICCAI
2024), see :func:`margin_control_penalty`. :func:`proximal_term` is FedProx's
``mu/2 ||w - w_global||^2`` (Li et al., MLSys 2020).

Pure maths: no Flower or Ray imports. Randomness only through an explicit
``torch.Generator``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fedsim.errors import ConfigError

Reduction = Literal["mean", "sum", "none"]
Norm = Literal["linf", "l2"]
MarginMode = Literal["batch", "sample"]

LOSS_NAMES = ("sum-exp", "ce", "gce", "mae", "comp-sum")
REDUCTIONS = ("mean", "sum", "none")
NORMS = ("linf", "l2")
MARGIN_MODES = ("batch", "sample")
#: Below this ``|1 - tau|`` the loss is cross-entropy itself: the relative error of doing
#: so is ``|1 - tau| * r / 2``, below float32 resolution while ``r < 1e5``; above it the
#: ``expm1`` form has no cancellation, so there is no jump at the switch.
TAU_ONE_TOLERANCE = 1e-12


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
    are the :func:`fedsim.clients.attacks.adversarial_comp_sum_loss` settings, used when
    ``adv_nu > 0``."""

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
        # Imported here: clients.attacks imports this module at load time.
        from fedsim.clients.attacks import adversarial_smoothness_term

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
