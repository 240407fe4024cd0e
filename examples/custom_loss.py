"""A loss of your own: ``fn(logits, target, **options) -> scalar tensor``.

``focal_loss`` (Lin et al., 2017, eq. 5) down-weights examples the model already
gets right: ``mean((1 − p_t)^gamma · −log p_t)`` with ``p_t`` the predicted
probability of the true class; ``gamma = 0`` is cross-entropy. The scenario names it
by reference, ``[client.loss] name = "custom_loss:focal_loss"``, with its keyword
arguments in ``[client.loss.options]``; it composes with fedsim's margin control,
adversarial term and FedProx as the built-in losses do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss of a batch of ``logits`` (N, C) against integer ``target`` (N,)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


if __name__ == "__main__":
    from _cli import parse_args, report_line, run_example

    args = parse_args("custom_loss")
    print(report_line("custom_loss", run_example("custom_loss", args)))
