"""Models: logistic regression, an MLP for tabular data, a small CNN for images, or the
user's own model factory by reference (``model.name = "mypkg.models:make_net"``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedsim.config import MODELS, Scenario
from fedsim.errors import ConfigError
from fedsim.plugins import describe, is_reference, resolve_callable


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
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a model with weights drawn from ``seed`` (same seed, same weights).

    Parameters
    ----------
    name
        ``logreg``, ``mlp``, ``cnn``, or a reference ``"package.module:make_net"`` to a
        factory called as ``make_net(input_shape, num_classes, **options)`` that returns
        a ``torch.nn.Module`` mapping a batch ``(B, *input_shape)`` to logits
        ``(B, num_classes)``.
    options
        ``[model.options]``: keyword arguments of a plug-in factory.

    Raises
    ------
    ConfigError
        For an unknown model, a CNN on non-image data, or a plug-in that cannot be
        imported, fails, or returns something other than such a module.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    try:
        if is_reference(name):
            return _plugin(name, input_shape, num_classes, dict(options or {}))
        return _build(name, input_shape, num_classes, hidden)
    finally:
        torch.random.set_rng_state(generator_state)


def scenario_model(scenario: Scenario, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The scenario's model (``[model]``) for data of this shape, drawn from its seed.

    The one place a run's model is built: the initial global weights, every client's
    model, the server's global evaluation and the report's rescoring all use it.
    """
    cfg = scenario.model
    return build_model(
        cfg.name, input_shape, num_classes, cfg.hidden, scenario.seed, options=cfg.options
    )


def _plugin(
    ref: str, shape: tuple[int, ...], num_classes: int, options: dict[str, Any]
) -> nn.Module:
    factory = resolve_callable(ref, "model.name")
    try:
        model = factory(shape, num_classes, **options)
    except TypeError as exc:
        raise ConfigError(
            f"model.name: {ref}(input_shape, num_classes, **model.options) failed: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.name: {ref} returned {describe(model)}, expected a torch.nn.Module"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *shape)))
    except Exception as exc:  # the user's forward pass: report it as their error
        raise ConfigError(
            f"model.name: {ref}'s model fails on a batch of shape {(2, *shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else describe(out)
        raise ConfigError(
            f"model.name: {ref}'s model maps a batch of shape {(2, *shape)} to {got}, "
            f"expected logits of shape (2, {num_classes})"
        )
    return model


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


__all__ = ["MODELS", "SmallCNN", "build_model", "scenario_model"]
