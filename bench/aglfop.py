"""Time a 10 x 10 AGLFOP frontier for 2 and 10 clients, and check tiny budgets.

Run as ``python bench/aglfop.py [--seed N] [--skip-timing]``.  Binary Z and Y, random
counts with Z correlated with Y.

* Timing targets (on 2 CPU cores): 2 clients <= 3 s, 10 clients <= 20 s; wall times
  measured in this one run are printed next to the targets.
* Tiny budgets: 220 solves with budgets in [1e-12, 1e-7] bits (4 count tables of 2, 3,
  5 and 10 clients drawn with ``--tiny-seed``, x 11 budgets x 5 budget pairs).  Prints
  how many come back ``optimal_inaccurate``, the worst shortfall below the budget-0
  optimum of the same problem and the worst overshoot of a budget (bits), for the
  solver's own answer ("before") and for the guarded answer that
  :func:`fedsim.fairness.aglfop.solve` returns ("after").  Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from fedsim.fairness.aglfop import frontier
from fedsim.fairness.aglfop_feasible import accuracy, excess_bits
from fedsim.fairness.aglfop_program import AGLFOPModel

TARGETS_S = {2: 3.0, 10: 20.0}
GRID = np.r_[0.0, np.geomspace(1e-3, 0.3, 9)]  # bits; 10 values incl. the exact-zero LP
TINY_CLIENTS = (2, 3, 5, 10)
TINY_BUDGETS = np.geomspace(1e-12, 1e-7, 11)  # bits


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


def tiny_budget_pairs(eps: float) -> list[tuple[float, float]]:
    """Both budgets tiny, one tiny and one free, one tiny and the other 1e-7 bits."""
    top = float(TINY_BUDGETS[-1])
    return [(eps, eps), (eps, np.inf), (np.inf, eps), (eps, top), (top, eps)]


def tilted_counts(rng: np.random.Generator, num_clients: int) -> np.ndarray:
    """Counts [s, z, y] in 5..60 with the z = y cells tripled (as in the unit tests)."""
    counts = rng.integers(5, 60, size=(num_clients, 2, 2)).astype(float)
    counts[:, 0, 0] *= 3.0
    counts[:, 1, 1] *= 3.0
    return counts


def tiny_budgets(rng: np.random.Generator) -> None:
    """Count, shortfall and overshoot of the solver's answers before and after the guard."""
    stats = {"before": [0, 0.0, 0.0], "after": [0, 0.0, 0.0]}  # inaccurate, short, over
    guards: dict[str, int] = {}
    solves = 0
    start = time.perf_counter()
    for num_clients in TINY_CLIENTS:
        counts = tilted_counts(rng, num_clients)
        model = AGLFOPModel(counts / counts.sum(), None)
        for eps in TINY_BUDGETS:
            for eps_g, eps_l in tiny_budget_pairs(float(eps)):
                reference = model.zero_reference(eps_g, eps_l)
                assert reference.q is not None  # no ROC region: budget 0 is always feasible
                floor = accuracy(reference.q)
                answers = {
                    "before": model.solve_unguarded(eps_g, eps_l),
                    "after": model.solve_point(eps_g, eps_l),
                }
                for key, point in answers.items():
                    assert point.q is not None
                    row = stats[key]
                    row[0] += point.status == "optimal_inaccurate"
                    row[1] = max(row[1], floor - accuracy(point.q))
                    row[2] = max(row[2], excess_bits(point.q, eps_g, eps_l))
                guards[answers["after"].guard] = guards.get(answers["after"].guard, 0) + 1
                solves += 1
    elapsed = time.perf_counter() - start
    print(
        f"\nTiny budgets: {solves} solves, budgets {TINY_BUDGETS[0]:.0e}..{TINY_BUDGETS[-1]:.0e}"
        f" bits, {len(TINY_CLIENTS)} tables ({elapsed:.1f} s, each solved unguarded and guarded)"
    )
    print(f"{'':>7} {'inaccurate':>10} {'worst shortfall':>16} {'worst overshoot [bits]':>23}")
    for key, (inaccurate, short, over) in stats.items():
        print(f"{key:>7} {inaccurate:>10} {short:>16.2e} {over:>23.2e}")
    print(f"guarded answers: {guards} (eps0: the budget-0 solution; mixture: pulled inside)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny-seed", type=int, default=7, help="seed of the tiny-budget tables")
    parser.add_argument("--skip-timing", action="store_true", help="only the tiny budgets")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.skip_timing:
        tiny_budgets(np.random.default_rng(args.tiny_seed))
        return
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
    tiny_budgets(np.random.default_rng(args.tiny_seed))


if __name__ == "__main__":
    main()
