"""When a client reply can be aggregated: one pure check shared by every strategy.

:class:`fedsim.strategies.screening.Screened` (every strategy's wrapper) and
:class:`fedsim.strategies.fedld.FedLD` drop the same replies for the same reasons;
both ask :func:`reply_problem`. It sees a reply as plain data (how many array and
metric records it holds, its arrays as a mapping of numpy arrays, its metrics), so it
imports neither Flower nor Ray; the strategies read the records (zero-copy) and map
the answer onto their own counters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["MALFORMED", "NONFINITE", "ReplyProblem", "is_finite", "reply_problem"]

Kind = Literal["malformed", "nonfinite"]
MALFORMED: Kind = "malformed"
NONFINITE: Kind = "nonfinite"


@dataclass(frozen=True)
class ReplyProblem:
    """Why a reply cannot be aggregated: its kind and a sentence for the log."""

    kind: Kind
    reason: str


def is_finite(values: NDArray[Any]) -> bool:
    """True unless a float (or complex) array holds NaN or ±Inf; other dtypes are finite."""
    return not np.issubdtype(values.dtype, np.inexact) or bool(np.isfinite(values).all())


def reply_problem(
    num_array_records: int,
    metrics: Sequence[Mapping[str, Any]],
    arrays: Mapping[str, NDArray[Any]] | None,
    expected: Mapping[str, tuple[int, ...]] | None,
    weight_key: str | None = None,
) -> ReplyProblem | None:
    """Why a reply cannot be aggregated, or None when it can.

    The checks run from the cheapest up: record counts, the weight metric, array keys
    and shapes, then the values.

    Parameters
    ----------
    num_array_records
        How many ArrayRecords the reply holds.
    metrics
        Its MetricRecords (each a mapping); exactly one is expected.
    arrays
        The arrays of its one ArrayRecord (a lazy mapping is fine: values are read
        only once keys and shapes match); None when it holds no single ArrayRecord.
    expected
        Key → shape of the model that was sent. None for replies that carry no
        arrays (evaluation): then neither the ArrayRecord count nor arrays are checked.
    weight_key
        A metric that must be a positive finite number (the aggregation weight), or None.

    Returns
    -------
    ReplyProblem or None
        ``kind`` is ``"malformed"`` (records, weight, keys or shapes) or ``"nonfinite"``.

    Examples
    --------
    >>> import numpy as np
    >>> sent = {"w": (2,)}
    >>> reply_problem(1, [{"n": 3}], {"w": np.ones(2)}, sent, weight_key="n") is None
    True
    >>> reply_problem(1, [{"n": 3}], {"w": np.array([1.0, np.nan])}, sent).kind
    'nonfinite'
    >>> reply_problem(1, [{"n": 3}], {"w": np.ones(3)}, sent).reason
    "'w' has shape (3,), expected (2,)"
    """
    if expected is None:
        if len(metrics) != 1:
            return ReplyProblem(MALFORMED, "expected exactly one MetricRecord")
        return None
    if num_array_records != 1 or len(metrics) != 1 or arrays is None:
        return ReplyProblem(MALFORMED, "expected exactly one ArrayRecord and one MetricRecord")
    if weight_key is not None:
        weight = metrics[0].get(weight_key)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            return ReplyProblem(MALFORMED, f"metric {weight_key!r} missing or not a number")
        if not (math.isfinite(weight) and weight > 0):
            return ReplyProblem(
                MALFORMED, f"metric {weight_key!r} = {weight} is not a positive number"
            )
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        return ReplyProblem(
            MALFORMED,
            f"array keys differ from the global arrays (missing {missing}, extra {extra})",
        )
    views = {key: arrays[key] for key in expected}
    for key, shape in expected.items():
        if tuple(views[key].shape) != tuple(shape):
            return ReplyProblem(
                MALFORMED, f"{key!r} has shape {tuple(views[key].shape)}, expected {tuple(shape)}"
            )
    for key, values in views.items():
        if not is_finite(values):
            return ReplyProblem(NONFINITE, f"{key!r} contains NaN/Inf")
    return None
