"""Time one round of local training: plain PyTorch loop vs fedsim's ``train`` vs vmap.

Run ``python bench/vectorize.py [--threads N] [--reps R] [--skip-cnn]``. Every client
starts from the same global weights and trains 1 epoch of SGD (batch 32) on its own
rows; the three paths compute the same updates:

* ``plain``: a textbook loop, one client after another, ``torch.optim.SGD`` and
  ``F.cross_entropy``;
* ``fedsim``: :func:`fedsim.clients.training.train` per client (what the engine runs);
* ``vmap``: :func:`fedsim.clients.vectorized.train_cohort`, the whole cohort at once.

Workloads: the MLP 20→64→2 with 32 rows per client at 10, 100 and 1000 clients, and the
CNN on Fashion-MNIST (``$FEDSIM_DATA_DIR/fashion_mnist``) with 100 clients of 32 rows.
Each time is the median of ``reps`` rounds after one warm-up round; the ratios are
measured in one run and printed, never asserted. Target: at 1000 clients the vmap
round is >= 3x faster than the plain loop on CPU.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.clients.models import build_model
from fedsim.clients.training import client_generator, train
from fedsim.clients.vectorized import train_cohort
from fedsim.config import ClientConfig

TARGET_RATIO = 3.0
Cohort = list[tuple[torch.Tensor, torch.Tensor]]


def plain_round(model: nn.Module, cohort: Cohort, cfg: ClientConfig) -> None:
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for pid, (x, y) in enumerate(cohort):
        model.load_state_dict(start)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        generator = client_generator(0, 5, 1, pid)
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.load_state_dict(start)


def fedsim_round(model: nn.Module, cohort: Cohort, cfg: ClientConfig) -> None:
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for pid, (x, y) in enumerate(cohort):
        model.load_state_dict(start)
        train(model, x, y, cfg, client_generator(0, 5, 1, pid))
    model.load_state_dict(start)


def vmap_round(model: nn.Module, cohort: Cohort, cfg: ClientConfig) -> None:
    generators = [client_generator(0, 5, 1, pid) for pid in range(len(cohort))]
    result = train_cohort(model, cohort, cfg, generators)
    if not result.vectorized:
        raise RuntimeError(f"the cohort was not vectorised: {result.reason}")


def median_seconds(fn: Callable[[], None], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mlp_workload(num_clients: int, rows: int) -> tuple[nn.Module, Cohort]:
    g = torch.Generator().manual_seed(num_clients)
    cohort = []
    for _ in range(num_clients):
        x = torch.randn(rows, 20, generator=g)
        cohort.append((x, (x[:, 0] > 0).long()))
    return build_model("mlp", (20,), 2, (64,), seed=0), cohort


def cnn_workload(num_clients: int, rows: int) -> tuple[nn.Module, Cohort]:
    from fedsim.data.datasets import load_dataset

    raw = load_dataset("fashion-mnist")
    x = torch.as_tensor(raw.x[: num_clients * rows])
    y = torch.as_tensor(raw.y[: num_clients * rows]).long()
    cohort = [
        (x[i * rows : (i + 1) * rows], y[i * rows : (i + 1) * rows]) for i in range(num_clients)
    ]
    return build_model("cnn", tuple(raw.input_shape), raw.num_classes, seed=0), cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds per path")
    parser.add_argument("--rows", type=int, default=32, help="training rows per client")
    parser.add_argument("--skip-cnn", action="store_true", help="MLP workloads only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ClientConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.05)
    workloads = [(f"mlp x{k}", lambda k=k: mlp_workload(k, args.rows)) for k in (10, 100, 1000)]
    if not args.skip_cnn:
        workloads.append(("cnn fmnist x100", lambda: cnn_workload(100, args.rows)))
    print(f"threads={args.threads} reps={args.reps} rows/client={args.rows} (s per round)")
    header = ("workload", "plain", "fedsim", "vmap", "plain/vmap", "fedsim/vmap")
    print("{:<16} {:>9} {:>9} {:>9} {:>11} {:>12}".format(*header))
    rounds = (plain_round, fedsim_round, vmap_round)
    for name, make in workloads:
        model, cohort = make()
        plain, ours, vec = (
            median_seconds(functools.partial(fn, model, cohort, cfg), args.reps) for fn in rounds
        )
        ratios = f"{plain / vec:10.1f}x {ours / vec:11.1f}x"
        print(f"{name:<16} {plain:9.4f} {ours:9.4f} {vec:9.4f} {ratios}")
    print(f"target: plain/vmap >= {TARGET_RATIO:.0f}x at mlp x1000")


if __name__ == "__main__":
    main()
