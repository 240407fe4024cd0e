"""What ``torch.optim`` costs each process, next to fedsim's own SGD and Adam.

Run ``python bench/optim_import.py [--reps R]``. Every measurement is a fresh Python
process that imports ``torch`` first (untimed: both sides pay it), then times, with
``time.perf_counter``, importing the optimiser, building it on a small MLP's
parameters and taking one step: ``torch.optim.SGD`` / ``torch.optim.Adam`` against
:mod:`fedsim.clients.optim`'s ``SGD`` / ``Adam``. Whether ``torch._dynamo`` ended up
imported is reported too. Each figure is the median of ``reps`` processes; the ratio
is measured in this run and printed, never asserted.

This is the cost every Ray actor and every Flower ClientApp process pays once, and
the reason fedsim keeps its own SGD and Adam: ``client.optimizer = "torch.optim:X"``
remains available, at this price per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
    x, y = torch.randn(32, 20), torch.randint(0, 2, (32,))
    t0 = time.perf_counter()
    {import_line}
    opt = Optimizer(list(model.parameters()), lr=0.05)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    seconds = time.perf_counter() - t0
    print(json.dumps({{"seconds": seconds, "dynamo": "torch._dynamo" in sys.modules}}))
    """
)

VARIANTS = {
    ("SGD", "torch.optim"): "from torch.optim import SGD as Optimizer",
    ("SGD", "fedsim"): "from fedsim.clients.optim import SGD as Optimizer",
    ("Adam", "torch.optim"): "from torch.optim import Adam as Optimizer",
    ("Adam", "fedsim"): "from fedsim.clients.optim import Adam as Optimizer",
}


def measure(import_line: str) -> dict[str, float | bool]:
    """One fresh process: import, build and step the optimiser; seconds and dynamo."""
    entries = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(entries)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(import_line=import_line)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=300,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="fresh processes per variant")
    args = parser.parse_args()
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in VARIANTS}
    dynamo: dict[tuple[str, str], bool] = {}
    for _ in range(args.reps):  # interleaved, so load drifts hit every variant alike
        for key, line in VARIANTS.items():
            out = measure(line)
            seconds[key].append(float(out["seconds"]))
            dynamo[key] = bool(out["dynamo"])
    median = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"import + build + one step, per fresh process (median of {args.reps}):")
    print(f"{'optimiser':<10}{'torch.optim':>16}{'fedsim':>12}{'ratio':>9}")
    for name in ("SGD", "Adam"):
        t, f = median[(name, "torch.optim")], median[(name, "fedsim")]
        print(f"{name:<10}{t * 1000:>13.0f} ms{f * 1000:>9.0f} ms{t / f:>8.0f}x")
    loaded = ", ".join(f"{o}.{n}" for (n, o), d in dynamo.items() if d) or "none"
    print(f"torch._dynamo imported by: {loaded}")


if __name__ == "__main__":
    main()
