"""Record helpers shared by fedsim's strategies (pure functions over Flower records).

Arrays are read through :func:`fedsim.engine._flower_compat.array_view` (zero-copy).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from numpy.typing import NDArray

from fedsim.clients import keys
from fedsim.engine._flower_compat import array_view
from fedsim.strategies.screening_rules import is_finite

R = TypeVar("R", ArrayRecord, ConfigRecord, MetricRecord)


def records_of(content: RecordDict, kind: type[R]) -> list[R]:
    """The ``kind`` records of ``content``, in order.

    ``list(content.metric_records.values())`` (etc.) without Flower's synchronised
    per-type view, which copies and re-validates the whole RecordDict on every access:
    the server reads each reply several times a round.
    """
    return [record for record in content.values() if isinstance(record, kind)]


def aggregate_scalar_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Weighted mean of scalar metrics, skipping per-client keys and lists.

    Flower's default aggregator would also average the per-client count tables and
    partition ids, which has no meaning; fedsim keeps those per client instead.
    """
    sums: dict[str, float] = {}
    total = 0.0
    for record in records:
        metrics = records_of(record, MetricRecord)[0]
        w = float(metrics[weight_key])  # type: ignore[arg-type]
        total += w
        for key, value in metrics.items():
            if key == weight_key or key in keys.PER_CLIENT or isinstance(value, list):
                continue
            sums[key] = sums.get(key, 0.0) + w * float(value)
    out = MetricRecord({k: (v / total if total > 0 else math.nan) for k, v in sums.items()})
    out[weight_key] = int(total)
    return out


def array_signature(record: ArrayRecord) -> dict[str, tuple[int, ...]]:
    """Key → shape of every array in a record.

    Dtypes are not compared: server optimisers (FedAdam, FedYogi...) send float64
    arrays that clients load into float32 models and return as float32.
    """
    return {k: tuple(a.shape) for k, a in record.items()}


def all_finite(record: ArrayRecord) -> bool:
    """True when no array holds NaN or ±Inf (checked on zero-copy views)."""
    return all(is_finite(array_view(arr)) for arr in record.values())


class RecordView(Mapping[str, NDArray[Any]]):
    """Lazy numpy view of an ArrayRecord: each value is decoded when it is read."""

    def __init__(self, record: ArrayRecord) -> None:
        self._record = record

    def __getitem__(self, key: str) -> NDArray[Any]:
        return array_view(self._record[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._record)

    def __len__(self) -> int:
        return len(self._record)
