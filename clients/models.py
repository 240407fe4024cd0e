"""Models: logistic regression, an MLP for tabular data and a small CNN for images."""

from __future__ import annotations

import math

import torch
from torch import nn

from fedsim.errors import ConfigError


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks and a linear head; adapts to any HxW >= 4 and channel count."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: tuple[int, ...] = (64,),
    seed: int = 0,
) -> nn.Module:
    """Build a model with weights drawn from ``seed`` (same seed, same weights).

    Raises
    ------
    ConfigError
        For an unknown model, or a CNN on non-image data.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    try:
        return _build(name, input_shape, num_classes, hidden)
    finally:
        torch.random.set_rng_state(generator_state)


def _build(
    name: str, shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]
) -> nn.Module:
    flat = math.prod(shape)
    if name == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes))
    if name == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)
    if name == "cnn":
        if len(shape) != 3:
            raise ConfigError(f"model.name: 'cnn' needs image data, got input shape {shape}")
        return SmallCNN(shape[0], num_classes)
    raise ConfigError(f"model.name: unknown model {name!r} (expected logreg, mlp or cnn)")


MODELS = ("logreg", "mlp", "cnn")
