"""Shard, size-skew and natural partitioners against flwr-datasets' own partitioners."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from fedsim.data import partition
from fedsim.errors import ConfigError

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 10, size=3_000)
SENSITIVE = (RNG.random(3_000) < 0.4).astype(np.int64)


def _reference(partitioner: object, k: int, column: dict[str, np.ndarray]) -> list[list[int]]:
    partitioner.dataset = Dataset.from_dict(column)  # type: ignore[attr-defined]
    return [partitioner.load_partition(i)["label"] for i in range(k)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "cls"),
    [("linear", "LinearPartitioner"), ("square", "SquarePartitioner"),
     ("exponential", "ExponentialPartitioner")],
)  # fmt: skip
@pytest.mark.parametrize("k", [3, 7])
def test_size_partitioners_give_flwr_datasets_sizes(method: str, cls: str, k: int) -> None:
    import flwr_datasets.partitioner as fp

    ref = _reference(getattr(fp, cls)(num_partitions=k), k, {"label": LABELS})
    ours = partition(method, LABELS, SENSITIVE, k, seed=0, min_partition_size=0)
    assert [len(p) for p in ours] == [len(r) for r in ref]
    flat = np.concatenate(ours)
    assert np.array_equal(np.sort(flat), np.arange(len(LABELS)))  # a disjoint cover


def test_size_partitioner_refuses_clients_left_empty() -> None:
    # e^1 / sum(e^i, i <= 12) of 3,000 rows rounds to 0 rows for the first client.
    with pytest.raises(ConfigError, match="some clients got no rows"):
        partition("exponential", LABELS, SENSITIVE, 12, seed=0)


def test_shard_partitioner_matches_flwr_datasets_sizes_and_class_counts() -> None:
    from flwr_datasets.partitioner import ShardPartitioner

    k, per = 10, 2
    ref = _reference(
        ShardPartitioner(num_partitions=k, partition_by="label", num_shards_per_partition=per),
        k,
        {"label": LABELS},
    )
    ours = partition("shard", LABELS, SENSITIVE, k, seed=0, shards_per_client=per)
    assert [len(p) for p in ours] == [len(r) for r in ref]
    # A shard of label-sorted rows spans at most two classes, so a client holds <= 2 * per.
    ours_classes = [len(np.unique(LABELS[p])) for p in ours]
    ref_classes = [len(set(r)) for r in ref]
    assert max(ours_classes) <= 2 * per and max(ref_classes) <= 2 * per
    assert np.mean(ours_classes) < 5  # far from IID (10 classes each)
    flat = np.concatenate(ours)
    assert len(np.unique(flat)) == len(flat)
    with pytest.raises(ConfigError, match="shards_per_client"):
        partition("shard", LABELS[:10], SENSITIVE[:10], 5, seed=0, shards_per_client=3)


def test_natural_partitioner_matches_flwr_datasets_natural_id() -> None:
    from flwr_datasets.partitioner import NaturalIdPartitioner

    site = np.array([f"site-{v}" for v in RNG.integers(0, 6, size=len(LABELS))])
    ref = NaturalIdPartitioner(partition_by="site")
    ref.dataset = Dataset.from_dict({"site": site, "label": LABELS})
    ref_sizes = sorted(len(ref.load_partition(i)) for i in range(ref.num_partitions))
    ours = partition("natural", LABELS, SENSITIVE, 6, seed=0, by=site)
    assert sorted(len(p) for p in ours) == ref_sizes
    assert all(len(np.unique(site[p])) == 1 for p in ours)
