"""Record helpers shared by fedsim's strategies (pure functions over Flower records)."""

from __future__ import annotations

import functools
import io
import math
from typing import Any

import numpy as np
from fedsim.clients import keys
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from numpy.typing import NDArray


def aggregate_scalar_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Weighted mean of scalar metrics, skipping per-client keys and lists.

    Flower's default aggregator would also average the per-client count tables and
    partition ids, which has no meaning; fedsim keeps those per client instead.
    """
    sums: dict[str, float] = {}
    total = 0.0
    for record in records:
        metrics = next(iter(record.metric_records.values()))
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
    for arr in record.values():
        values = array_view(arr)
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            return False
    return True


_NPY_STYPE = Array(np.zeros(0)).stype


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Parse a ``.npy`` header once per distinct header (clients share them per key)."""
    stream = io.BytesIO(header)
    version = np.lib.format.read_magic(stream)
    read = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }[version]
    shape, fortran_order, dtype = read(stream)
    return tuple(shape), bool(fortran_order), dtype


def array_view(array: Array) -> NDArray[Any]:
    """Read-only zero-copy view of ``array`` when it holds ``.npy`` bytes, else a copy."""
    data = array.data
    if array.stype == _NPY_STYPE and isinstance(data, bytes) and data[:6] == b"\x93NUMPY":
        # .npy: magic (6), version (2), header length (2 bytes in v1, 4 in v2), header
        length_bytes = 2 if data[6] == 1 else 4
        start = 8 + length_bytes
        offset = start + int.from_bytes(data[8:start], "little")
        try:
            shape, fortran_order, dtype = _npy_header(data[:offset])
        except (KeyError, ValueError, TypeError):
            return array.numpy()
        if not dtype.hasobject:
            view = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
            return view.reshape(shape, order="F" if fortran_order else "C")
    return array.numpy()
