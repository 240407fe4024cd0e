"""Per-client overhead at scale: plain loop, local and Ray engines, with and without vmap.

Run: ``python bench/scale.py`` (10, 100 and 1000 clients) or ``--clients 5000``
(any comma-separated list). Every mode runs in a fresh process (see ``bench/engines.py``,
whose measurement it reuses) on the same work: MLP 20→64→2 on synthetic data, ~32
training and 8 test rows per client, 1 local epoch of SGD (batch 32), FedAvg, full
participation, fairness accounting off.

Modes:

* ``plain``: FedAvg written directly in PyTorch (no Flower), one client after another;
* ``local`` / ``local+vec``: the local engine, per client / one vectorised cohort;
* ``ray`` / ``ray+vec``: the Ray engine with one actor per CPU, per client / each
  actor's clients as one cohort.

Per mode and size it prints wall time, steady round (median round after the first,
timed where the round loop runs), peak resident memory summed over the child's process
tree (psutil; Ray's GCS, raylet and workers descend from it), the ratios to the plain
loop, and the sum of |final weights| (same work, same result: equal up to float rounding across
vectorised and per-client modes). Ratios are measured in one run, never asserted;
the machine's load average is printed, since it moves every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/engines.py

from engines import DEFAULT, child_plain, measure  # noqa: E402

MODES = ("plain", "local", "local+vec", "ray", "ray+vec")
ROWS_PER_CLIENT = 40  # 32 training + 8 test rows (test_fraction 0.2)
TARGET = 1.2  # steady round / plain loop, local engine, 100 and 1000 clients


def workload(num_clients: int, rounds: int) -> dict:
    """Scenario overrides of one size (same per-client data at every size)."""
    return {
        "rounds": rounds,
        "partition.num_clients": num_clients,
        "partition.method": "iid",
        "data.num_samples": ROWS_PER_CLIENT * num_clients,
        "fairness.enabled": False,
    }


def child_engine(mode: str, overrides: dict) -> dict:
    import numpy as np

    import fedsim

    engine, _, vec = mode.partition("+")
    res = fedsim.run(DEFAULT, {**overrides, "vectorize": vec == "vec"}, engine=engine)
    return {
        "durations": res.summary["round_times_s"],
        "checksum": float(sum(np.abs(w).sum() for w in res.arrays.values())),
    }


def print_table(num_clients: int, rows: list[dict]) -> None:
    plain = next(r for r in rows if r["mode"] == "plain")
    print(f"\n#### {num_clients} clients\n")
    print(
        "| mode | wall (s) | steady round (s) | peak memory, all processes (MiB) "
        "| steady / plain | wall / plain | memory / plain | sum of abs(weights) |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def ratio(r: dict, key: str) -> str:
        return f"{r[key] / plain[key]:.2f}×" if r[key] and plain[key] else "–"

    for r in rows:
        steady = f"{r['steady']:.3f}" if r["steady"] else "–"
        print(
            f"| {r['mode']} | {r['wall']:.2f} | {steady} | {r['peak_mb']:.0f} | "
            f"{ratio(r, 'steady')} | {ratio(r, 'wall')} | {ratio(r, 'peak_mb')} | "
            f"{r['checksum']:.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="10,100,1000", help="comma-separated sizes")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run (>= 2)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child")
    parser.add_argument("--overrides")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.child:
        overrides = json.loads(args.overrides)
        if args.child == "plain":
            data = child_plain(overrides)
        else:
            data = child_engine(args.child, overrides)
        Path(args.json).write_text(json.dumps(data))
        return
    modes = [m for m in args.modes.split(",") if m]
    if "plain" not in modes:
        modes.insert(0, "plain")
    unknown = sorted(set(modes) - set(MODES))
    if unknown or args.rounds < 2:
        parser.error(f"--modes from {','.join(MODES)} and --rounds >= 2 (got {unknown})")
    sizes = [int(n) for n in args.clients.split(",") if n]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"fedsim scale benchmark: {os.cpu_count()} CPUs, load average {load:.1f} at start, "
        f"{args.rounds} rounds per run"
    )
    for n in sizes:
        rows = []
        for mode in modes:
            # Ray's processes all descend from the driver: other users' are not counted.
            m = measure(mode, workload(n, args.rounds), script=__file__, orphans=False)
            m["mode"] = mode
            rows.append(m)
            print(f"  {n} clients, {mode}: wall {m['wall']:.1f}s", file=sys.stderr, flush=True)
        print_table(n, rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.1f} at the end; target: local steady / plain <= {TARGET}×")


if __name__ == "__main__":
    main()
