"""Time forward+backward of comp-sum losses against torch's fused cross-entropy.

Run ``python bench/losses.py [--threads N] [--reps R]``. One float32 batch of 512 x 100
logits; each timing is the median over ``reps`` forward+backward passes after a
warm-up. ``torch.set_num_threads`` is fixed (default 1) so the ratio does not depend on
how many cores the machine happens to have free; the ratios measured in one run are
printed, never asserted (see ``tests/`` for correctness).

At tau = 1 :func:`fedsim.clients.losses.comp_sum_loss` calls ``F.cross_entropy`` directly (the
two are the same function), so its ratio is the cost of argument checking only; the
target is <= 1.3x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fedsim.clients.losses import comp_sum_loss, loss_by_name

TARGET_RATIO = 1.3


def median_seconds(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    target: torch.Tensor,
    reps: int,
    warmup: int,
) -> float:
    """Median wall time of ``loss_fn(logits, target).backward()`` over ``reps`` runs."""
    times = []
    for i in range(warmup + reps):
        logits.grad = None
        start = time.perf_counter()
        loss_fn(logits, target).backward()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    logits = (3.0 * torch.randn(512, 100, generator=g)).requires_grad_(True)
    target = torch.randint(0, 100, (512,), generator=g)

    cases: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "F.cross_entropy": F.cross_entropy,
        "comp_sum tau=1": lambda z, y: comp_sum_loss(z, y, 1.0),
        "comp_sum tau=0.5": lambda z, y: comp_sum_loss(z, y, 0.5),
        "gce q=0.7 (tau=1.7)": loss_by_name("gce", q=0.7),
    }
    # Interleave the cases over rounds so drifting machine load hits all of them alike.
    rounds = 5
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            reps = max(1, args.reps // rounds)
            samples[name].append(median_seconds(fn, logits, target, reps, args.warmup))
    medians = {name: statistics.median(values) for name, values in samples.items()}

    base = medians["F.cross_entropy"]
    print(f"512x100 float32, forward+backward, torch {torch.__version__}, threads={args.threads}")
    print(f"median over {args.reps} reps (5 interleaved rounds, {args.warmup} warm-up each)")
    for name, seconds in medians.items():
        print(f"  {name:<22} {seconds * 1e6:9.1f} us   {seconds / base:5.2f}x cross_entropy")
    ratio = medians["comp_sum tau=1"] / base
    verdict = "within" if ratio <= TARGET_RATIO else "ABOVE"
    print(f"tau=1 ratio {ratio:.2f}x: {verdict} the {TARGET_RATIO}x target")


if __name__ == "__main__":
    main()
