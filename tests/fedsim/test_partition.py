"""Partitioners: determinism, sizes, skew; flwr-datasets as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.config import DataConfig, PartitionConfig
from fedsim.data import build_federated, partition
from fedsim.data.federated import flip_labels
from fedsim.errors import ConfigError

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 5, size=5_000)
SENSITIVE = (RNG.random(5_000) < 0.3).astype(np.int64)


def _split(method: str, k: int = 10, seed: int = 1, **kw: float) -> list[np.ndarray]:
    return partition(method, LABELS, SENSITIVE, k, seed=seed, **kw)  # type: ignore[arg-type]


def _label_skew(parts: list[np.ndarray], values: np.ndarray) -> float:
    """Mean total-variation distance between client and global value distributions."""
    k = values.max() + 1
    glob = np.bincount(values, minlength=k) / len(values)
    return float(
        np.mean(
            [0.5 * np.abs(np.bincount(values[p], minlength=k) / len(p) - glob).sum() for p in parts]
        )
    )


@pytest.mark.parametrize(
    "method", ["iid", "dirichlet-label", "dirichlet-sensitive", "pathological", "quantity"]
)
def test_disjoint_cover_and_deterministic(method: str) -> None:
    parts = _split(method)
    flat = np.concatenate(parts)
    assert len(flat) == len(np.unique(flat))  # disjoint
    if method != "pathological":
        assert len(flat) == len(LABELS)  # every row used
    again = _split(method)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = _split(method, seed=2)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_sizes_match_flwr_datasets() -> None:
    from datasets import Dataset
    from flwr_datasets.partitioner import IidPartitioner

    ref = IidPartitioner(num_partitions=7)
    ref.dataset = Dataset.from_dict({"label": LABELS})
    ref_sizes = [len(ref.load_partition(i)) for i in range(7)]
    assert [len(p) for p in _split("iid", k=7)] == ref_sizes
    assert _label_skew(_split("iid"), LABELS) < 0.05


def test_dirichlet_skew_grows_as_alpha_shrinks_like_flwr_datasets() -> None:
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner

    ds = Dataset.from_dict({"label": LABELS, "idx": np.arange(len(LABELS))})
    for alpha in (0.1, 1.0, 100.0):
        ours = _label_skew(_split("dirichlet-label", alpha=alpha, min_partition_size=0), LABELS)
        ref = DirichletPartitioner(10, "label", alpha, min_partition_size=0, seed=1)
        ref.dataset = ds
        theirs = _label_skew([np.asarray(ref.load_partition(i)["idx"]) for i in range(10)], LABELS)
        # Same algorithm, different random streams: same skew level.
        assert abs(ours - theirs) < 0.12, (alpha, ours, theirs)
    assert _label_skew(_split("dirichlet-label", alpha=0.1, min_partition_size=0), LABELS) > 0.4
    assert _label_skew(_split("dirichlet-label", alpha=100.0), LABELS) < 0.06


def test_dirichlet_sensitive_skews_z_not_only_labels() -> None:
    parts = _split("dirichlet-sensitive", alpha=0.2, min_partition_size=0)
    assert _label_skew(parts, SENSITIVE) > 3 * _label_skew(_split("iid"), SENSITIVE)


def test_dirichlet_min_size_is_enforced_or_explained() -> None:
    parts = _split("dirichlet-label", alpha=0.5, min_partition_size=50)
    assert min(len(p) for p in parts) >= 50
    with pytest.raises(ConfigError, match="raise partition.alpha"):
        _split("dirichlet-label", k=100, alpha=0.01, min_partition_size=45)


def test_pathological_classes_per_client() -> None:
    parts = _split("pathological", classes_per_client=2)
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    used = set(np.concatenate([np.unique(LABELS[p]) for p in parts]).tolist())
    assert used == set(range(5))
    with pytest.raises(ConfigError, match="exceeds the 5 classes"):
        _split("pathological", classes_per_client=6)


def test_quantity_skew_sizes() -> None:
    parts = _split("quantity", alpha=0.3, min_partition_size=20)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 20 and sizes.sum() == len(LABELS)
    assert sizes.max() > 3 * sizes.min()


def test_too_many_clients() -> None:
    with pytest.raises(ConfigError, match="only 5000 rows"):
        _split("iid", k=6_000)


def test_client_splits_and_standardisation_use_training_rows_only() -> None:
    fed = build_federated(DataConfig(num_samples=1_000), PartitionConfig(num_clients=5), seed=0)
    x_train = np.concatenate([c.x_train for c in fed.clients])
    assert np.allclose(x_train.mean(0), 0, atol=1e-5) and np.allclose(x_train.std(0), 1, atol=1e-4)
    x_test = np.concatenate([c.x_test for c in fed.clients])
    assert not np.allclose(x_test.mean(0), 0, atol=1e-3)  # test rows were not used to fit
    assert sum(len(c.y_train) + len(c.y_test) for c in fed.clients) == 1_000
    assert fed.counts().sum() == len(x_train)


def test_label_noise_flips_exactly_the_fraction_to_other_classes() -> None:
    y = np.repeat(np.arange(4), 250)
    noisy = flip_labels(y, 0.3, 4, seed=0, client=1)
    assert (noisy != y).sum() == 300
    assert noisy.min() >= 0 and noisy.max() <= 3


def test_seed_streams_are_distinct_and_keep_their_numbers() -> None:
    # The ids are part of every run's identity: renumbering one changes results.
    from fedsim.seeds import Stream

    assert len({int(s) for s in Stream}) == len(Stream)
    assert [int(s) for s in Stream] == [1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    draws = np.random.default_rng([7, Stream.TRAIN, 2]).random(4)
    np.testing.assert_array_equal(draws, np.random.default_rng([7, 5, 2]).random(4))
