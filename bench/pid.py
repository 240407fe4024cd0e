"""Time one PID decomposition (fairness.pid.decompose) for binary Z and Ŷ.

Prints, for K = 2, 10 and 100 clients, the first-call (cold: build and compile
the cone program, then solve) and the median warm time (program reused from the
per-shape cache), next to the targets. Tables are random with Z and S dependent
and Ŷ dependent on Z within clients, so no closed-form shortcut applies.

Run as ``python bench/pid.py``.
"""

from __future__ import annotations

import statistics
import time

import fedsim.fairness.pid as pid
import numpy as np

TARGET_MS = {2: None, 10: 25.0, 100: 200.0}
WARM_REPEATS = 30


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


def main() -> None:
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


if __name__ == "__main__":
    main()
