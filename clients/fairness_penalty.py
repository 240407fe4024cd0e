"""Local fairness penalties: differentiable batch estimates of group disparity.

Each client may add ``weight × penalty(logits, y, z)`` to whatever per-batch objective
``[client.loss]`` selects, as in the federated experiment of Hamman & Dutta,
"Demystifying Local and Global Fairness Trade-offs in Federated Learning Using Partial
Information Decomposition" (ICLR 2024), which trained with cross-entropy plus 2 × a
demographic-parity loss. Predictions are relaxed to soft predictions
``p = softmax(logits / temperature)`` (a small temperature sharpens the relaxation
towards the hard argmax). With ``m[a, c] = mean of p[:, c] over the batch rows with
z = a``:

* ``demographic-parity``: ``max_c (max_a m[a, c] - min_a m[a, c])``, the largest
  pairwise gap between the groups present (for two groups and two classes:
  ``|E[p₁ | z=0] - E[p₁ | z=1]|``);
* ``equalized-odds``: the same gap computed within the rows of each true label ``y``,
  maximised over the labels present;
* ``mutual-information``: the plug-in estimate of ``I(Z; Ŷ_soft)`` in bits from the
  batch's soft table ``P(z, ŷ) = mean_i 1[z_i = z] p_i(ŷ)``.

Groups absent from a batch (or from a label's rows) are left out; with fewer than two
groups present a penalty is zero, with a zero (finite) gradient. Pure PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedsim.config import FairnessPenaltyConfig
from fedsim.errors import ConfigError

__all__ = [
    "PENALTIES",
    "Penalty",
    "demographic_parity_gap",
    "equalized_odds_gap",
    "make_penalty",
    "mutual_information_bits",
    "soft_predictions",
]

Penalty = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def soft_predictions(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax of ``logits / temperature``: the relaxed one-hot prediction per row."""
    return torch.softmax(logits / temperature, dim=1)


def _group_means(probs: torch.Tensor, z: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean soft prediction of each *present* group, ``[groups present, classes]``."""
    onehot = torch.nn.functional.one_hot(z, num_groups).to(probs.dtype)  # [n, g]
    sizes = onehot.sum(0)
    present = sizes > 0
    return (onehot.T @ probs)[present] / sizes[present, None]


def _spread(means: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Largest max-minus-min over groups, over classes; 0 (tied to the graph) if < 2."""
    if means.shape[0] < 2:
        return anchor.sum() * 0.0
    return (means.max(0).values - means.min(0).values).max()


def demographic_parity_gap(
    logits: torch.Tensor, z: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Soft demographic-parity gap of one batch.

    Parameters
    ----------
    logits : torch.Tensor
        ``[n, classes]`` model outputs.
    z : torch.Tensor
        ``[n]`` integer sensitive-attribute values (≥ 0).
    temperature : float, default 1.0
        Softmax temperature of the relaxation.

    Returns
    -------
    torch.Tensor
        Scalar ``max_c (max_a m[a, c] - min_a m[a, c])`` over the groups present.
    """
    probs = soft_predictions(logits, temperature)
    num_groups = int(z.max()) + 1 if len(z) else 1
    return _spread(_group_means(probs, z, num_groups), probs)


def equalized_odds_gap(
    logits: torch.Tensor, y: torch.Tensor, z: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Soft equalized-odds gap: the demographic-parity gap within each true label, max over labels.

    Labels whose rows hold fewer than two groups contribute zero.
    """
    probs = soft_predictions(logits, temperature)
    num_groups = int(z.max()) + 1 if len(z) else 1
    gaps = [
        _spread(_group_means(probs[y == label], z[y == label], num_groups), probs)
        for label in torch.unique(y).tolist()
    ]
    return torch.stack(gaps).max() if gaps else probs.sum() * 0.0


def mutual_information_bits(
    logits: torch.Tensor, z: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Plug-in ``I(Z; Ŷ_soft)`` in bits from the batch's soft table ``P(z, ŷ)``."""
    probs = soft_predictions(logits, temperature)
    num_groups = int(z.max()) + 1 if len(z) else 1
    onehot = torch.nn.functional.one_hot(z, num_groups).to(probs.dtype)
    present = onehot.sum(0) > 0
    if int(present.sum()) < 2:
        return probs.sum() * 0.0
    joint = (onehot.T @ probs)[present] / len(z)  # [groups present, classes]
    independent = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    tiny = torch.finfo(joint.dtype).tiny  # softmax may underflow at a sharp temperature
    ratio = joint.clamp_min(tiny).log() - independent.clamp_min(tiny).log()
    return (joint * ratio).sum() / math.log(2.0)


PENALTIES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "demographic-parity": lambda logits, y, z, t: demographic_parity_gap(logits, z, t),
    "equalized-odds": equalized_odds_gap,
    "mutual-information": lambda logits, y, z, t: mutual_information_bits(logits, z, t),
}


@dataclass(frozen=True)
class _WeightedPenalty:
    name: str
    weight: float
    temperature: float

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.weight * PENALTIES[self.name](logits, y, z, self.temperature)


def make_penalty(cfg: FairnessPenaltyConfig) -> Penalty | None:
    """The weighted penalty ``(logits, y, z) -> scalar`` of ``[client.fairness]``.

    Returns
    -------
    Penalty or None
        None when ``penalty = "none"`` or ``weight = 0``: the objective is then left
        exactly as it is.

    Raises
    ------
    ConfigError
        For an unknown penalty name (the scenario parser already rejects it).
    """
    if cfg.penalty == "none" or cfg.weight == 0:
        return None
    if cfg.penalty not in PENALTIES:
        raise ConfigError(
            f"client.fairness.penalty: unknown penalty {cfg.penalty!r} "
            f"(expected none, {', '.join(PENALTIES)})"
        )
    return _WeightedPenalty(cfg.penalty, cfg.weight, cfg.temperature)
