"""Time a 10 x 10 AGLFOP frontier for 2 and 10 clients, with and without PID per point.

Run as ``python bench/aglfop.py [--seed N]``.  Binary Z and Y, random counts with Z
correlated with Y.  Targets (on 2 CPU cores): 2 clients <= 3 s, 10 clients <= 20 s.
Prints wall times measured in this one run next to the targets; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from fedsim.fairness.aglfop import frontier

TARGETS_S = {2: 3.0, 10: 20.0}
GRID = np.r_[0.0, np.geomspace(1e-3, 0.3, 9)]  # bits; 10 values incl. the exact-zero LP


def random_counts(rng: np.random.Generator, num_clients: int) -> np.ndarray:
    """Counts [s, z, y] with P(y = z) boosted per client by a random tilt."""
    counts = rng.integers(20, 200, size=(num_clients, 2, 2)).astype(float)
    tilt = rng.uniform(1.5, 4.0, size=num_clients)
    counts[:, 0, 0] *= tilt
    counts[:, 1, 1] *= tilt
    return counts


def time_frontier(counts: np.ndarray, compute_pid: bool) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    with warnings.catch_warnings():  # cvxpy's "may be inaccurate" warnings inside the PID
        warnings.simplefilter("ignore", UserWarning)
        table = frontier(counts, GRID, GRID, compute_pid=compute_pid)
    elapsed = time.perf_counter() - start
    return elapsed, table.status.value_counts().to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"AGLFOP frontier, {GRID.size}x{GRID.size} grid, {os.cpu_count()} CPU cores visible")
    header = ("clients", "PID", "time [s]", "target [s]", "time/target")
    print("{:>7} {:>5} {:>9} {:>10} {:>11}  status".format(*header))
    for num_clients, target in TARGETS_S.items():
        counts = random_counts(rng, num_clients)
        for compute_pid in (False, True):
            elapsed, statuses = time_frontier(counts, compute_pid)
            print(
                f"{num_clients:>7} {'yes' if compute_pid else 'no':>5} {elapsed:>9.2f} "
                f"{target:>10.1f} {elapsed / target:>11.2f}  {statuses}"
            )


if __name__ == "__main__":
    main()
