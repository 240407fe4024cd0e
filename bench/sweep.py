"""Sweep wall time: the same grid sequentially and with --jobs 2 (and 4), side by side.

    python bench/sweep.py [--cells 8] [--rounds 5]

Every run is the default scenario (synthetic data, 10 clients) with a different seed;
rows of the parallel sweeps are checked equal to the sequential ones.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from fedsim.study import METRIC_COLUMNS, run_grid

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    overrides = {"rounds": args.rounds, "fairness.enabled": False}
    grid = {"client.lr": [0.1]}
    seeds = list(range(args.cells))
    results = [c for c in METRIC_COLUMNS if c != "wall-time-s"]
    base = None
    print(f"{args.cells} runs of {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"{'jobs':>5} {'wall (s)':>9} {'speed-up':>9} {'rows equal':>11}")
    for jobs in args.jobs:
        t0 = time.perf_counter()
        frame = run_grid(
            REPO / "scenarios" / "default.toml", grid, seeds, overrides=overrides, jobs=jobs
        )
        wall = time.perf_counter() - t0
        if base is None:
            base = (wall, frame[results])
        equal = frame[results].equals(base[1])
        print(f"{jobs:>5} {wall:>9.2f} {base[0] / wall:>8.2f}x {str(equal):>11}")


if __name__ == "__main__":
    main()
