"""Local training objectives: comp-sum losses, margin control, FedProx, and their composer.

Comp-sum losses follow Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical
Analysis and Applications", ICML 2023 (eq. 2 and Section 5). With scores ``h(x, .)``,
``p_y = softmax(h)_y`` and ``u = sum_{y' != y} exp(h(x, y') - h(x, y)) = 1/p_y - 1``::

    Phi^tau(u) = ((1 + u)^(1 - tau) - 1) / (1 - tau)   (tau != 1),   log(1 + u)   (tau = 1)
               = (p_y^(tau - 1) - 1) / (1 - tau)

so tau = 0 is sum-exponential, tau = 1 cross-entropy, tau = 1 + q generalized
cross-entropy ``(1 - p_y^q) / q`` and tau = 2 mean absolute error ``1 - p_y``. The smooth
adversarial comp-sum loss (Section 6) and the PGD attack live in :mod:`fedsim.clients.attacks`,
which imports :func:`comp_sum_loss` from here; the composed local objective lives in
:mod:`fedsim.clients.objective`, which imports both. Argument checks are shared through
:mod:`fedsim.clients.checks`.

The margin-control penalty follows the code released with FedLD (Zeng et al., MICCAI
2024), see :func:`margin_control_penalty`. :func:`proximal_term` is FedProx's
``mu/2 ||w - w_global||^2`` (Li et al., MLSys 2020).

Pure maths: no Flower or Ray imports. Randomness only through an explicit
``torch.Generator``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fedsim.clients.checks import check_choice, check_number
from fedsim.config import LOSSES
from fedsim.errors import ConfigError

Reduction = Literal["mean", "sum", "none"]
MarginMode = Literal["batch", "sample"]

LOSS_NAMES = LOSSES  # fedsim.config owns the names
REDUCTIONS = ("mean", "sum", "none")
MARGIN_MODES = ("batch", "sample")
#: Below this ``|1 - tau|`` the loss is cross-entropy itself: the relative error of doing
#: so is ``|1 - tau| * r / 2``, below float32 resolution while ``r < 1e5``; above it the
#: ``expm1`` form has no cancellation, so there is no jump at the switch.
TAU_ONE_TOLERANCE = 1e-12


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

    Examples
    --------
    At uniform logits over ``C = 4`` classes ``p_y = 1/4``: sum-exponential (``tau = 0``)
    gives ``C - 1``, cross-entropy (``tau = 1``) ``log C``, MAE (``tau = 2``) ``1 - 1/C``.

    >>> import torch
    >>> logits, target = torch.zeros(2, 4), torch.tensor([0, 3])
    >>> [round(comp_sum_loss(logits, target, tau).item(), 4) for tau in (0.0, 1.0, 2.0)]
    [3.0, 1.3863, 0.75]
    """
    tau = check_number("tau", tau)
    check_choice("reduction", reduction, REDUCTIONS)
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
    check_choice("loss.name", name, LOSS_NAMES)
    if name == "comp-sum":
        if tau is None:
            raise ConfigError("loss.tau: 'comp-sum' expected tau >= 0, got None")
        return check_number("loss.tau", tau)
    if name == "gce":
        if q is None or check_number("loss.q", q, positive=True) > 1:
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
    lam = check_number("lam", lam)
    check_choice("mode", mode, MARGIN_MODES)
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
    return (
        base if check_number("lam", lam) == 0 else base + margin_control_penalty(logits, lam, mode)
    )


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
    mu = check_number("mu", mu)
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
