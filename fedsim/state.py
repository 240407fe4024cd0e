"""The state protocol: what survives a resume, and how restored arrays are checked.

Anything that must survive a resume exposes ``state() -> dict`` of numpy arrays and
``load_state(dict)``; checkpoints store exactly that (with a digest) and restore
nothing else. This module is base layer: numpy only, no Flower, no Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedsim.errors import CheckpointError

__all__ = ["Stateful", "check_array", "check_arrays"]


@runtime_checkable
class Stateful(Protocol):
    """An object whose state is a flat ``{name: array}`` mapping."""

    def state(self) -> dict[str, NDArray[Any]]:
        """The arrays that must survive a resume (copies, safe to serialise)."""
        ...

    def load_state(self, state: Mapping[str, NDArray[Any]]) -> None:
        """Restore what :meth:`state` returned; raise a ``FedsimError`` on bad input."""
        ...


def check_array(label: str, value: Any, reference: NDArray[Any]) -> NDArray[Any]:
    """``value`` when it fits ``reference``'s shape and dtype kind and is finite.

    Float arrays may change width (server optimisers send float64 updates of a
    float32 model); integer and boolean arrays must keep their exact dtype.

    Raises
    ------
    CheckpointError
        When ``value`` is not an array of that shape and dtype, or holds NaN/±Inf.
    """
    if not isinstance(value, np.ndarray):
        raise CheckpointError(f"{label}: expected an array, got {type(value).__name__}")
    if value.shape != reference.shape:
        raise CheckpointError(
            f"{label}: shape {value.shape} does not match the model's {reference.shape}"
        )
    ref_kind = reference.dtype.kind
    fits = value.dtype.kind == "f" if ref_kind == "f" else value.dtype == reference.dtype
    if not fits:
        raise CheckpointError(
            f"{label}: dtype {value.dtype} does not fit the model's {reference.dtype}"
        )
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise CheckpointError(f"{label}: holds NaN or infinite values")
    return value


def check_arrays(
    label: str, given: Mapping[str, Any], reference: Mapping[str, NDArray[Any]]
) -> dict[str, NDArray[Any]]:
    """``given`` in ``reference``'s key order, each array checked by :func:`check_array`.

    Raises
    ------
    CheckpointError
        When the names differ from the model's, or an array does not fit.
    """
    missing, extra = sorted(set(reference) - set(given)), sorted(set(given) - set(reference))
    if missing or extra:
        raise CheckpointError(
            f"{label}: array names do not match the model's (missing {missing or 'none'}, "
            f"unexpected {extra or 'none'})"
        )
    return {k: check_array(f"{label} {k!r}", given[k], ref) for k, ref in reference.items()}
