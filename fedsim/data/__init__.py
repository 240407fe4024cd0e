"""Datasets, partitioners and per-client splits."""

from fedsim.data.datasets import REGISTRY, RawDataset, load_dataset
from fedsim.data.federated import ClientSplit, FederatedData, build_federated
from fedsim.data.partition import METHODS, partition

__all__ = [
    "METHODS",
    "REGISTRY",
    "ClientSplit",
    "FederatedData",
    "RawDataset",
    "build_federated",
    "load_dataset",
    "partition",
]
