"""The researcher's own data: tabular files without code, or a loader by reference.

* ``[data] dataset = "csv"`` (or ``"parquet"``) with ``path``, ``label`` (column),
  ``sensitive`` (column, optional) and ``drop`` (columns): categorical columns are
  one-hot encoded and numeric ones standardised on training rows only, exactly as for
  the built-in tabular sets; rows with a missing value are dropped.
* ``[data] dataset = "mypkg.data:load"`` with ``[data.options]``: ``load(**options)``
  returns a mapping with numpy arrays ``"x"`` (rows first; images keep their shape
  ``(N, C, H, W)``), ``"y"`` (integer labels 0..C−1), optionally ``"sensitive"``
  (integer codes 0..G−1), ``"group_names"`` (one name per sensitive code),
  ``"class_names"`` (one per label) and ``"attributes"`` (name → per-row values, for
  ``partition.method = "natural"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.config import DataConfig
from fedsim.data.datasets import RawDataset, tabular_dataset
from fedsim.errors import ConfigError, DataError
from fedsim.plugins import describe, resolve_callable

#: More groups than this in a sensitive column is almost surely a wrong column.
MAX_GROUPS = 64


def load_table_file(cfg: DataConfig) -> RawDataset:
    """Read ``cfg.path`` as CSV or Parquet and encode it as a tabular dataset."""
    kind = cfg.dataset
    if not cfg.path:
        raise ConfigError(f"data.path: dataset = {kind!r} needs the file's path")
    if not cfg.label:
        raise ConfigError(f"data.label: dataset = {kind!r} needs the label column's name")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.path: no such file: {path}")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"data.path: cannot read {path} as {kind}: {exc}") from None
    columns = set(frame.columns)
    for key, names in (
        ("data.label", [cfg.label]),
        ("data.sensitive", [cfg.sensitive] if cfg.sensitive else []),
        ("data.drop", list(cfg.drop)),
    ):
        if missing := [n for n in names if n not in columns]:
            raise ConfigError(
                f"{key}: no column {missing[0]!r} in {path} (columns: "
                f"{', '.join(map(str, frame.columns))})"
            )
    rows = len(frame)
    frame = frame.dropna().reset_index(drop=True)
    if len(frame) < 2:
        raise DataError(f"data.path: {path} has {len(frame)} complete rows of {rows}")
    attributes = {str(c): frame[c].to_numpy() for c in frame.columns}
    label = pd.Categorical(frame.pop(cfg.label))
    sensitive = frame[cfg.sensitive] if cfg.sensitive else pd.Series(np.zeros(len(frame), int))
    groups = pd.Categorical(sensitive)
    if len(groups.categories) > MAX_GROUPS:
        raise ConfigError(
            f"data.sensitive: column {cfg.sensitive!r} has {len(groups.categories)} distinct "
            f"values (at most {MAX_GROUPS}); bin it into groups first"
        )
    features = frame.drop(columns=list(cfg.drop))
    categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    categorical += [c for c in features.columns if pd.api.types.is_bool_dtype(features[c])]
    if features.shape[1] == 0:
        raise ConfigError(f"data.drop: no feature column of {path} is left")
    raw = tabular_dataset(
        path.stem,
        features,
        pd.Series(np.asarray(label.codes, np.int64)),
        sensitive if cfg.sensitive else pd.Series(["all"] * len(features)),
        cfg.sensitive,
        sorted(set(categorical), key=list(features.columns).index),
        tuple(str(c) for c in label.categories),
    )
    return _with_attributes(raw, attributes)


def load_plugin_dataset(reference: str, options: Mapping[str, Any]) -> RawDataset:
    """Call a loader ``reference`` with ``options`` and validate what it returns."""
    loader = resolve_callable(reference, "data.dataset")
    try:
        out = loader(**dict(options))
    except TypeError as exc:
        raise ConfigError(f"data.dataset: {reference}(**data.options) failed: {exc}") from None
    if not isinstance(out, Mapping):
        raise ConfigError(
            f"data.dataset: {reference} returned {describe(out)}, expected a mapping with "
            "numpy arrays 'x' and 'y' (and optionally 'sensitive', 'group_names', "
            "'class_names', 'attributes')"
        )
    return _raw_from_mapping(reference, out)


def _raw_from_mapping(ref: str, out: Mapping[str, Any]) -> RawDataset:
    def fail(what: str) -> ConfigError:
        return ConfigError(f"data.dataset: {ref} returned {what}")

    unknown = set(out) - {"x", "y", "sensitive", "group_names", "class_names", "attributes"}
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}")
    if "x" not in out or "y" not in out:
        raise fail("no 'x' or no 'y'")
    x, y = np.asarray(out["x"]), np.asarray(out["y"])
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise fail(f"'x' of shape {x.shape} and dtype {x.dtype}; expected numbers, rows first")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise fail(f"'y' of shape {y.shape} and dtype {y.dtype}; expected {len(x)} integers")
    if not np.isfinite(x).all():
        raise fail("'x' with NaN or infinite values")
    num_classes = int(y.max()) + 1 if len(y) else 0
    if len(y) < 2 or y.min() < 0 or num_classes < 2:
        raise fail("'y' that is not integer labels 0..C-1 with at least two classes")
    z = np.asarray(out.get("sensitive", np.zeros(len(y), np.int64)))
    if z.shape != y.shape or not np.issubdtype(z.dtype, np.integer) or (len(z) and z.min() < 0):
        raise fail(f"'sensitive' of shape {z.shape}; expected {len(y)} integer codes 0..G-1")
    num_groups = int(z.max()) + 1
    has_z = "sensitive" in out
    group_names = _names(out, "group_names", num_groups, ref) if has_z else ("all",)
    class_names = _names(out, "class_names", num_classes, ref)
    attributes = out.get("attributes", {})
    if not isinstance(attributes, Mapping) or any(
        np.asarray(v).shape != y.shape for v in attributes.values()
    ):
        raise fail(f"'attributes' that is not a mapping of name -> {len(y)} values per row")
    raw = RawDataset(
        name=ref,
        kind="image" if x.ndim == 4 else "tabular",
        x=np.ascontiguousarray(x, dtype=np.float32),
        y=y.astype(np.int64),
        z=z.astype(np.int64),
        class_names=class_names,
        group_names=group_names,
        sensitive="sensitive" if has_z else "",
    )
    return _with_attributes(raw, {str(k): np.asarray(v) for k, v in attributes.items()})


def _names(out: Mapping[str, Any], key: str, count: int, ref: str) -> tuple[str, ...]:
    if key not in out:
        return tuple(str(i) for i in range(count))
    names = tuple(str(n) for n in out[key])
    if len(names) < count:
        raise ConfigError(f"data.dataset: {ref} returned {len(names)} {key} for {count} codes")
    return names


def _with_attributes(raw: RawDataset, attributes: dict[str, np.ndarray]) -> RawDataset:
    return replace(raw, attributes={**raw.attributes, **attributes})
