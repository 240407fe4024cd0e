"""fedsim's optimisers reproduce torch.optim update for update."""

from __future__ import annotations

import pytest
import torch

from fedsim.clients.optim import SGD, Adam


def _trajectory(make, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    opt = make(list(model.parameters()))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("momentum", "wd"), [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-3)])
def test_sgd_matches_torch(momentum: float, wd: float) -> None:
    ours = _trajectory(lambda p: SGD(p, lr=0.1, momentum=momentum, weight_decay=wd))
    ref = _trajectory(lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum, weight_decay=wd))
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adam_matches_torch(wd: float) -> None:
    ours = _trajectory(lambda p: Adam(p, lr=3e-3, weight_decay=wd))
    ref = _trajectory(lambda p: torch.optim.Adam(p, lr=3e-3, weight_decay=wd))
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
