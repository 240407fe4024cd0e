"""A model of your own: a factory ``make_net(input_shape, num_classes, **options)``.

Run it with ``python examples/custom_model.py [--engine local|ray|flower] [--rounds N]
[--out DIR]`` or ``fedsim run examples/custom_model.toml``: the scenario names the
factory by reference, ``model.name = "custom_model:make_net"``, and its keyword
arguments in ``[model.options]``.
"""

from __future__ import annotations

from torch import nn


def make_net(
    input_shape: tuple[int, ...], num_classes: int, width: int = 32, depth: int = 2
) -> nn.Module:
    """An MLP of ``depth`` hidden layers of ``width`` units with layer norm."""
    layers: list[nn.Module] = [nn.Flatten()]
    size = input_shape[0]
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.LayerNorm(width), nn.GELU()]
        size = width
    layers.append(nn.Linear(size, num_classes))
    return nn.Sequential(*layers)


if __name__ == "__main__":
    from _cli import parse_args, report_line, run_example

    args = parse_args("custom_model")
    print(report_line("custom_model", run_example("custom_model", args)))
