"""Federated view of a dataset: per-client train and test splits, ready for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.config import TABULAR_FILES, DataConfig, EvaluationConfig, PartitionConfig
from fedsim.data.custom import load_plugin_dataset, load_table_file
from fedsim.data.datasets import RawDataset, load_dataset
from fedsim.data.partition import partition, train_test_split
from fedsim.errors import ConfigError
from fedsim.plugins import is_reference
from fedsim.seeds import Stream


@dataclass(frozen=True, eq=False)
class ClientSplit:
    """One client's data (arrays are views that must not be modified)."""

    x_train: np.ndarray
    y_train: np.ndarray
    z_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    z_test: np.ndarray


@dataclass(frozen=True, eq=False)
class FederatedData:
    """All clients' splits plus the dataset's metadata."""

    raw: RawDataset
    clients: tuple[ClientSplit, ...]
    # Held-out rows (x, y, z) for server-side evaluation; None unless asked for.
    global_test: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def counts(self) -> np.ndarray:
        """Training-row counts indexed [client, z, y] (the AGLFOP input)."""
        out = np.zeros((self.num_clients, self.raw.num_groups, self.raw.num_classes), np.int64)
        for k, c in enumerate(self.clients):
            np.add.at(out[k], (c.z_train, c.y_train), 1)
        return out


def build_federated(
    data: DataConfig,
    part: PartitionConfig,
    seed: int,
    root: str | Path | None = None,
    evaluation: EvaluationConfig | None = None,
) -> FederatedData:
    """Load, partition, split, standardise and (optionally) add label noise.

    Numeric tabular columns are standardised with the mean and standard deviation of
    all clients' training rows (never test rows). Label noise flips the given fraction
    of each client's training labels to a different class, chosen uniformly. With
    ``evaluation.global_test`` the rows of :func:`holdout_rows` are kept out of every
    client and returned as ``global_test``.
    """
    raw = load_configured(data, seed, root)
    rng = np.random.default_rng([seed, Stream.SUBSAMPLE])
    rows = np.arange(len(raw.y))
    held = np.zeros(0, np.int64)
    if evaluation is not None and evaluation.global_test:
        held = holdout_rows(len(rows), evaluation.global_fraction, evaluation.holdout_seed)
        rows = np.setdiff1d(rows, held)
    if data.max_samples and data.max_samples < len(rows):
        rows = np.sort(rng.choice(rows, data.max_samples, replace=False))
    parts = partition(
        part.method,
        raw.y[rows],
        raw.z[rows],
        part.num_clients,
        seed=seed,
        alpha=part.alpha,
        classes_per_client=part.classes_per_client,
        min_partition_size=part.min_partition_size,
        shards_per_client=part.shards_per_client,
        by=_natural_column(raw, part, rows),
        options=part.options,
    )
    splits = [train_test_split(rows[p], data.test_fraction, rng) for p in parts]
    x = _standardise(raw, np.concatenate([tr for tr, _ in splits]))
    clients = []
    for k, (tr, te) in enumerate(splits):
        y_train = raw.y[tr]
        if data.label_noise > 0:
            y_train = flip_labels(y_train, data.label_noise, raw.num_classes, seed, k)
        clients.append(ClientSplit(x[tr], y_train, raw.z[tr], x[te], raw.y[te], raw.z[te]))
    global_test = (x[held], raw.y[held], raw.z[held]) if len(held) else None
    return FederatedData(raw, tuple(clients), global_test)


def holdout_rows(n: int, fraction: float, holdout_seed: int) -> np.ndarray:
    """The global test rows: ``round(fraction·n)`` rows drawn with ``holdout_seed`` only."""
    size = min(max(int(round(fraction * n)), 1), n - 1)
    rng = np.random.default_rng([holdout_seed, Stream.HOLDOUT])
    return np.sort(rng.choice(n, size, replace=False))


def load_configured(data: DataConfig, seed: int, root: str | Path | None = None) -> RawDataset:
    """The scenario's pooled dataset: built-in, a csv/parquet file, or a plug-in loader."""
    if data.dataset in TABULAR_FILES:
        return load_table_file(data)
    if is_reference(data.dataset):
        return load_plugin_dataset(data.dataset, data.options)
    return load_dataset(
        data.dataset,
        data.sensitive,
        root,
        num_samples=data.num_samples,
        num_features=data.num_features,
        z_label_agreement=data.z_label_agreement,
        class_separation=data.class_separation,
        seed=seed,
    )


def _natural_column(raw: RawDataset, part: PartitionConfig, rows: np.ndarray) -> np.ndarray | None:
    """The per-row values a natural partition splits by (``partition.by``)."""
    if part.method != "natural":
        return None
    if not part.by:
        raise ConfigError('partition.by: method = "natural" needs the column to split by')
    if part.by not in raw.attributes:
        known = ", ".join(raw.attributes) or "none"
        raise ConfigError(
            f"partition.by: {raw.name} has no column {part.by!r} to split by (columns: {known})"
        )
    return np.asarray(raw.attributes[part.by])[rows]


def _standardise(raw: RawDataset, train_rows: np.ndarray) -> np.ndarray:
    if raw.kind != "tabular" or not raw.numeric_columns:
        return raw.x
    cols = list(raw.numeric_columns)
    x = raw.x.copy()
    mean = x[train_rows][:, cols].mean(0)
    std = x[train_rows][:, cols].std(0)
    x[:, cols] = (x[:, cols] - mean) / np.where(std > 0, std, 1.0)
    return x


def flip_labels(
    y: np.ndarray, fraction: float, num_classes: int, seed: int, client: int
) -> np.ndarray:
    """Flip ``round(fraction·n)`` labels to a uniformly chosen *different* class."""
    rng = np.random.default_rng([seed, Stream.LABEL_NOISE, client])
    y = y.copy()
    n_flip = int(round(fraction * len(y)))
    idx = rng.choice(len(y), n_flip, replace=False)
    shift = rng.integers(1, num_classes, size=n_flip)
    y[idx] = (y[idx] + shift) % num_classes
    return y
