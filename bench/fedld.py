"""Aggregation cost of FedLD relative to FedAvg on a ResNet-18-sized model.

Run ``python bench/fedld.py [--clients 10] [--repeats 5]``. Both aggregators see the
same inputs in one run and the table prints FedLD / FedAvg ratios:

- ``dicts``: numpy dicts in memory; FedAvg is the weighted mean in Flower's
  arithmetic, FedLD is :func:`fedsim.strategies.principal.aggregate_principal`.
- ``records``: Flower ``Message`` replies; FedAvg is ``FedAvg.aggregate_train``,
  FedLD is ``FedLD.aggregate_train`` (reply screening and ``ArrayRecord``
  (de)serialisation included), both past warm-up.

Time is the best of ``--repeats`` interleaved runs; memory is the tracemalloc peak
above the allocations alive before the call (numpy reports its buffers to
tracemalloc), output included.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from numpy.typing import NDArray

from fedsim.engine._flower_compat import task_identity
from fedsim.strategies.fedld import FedLD
from fedsim.strategies.principal import aggregate_principal


def resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """State-dict shapes of torchvision's ResNet-18 (11,689,512 parameters + BN buffers)."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    batch_norm("bn1", 64)
    in_channels = 64
    for layer, channels in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            stride_in = in_channels if block == 0 else channels
            shapes[f"{prefix}.conv1.weight"] = (channels, stride_in, 3, 3)
            batch_norm(f"{prefix}.bn1", channels)
            shapes[f"{prefix}.conv2.weight"] = (channels, channels, 3, 3)
            batch_norm(f"{prefix}.bn2", channels)
            if block == 0 and stride_in != channels:
                shapes[f"{prefix}.downsample.0.weight"] = (channels, stride_in, 1, 1)
                batch_norm(f"{prefix}.downsample.1", channels)
        in_channels = channels
    shapes["fc.weight"] = (1000, 512)
    shapes["fc.bias"] = (1000,)
    return shapes


def make_models(
    num_clients: int, rng: np.random.Generator
) -> tuple[dict[str, NDArray[Any]], list[dict[str, NDArray[Any]]]]:
    """Global float32 model and clients = global + small heterogeneous deltas."""
    current: dict[str, NDArray[Any]] = {}
    for key, shape in resnet18_shapes().items():
        if key.endswith("num_batches_tracked"):
            current[key] = np.array(100, dtype=np.int64)
        else:
            current[key] = rng.standard_normal(shape, dtype=np.float32)
    clients = []
    for m in range(num_clients):
        client = {}
        for key, value in current.items():
            if value.dtype == np.int64:
                client[key] = np.asarray(value + 10)
            else:
                noise = rng.standard_normal(value.shape, dtype=np.float32)
                client[key] = value + np.float32(1e-3 * (1 + m)) * noise
        clients.append(client)
    return current, clients


def fedavg_dicts(clients: list[dict[str, NDArray[Any]]], weights: list[float]) -> dict[str, Any]:
    """Flower's aggregate_arrayrecords arithmetic on numpy dicts."""
    total = sum(weights)
    out: dict[str, Any] = {}
    for client, weight in zip(clients, weights, strict=True):
        for key, value in client.items():
            if key not in out:
                out[key] = value * (weight / total)
            else:
                out[key] += value * (weight / total)
    return out


class _Nodes:
    """Just enough of a Grid for ``configure_train`` to sample nodes."""

    def __init__(self, num_nodes: int) -> None:
        self.node_ids = list(range(1, num_nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.node_ids


def make_replies(
    strategy: FedAvg, server_round: int, current: dict[str, Any], clients: list[dict[str, Any]]
) -> list[Message]:
    """Run ``configure_train`` and answer each instruction with one client's arrays."""
    grid = _Nodes(len(clients))
    record = ArrayRecord({k: Array(v) for k, v in current.items()})
    instructions = strategy.configure_train(server_round, record, ConfigRecord(), grid)  # type: ignore[arg-type]
    replies = []
    for msg, client in zip(instructions, clients, strict=True):
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in client.items()}),
                "metrics": MetricRecord({"num-examples": 100 + msg.metadata.dst_node_id}),
            }
        )
        replies.append(Message(content, reply_to=msg))
    return replies


def _peak_mib(fn: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - base) / 2**20


def compare(
    fedavg: Callable[[], Any], fedld: Callable[[], Any], repeats: int
) -> tuple[float, float, float, float]:
    """Best wall times over interleaved runs (so both see the same machine load) and
    tracemalloc peaks (MiB) of one further run each."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for index, fn in enumerate((fedavg, fedld)):
            gc.collect()
            start = time.perf_counter()
            fn()
            best[index] = min(best[index], time.perf_counter() - start)
    return best[0], best[1], _peak_mib(fedavg), _peak_mib(fedld)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep-ratio", type=float, default=0.8)
    args = parser.parse_args()

    logging.getLogger("flwr").setLevel(logging.WARNING)  # per-call INFO lines
    with task_identity(run_id=1, node_id=0, task_id=1):  # messages need one
        rng = np.random.default_rng(0)
        current, clients = make_models(args.clients, rng)
        num_params = sum(v.size for k, v in current.items() if v.dtype == np.float32)
        weights = [1.0] * args.clients

        rows = []
        dicts = compare(
            lambda: fedavg_dicts(clients, weights),
            lambda: aggregate_principal(current, clients, keep_ratio=args.keep_ratio),
            args.repeats,
        )
        rows.append(("dicts", *dicts))

        avg_strategy = FedAvg(min_available_nodes=args.clients, min_train_nodes=args.clients)
        ld_strategy = FedLD(
            keep_ratio=args.keep_ratio,
            min_available_nodes=args.clients,
            min_train_nodes=args.clients,
        )
        avg_replies = make_replies(avg_strategy, 2, current, clients)
        ld_replies = make_replies(ld_strategy, 2, current, clients)
        records = compare(
            lambda: avg_strategy.aggregate_train(2, avg_replies),
            lambda: ld_strategy.aggregate_train(2, ld_replies),
            args.repeats,
        )
        rows.append(("records", *records))

        print(
            f"M = {args.clients} clients, d = {num_params:,} float32 values "
            f"(weights + BN stats) in "
            f"{len(current)} tensors, keep_ratio = {args.keep_ratio}"
        )
        header = f"{'level':8s} {'FedAvg s':>9s} {'FedLD s':>9s} {'time x':>7s}"
        header += f" {'FedAvg MiB':>11s} {'FedLD MiB':>10s} {'mem x':>6s}"
        print(header)
        for name, t_avg, t_ld, m_avg, m_ld in rows:
            print(
                f"{name:8s} {t_avg:9.3f} {t_ld:9.3f} {t_ld / t_avg:7.2f}"
                f" {m_avg:11.1f} {m_ld:10.1f} {m_ld / m_avg:6.2f}"
            )


if __name__ == "__main__":
    main()
