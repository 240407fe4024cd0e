"""Partitioners: which pooled rows each client holds (pure numpy).

The algorithms are those of flwr-datasets' ``IidPartitioner``,
``DirichletPartitioner`` (per-class Dirichlet shares, redrawn until every client
has ``min_partition_size`` rows), ``PathologicalPartitioner`` and a Dirichlet
quantity skew. fedsim does not call flwr-datasets at run time: importing it pulls
in ``datasets`` and matplotlib, which costs more (2–5 s) than a whole default run;
the tests use flwr-datasets as the reference instead. Everything is seeded from the
scenario seed, so the same seed gives the same partition on every machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedsim.errors import ConfigError
from fedsim.seeds import Stream

METHODS = ("iid", "dirichlet-label", "dirichlet-sensitive", "pathological", "quantity")


def partition(
    method: str,
    labels: np.ndarray,
    sensitive: np.ndarray,
    num_clients: int,
    *,
    seed: int,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    min_partition_size: int = 10,
) -> list[np.ndarray]:
    """Split row indices ``0..N-1`` over ``num_clients`` clients.

    Parameters
    ----------
    method
        One of :data:`METHODS`.
    labels, sensitive
        Integer label and sensitive-attribute codes per row.
    num_clients
        Number of partitions.
    seed
        Seed of every random choice.
    alpha
        Dirichlet concentration (label/sensitive skew; quantity skew).
    classes_per_client
        Classes per client for ``pathological``.
    min_partition_size
        Dirichlet partitioners redraw until every client has at least this many rows.

    Returns
    -------
    list of numpy.ndarray
        Sorted int64 row indices per client; together they are disjoint.

    Raises
    ------
    ConfigError
        If the request cannot be met (too many clients, alpha too small...).
    """
    n = len(labels)
    if num_clients > n:
        raise ConfigError(f"partition.num_clients: {num_clients} clients but only {n} rows")
    try:
        parts = _PARTITIONERS[method](
            labels, sensitive, num_clients, seed, alpha, classes_per_client, min_partition_size
        )
    except KeyError:
        raise ConfigError(
            f"partition.method: unknown {method!r} (expected one of: {', '.join(METHODS)})"
        ) from None
    if any(len(p) == 0 for p in parts):
        raise ConfigError(
            f"partition ({method}): some clients got no rows; use fewer clients or a larger alpha"
        )
    return parts


def _iid(
    labels: np.ndarray,
    sensitive: np.ndarray,
    k: int,
    seed: int,
    alpha: float,
    cpc: int,
    min_size: int,
) -> list[np.ndarray]:
    order = np.random.default_rng([seed, Stream.PARTITION_IID]).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, k)]


def _dirichlet(column: str) -> Callable[..., list[np.ndarray]]:
    """Per-class Dirichlet proportions (Hsu et al. 2019), as flwr-datasets draws them."""

    def run(
        labels: np.ndarray,
        sensitive: np.ndarray,
        k: int,
        seed: int,
        alpha: float,
        cpc: int,
        min_size: int,
    ) -> list[np.ndarray]:
        values = labels if column == "label" else sensitive
        rng = np.random.default_rng([seed, Stream.PARTITION_DIRICHLET])
        for _attempt in range(100):
            parts: list[list[np.ndarray]] = [[] for _ in range(k)]
            for v in np.unique(values):
                idx = rng.permutation(np.flatnonzero(values == v))
                shares = rng.dirichlet(np.full(k, alpha))
                cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
                for i, chunk in enumerate(np.split(idx, cuts)):
                    parts[i].append(chunk)
            out = [np.sort(np.concatenate(p)) for p in parts]
            if min(len(p) for p in out) >= min_size:
                return out
        raise ConfigError(
            f"partition: no Dirichlet draw (alpha={alpha}) gave every one of {k} clients "
            f"at least {min_size} rows in 100 attempts; raise partition.alpha or lower "
            "partition.min_partition_size"
        )

    return run


def _pathological(
    labels: np.ndarray,
    sensitive: np.ndarray,
    k: int,
    seed: int,
    alpha: float,
    cpc: int,
    min_size: int,
) -> list[np.ndarray]:
    """Each client holds ``cpc`` classes; a class's rows are split evenly among its holders."""
    classes = np.unique(labels)
    if cpc > len(classes):
        raise ConfigError(
            f"partition.classes_per_client: {cpc} exceeds the {len(classes)} classes present"
        )
    rng = np.random.default_rng([seed, Stream.PARTITION_PATHOLOGICAL])
    # Deal classes round-robin from a shuffled deck so that every class is used.
    deck = np.concatenate([rng.permutation(classes) for _ in range(-(-k * cpc // len(classes)))])
    held: list[set[int]] = []
    pos = 0
    for _ in range(k):
        mine: set[int] = set()
        while len(mine) < cpc:
            mine.add(int(deck[pos % len(deck)]))  # a repeat is skipped by the set
            pos += 1
        held.append(mine)
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for c in classes:
        holders = [i for i, h in enumerate(held) if int(c) in h]
        if not holders:
            continue
        idx = rng.permutation(np.flatnonzero(labels == c))
        for i, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _quantity(
    labels: np.ndarray,
    sensitive: np.ndarray,
    k: int,
    seed: int,
    alpha: float,
    cpc: int,
    min_size: int,
) -> list[np.ndarray]:
    """Client sizes from Dirichlet(alpha) (each at least ``min_size``), rows drawn IID."""
    n = len(labels)
    rng = np.random.default_rng([seed, Stream.PARTITION_QUANTITY])
    floor = min(max(min_size, 1), n // k)
    shares = rng.dirichlet(np.full(k, alpha))
    sizes = floor + np.floor(shares * (n - floor * k)).astype(int)
    sizes[np.argmax(sizes)] += n - sizes.sum()  # hand out the rounding remainder
    order = rng.permutation(n)
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]


_PARTITIONERS: dict[str, Callable[..., list[np.ndarray]]] = {
    "iid": _iid,
    "dirichlet-label": _dirichlet("label"),
    "dirichlet-sensitive": _dirichlet("z"),
    "pathological": _pathological,
    "quantity": _quantity,
}


def train_test_split(
    indices: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split one client's rows into train and test (at least one train row)."""
    order = rng.permutation(indices)
    n_test = int(round(len(order) * test_fraction))
    n_test = min(max(n_test, 1 if len(order) > 1 else 0), len(order) - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])
