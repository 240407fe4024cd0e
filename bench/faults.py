"""Final accuracy of the default scenario with 0%, 20% and 50% crashing clients.

Run: ``python bench/faults.py [--seeds 3]``. Each client crashes independently in
each round with the given probability; crashed replies are counted, never
aggregated. Prints a Markdown table (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

import fedsim

DEFAULT = Path(__file__).resolve().parents[1] / "scenarios" / "default.toml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print("| crash probability | final eval-acc (mean ± std) | failed replies / run |")
    print("|---|---|---|")
    for p in (0.0, 0.2, 0.5):
        accs, failed = [], []
        for seed in range(args.seeds):
            res = fedsim.run(DEFAULT, {"seed": seed, "faults.crash_prob": p})
            accs.append(res.summary["final"]["eval-acc"])
            failed.append(res.summary["failed_replies_total"])
        print(f"| {p:.0%} | {np.mean(accs):.4f} ± {np.std(accs):.4f} | {np.mean(failed):.1f} |")


if __name__ == "__main__":
    main()
