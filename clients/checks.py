"""Argument checks shared by the loss, attack and objective modules.

Each check raises :class:`~fedsim.errors.ConfigError` naming the field, what was
expected and what was given. Pure Python: no torch, Flower or Ray imports.
"""

from __future__ import annotations

import math
from typing import Literal

from fedsim.errors import ConfigError

Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")


def check_number(field: str, value: object, *, positive: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number ``>= 0`` (``> 0`` if ``positive``)."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{field}: expected a finite number {bound}, got {value!r}")
    return float(number)


def check_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{field}: expected one of {', '.join(choices)}; got {value!r}")
    return str(value)


def check_clamp(field: str, clamp: object) -> tuple[float, float] | None:
    """Return ``None`` or a finite pair ``(low, high)`` with ``low < high``."""
    if clamp is None:
        return None
    if not (isinstance(clamp, tuple | list) and len(clamp) == 2):
        raise ConfigError(f"{field}: expected None or a pair (low, high), got {clamp!r}")
    low, high = (float(v) for v in clamp)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{field}: expected finite low < high, got {clamp!r}")
    return low, high
