"""PID of long-form count tables and CSV files (columns ``z, yhat, s, count``).

The decomposition itself is :func:`fedsim.fairness.pid.decompose`; this module turns a
table of labelled counts (any sortable labels, repeated cells summed, an optional true
label ``y`` summed out) into its ``[z, yhat, s]`` array.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from fedsim.errors import DataError
from fedsim.fairness.pid import PIDResult, decompose

__all__ = ["decompose_counts_frame", "pid_from_csv"]

_FRAME_COLUMNS = ("z", "yhat", "s", "count")


def decompose_counts_frame(frame: pd.DataFrame) -> PIDResult:
    """Decompose a long-form table of counts with columns ``z, yhat, s, count``.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per (z, yhat, s) cell; repeated cells are summed. An extra
        column ``y`` (the true label) is allowed and summed out. Labels may be
        any sortable values; they are ordered by sorting.

    Returns
    -------
    PIDResult
        See :func:`decompose`.

    Raises
    ------
    DataError
        On missing or unexpected columns, missing labels, or counts that are
        not finite non-negative numbers with a positive total.
    SolverError
        See :func:`decompose`.
    """
    missing = [c for c in _FRAME_COLUMNS if c not in frame.columns]
    extra = [c for c in frame.columns if c not in (*_FRAME_COLUMNS, "y")]
    if missing or extra:
        raise DataError(
            f"counts table needs columns {', '.join(_FRAME_COLUMNS)} (and optionally y); "
            f"missing: {missing or 'none'}, unexpected: {extra or 'none'}"
        )
    if frame.empty:
        raise DataError("counts table has no rows")
    labels = frame[["z", "yhat", "s"]]
    if labels.isna().any().any():
        raise DataError("counts table has empty z, yhat or s entries; every row needs all three")
    counts = pd.to_numeric(frame["count"], errors="coerce")
    if counts.isna().any():
        raise DataError("counts table has a missing or non-numeric count; counts must be numbers")
    codes = [pd.factorize(labels[c], sort=True) for c in ("z", "yhat", "s")]
    joint = np.zeros(tuple(len(uniques) for _, uniques in codes))
    values = counts.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise DataError("counts table has a negative or infinite count; counts must be >= 0")
    np.add.at(joint, tuple(index for index, _ in codes), values)
    return decompose(joint)


def pid_from_csv(path: str | os.PathLike[str]) -> PIDResult:
    """Read a CSV of counts (columns ``z, yhat, s, count``, optional ``y``) and decompose it.

    Parameters
    ----------
    path : str or os.PathLike
        CSV file with a header row.

    Returns
    -------
    PIDResult
        See :func:`decompose`.

    Raises
    ------
    DataError
        If the file cannot be read or its table is invalid
        (see :func:`decompose_counts_frame`).
    SolverError
        See :func:`decompose`.
    """
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read counts CSV {os.fspath(path)!r}: {exc}") from exc
    return decompose_counts_frame(frame)
