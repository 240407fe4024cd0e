"""Time one PID decomposition (fairness.pid.decompose) for binary Z and Ŷ.

Prints, for K = 2, 10 and 100 clients, the first-call (cold: build and compile
the cone program, then solve) and the median warm time (program reused from the
per-shape cache), next to the targets. Tables are random with Z and S dependent
and Ŷ dependent on Z within clients, so no closed-form shortcut applies.

Then, for K = 2 / 10 / 100 / 1000 / 3000, one cold ``decompose`` per path in a
fresh process: CPU time (less disturbed by other load than wall time) and peak
resident memory (``ru_maxrss``, which includes about 0.2 GB of imports) of the
cone program (Clarabel) and of the block barrier method, and their difference in
bits with the barrier's certified gap. The cone path is skipped from
``--cone-max`` clients on (default 1000: it needs about 3.8 GB at K = 3000).

Run as ``python bench/pid.py [--cone-max K]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

import fedsim.fairness.pid as pid

TARGET_MS = {2: None, 10: 25.0, 100: 200.0}
WARM_REPEATS = 30
LARGE_K = (2, 10, 100, 1000, 3000)
_ONE_SOLVE = """
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {bench_dir!r})
from pid import random_table
from fedsim.fairness.pid import decompose
table = random_table({num_clients}, np.random.default_rng(1))
start = time.process_time()
result = decompose(table, solver={solver!r})
seconds = time.process_time() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps([seconds, peak, result.unique, result.gap]))
"""


def random_table(num_clients: int, rng: np.random.Generator) -> np.ndarray:
    """P(z, yhat, s) with client sizes, group mixes and per-client bias all random."""
    p_s = rng.dirichlet(np.ones(num_clients))
    p_z1_s = rng.beta(2.0, 2.0, size=num_clients)
    p_z_s = np.stack([1 - p_z1_s, p_z1_s])
    bias = np.array([[-1.0], [1.0]]) * rng.uniform(0.2, 1.5, size=(1, num_clients))
    p_y1 = 1 / (1 + np.exp(-(rng.normal(0.0, 1.0, size=(1, num_clients)) + bias)))
    p_y_zs = np.stack([1 - p_y1, p_y1], axis=1)
    return p_z_s[:, None, :] * p_y_zs * p_s


def time_ms(table: np.ndarray) -> float:
    start = time.perf_counter()
    result = pid.decompose(table)
    elapsed = 1e3 * (time.perf_counter() - start)
    if result.solver == pid.CLOSED_FORM:
        raise RuntimeError("a closed-form shortcut fired; the benchmark table is not generic")
    return elapsed


def one_solve(num_clients: int, solver: str) -> tuple[float, float, float, float | None]:
    """(CPU seconds, peak GiB, Uni bits, gap bits) of one cold decompose in a fresh process."""
    from pathlib import Path

    code = _ONE_SOLVE.format(
        bench_dir=str(Path(__file__).parent), num_clients=num_clients, solver=solver
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, peak, unique, gap = json.loads(out.stdout.splitlines()[-1])
    return seconds, peak, unique, gap


def large_k(cone_max: int) -> None:
    print(
        f"\n{'K':>5} {'cone cpu s':>10} {'cone GiB':>9} {'barrier cpu s':>13} {'barrier GiB':>12} "
        f"{'|diff| bits':>12} {'gap bits':>9}"
    )
    for num_clients in LARGE_K:
        b_s, b_gib, b_uni, gap = one_solve(num_clients, pid.BLOCK_BARRIER)
        if num_clients < cone_max:
            c_s, c_gib, c_uni, _ = one_solve(num_clients, "CLARABEL")
            cone = f"{c_s:>10.2f} {c_gib:>9.2f}"
            diff = f"{abs(c_uni - b_uni):>12.1e}"
        else:
            cone, diff = f"{'-':>10} {'-':>9}", f"{'-':>12}"
        print(f"{num_clients:>5} {cone} {b_s:>13.2f} {b_gib:>12.2f} {diff} {gap:>9.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cone-max", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pid.decompose(random_table(3, rng))  # import-time and first-solve overheads
    print(f"{'K':>4} {'cold ms':>9} {'warm median ms':>15} {'target ms':>10} {'cold/warm':>10}")
    for num_clients, target in TARGET_MS.items():
        pid._program.cache_clear()  # so the first call compiles, as for a new shape
        cold = time_ms(random_table(num_clients, rng))
        warm = statistics.median(
            time_ms(random_table(num_clients, rng)) for _ in range(WARM_REPEATS)
        )
        target_text = f"<= {target:g}" if target else "-"
        verdict = "" if target is None else ("  ok" if warm <= target else "  MISSED")
        print(
            f"{num_clients:>4} {cold:>9.1f} {warm:>15.1f} {target_text:>10} "
            f"{cold / warm:>10.1f}{verdict}"
        )
    large_k(args.cone_max)


if __name__ == "__main__":
    main()
