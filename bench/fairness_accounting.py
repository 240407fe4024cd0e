"""Share of round time spent on fairness accounting in the default scenario.

Run ``python bench/fairness_accounting.py [--scenario scenarios/default.toml]
[--repeats 3] [--rounds N] [--clients K]``. ``--clients K`` scales the federation to K
clients with the same data per client (40 rows each, IID split), e.g. 1000 clients for
the PID's large-K path. The scenario runs in fedsim's local engine with
``fairness.enabled = false`` and ``= true`` (same seed, so the same training), the
two interleaved ``--repeats`` times after one warm-up run each. The table prints

- the round-loop time per round with accounting off and on, and their difference,
  in wall-clock and in this process's CPU time (less disturbed by other load);
- the time spent inside :class:`fedsim.strategies.fairness_accounting.FairnessAccounting`
  itself per round (its ``seconds``: reading the replies, the maths of
  :mod:`fedsim.fairness.accounting` (pooling, disparities, PID, group metrics) and the
  per-client rows; the inner strategy's aggregation excluded) and its share of the
  round time with accounting on (target <= 5 %);
- the same for the warm-up run, whose first PID solve also builds and compiles the
  cone program (cached per support pattern for the rest of the process).

Times are medians over the repeats.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from dataclasses import dataclass
from typing import Any

from fedsim.engine.core import RunRecorder, build_stack
from fedsim.engine.local import run_local
from fedsim.runner import resolve
from fedsim.strategies.fairness_accounting import FairnessAccounting

TARGET_SHARE = 0.05
ROWS_PER_CLIENT = 40  # with --clients: same data per client at every size


@dataclass(frozen=True)
class Timing:
    loop_s: float  # round loop, whole run (wall clock)
    cpu_s: float  # CPU time of this process over the same run
    accounting_s: float  # inside FairnessAccounting (0 when off), wall clock
    rounds: int


def run_once(scenario: str, enabled: bool, rounds: int | None, clients: int = 0) -> Timing:
    """One run of the scenario in the local engine; the wrapper's own clock read back."""
    from fedsim.runtime import get_runtime

    overrides: dict[str, Any] = {"fairness.enabled": enabled}
    if rounds:
        overrides["rounds"] = rounds
    if clients:
        overrides["partition.num_clients"] = clients
        overrides["partition.method"] = "iid"
        overrides["data.num_samples"] = ROWS_PER_CLIENT * clients
    sc = resolve(scenario, overrides)
    run_config = {"scenario": sc.to_toml(), "data-dir": ""}
    recorder = RunRecorder()
    stack = build_stack(sc, get_runtime(run_config).data, recorder)
    cpu = time.process_time()
    execution = run_local(sc, run_config, recorder=recorder, stack=stack)
    cpu = time.process_time() - cpu
    core = stack[0].inner
    accounting = core.seconds if isinstance(core, FairnessAccounting) else 0.0
    if enabled and not isinstance(core, FairnessAccounting):
        raise RuntimeError("fairness.enabled = true did not build a FairnessAccounting stack")
    return Timing(execution.wall_time, cpu, accounting, sc.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="scenarios/default.toml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=0, help="0: the scenario's rounds")
    parser.add_argument("--clients", type=int, default=0, help="0: the scenario's clients")
    args = parser.parse_args()
    run = functools.partial(run_once, rounds=args.rounds, clients=args.clients)

    cold_off = run(args.scenario, False)
    cold_on = run(args.scenario, True)
    off: list[Timing] = []
    on: list[Timing] = []
    for _ in range(args.repeats):
        off.append(run(args.scenario, False))
        on.append(run(args.scenario, True))
    rounds = on[0].rounds

    def per_round_ms(values: list[float]) -> float:
        return 1e3 * statistics.median(values) / rounds

    loop_off = per_round_ms([t.loop_s for t in off])
    loop_on = per_round_ms([t.loop_s for t in on])
    cpu_off = per_round_ms([t.cpu_s for t in off])
    cpu_on = per_round_ms([t.cpu_s for t in on])
    inside = per_round_ms([t.accounting_s for t in on])
    cold_inside = 1e3 * cold_on.accounting_s / rounds
    cold_loop = 1e3 * cold_on.loop_s / rounds

    size = f", {args.clients} clients" if args.clients else ""
    print(f"{args.scenario}{size}: {rounds} rounds, median of {args.repeats} interleaved runs")
    print(f"{'':38s} {'ms/round':>10s} {'share':>8s}")
    print(f"{'round loop, accounting off':38s} {loop_off:10.2f}")
    print(f"{'round loop, accounting on':38s} {loop_on:10.2f}")
    diff = loop_on - loop_off
    print(f"{'difference on - off':38s} {diff:10.2f} {diff / loop_on:8.1%}")
    print(f"{'CPU time, accounting off':38s} {cpu_off:10.2f}")
    print(f"{'CPU time, accounting on':38s} {cpu_on:10.2f}")
    diff = cpu_on - cpu_off
    print(f"{'CPU difference on - off':38s} {diff:10.2f} {diff / cpu_on:8.1%}")
    share = inside / loop_on
    print(f"{'inside FairnessAccounting (warm)':38s} {inside:10.2f} {share:8.1%}")
    print(
        f"{'inside FairnessAccounting (first run)':38s} {cold_inside:10.2f} "
        f"{cold_inside / cold_loop:8.1%}"
    )
    print(f"{'  (first run, accounting off: loop)':38s} {1e3 * cold_off.loop_s / rounds:10.2f}")
    verdict = "within" if share <= TARGET_SHARE else "ABOVE"
    print(f"warm accounting share {share:.1%}: {verdict} the {TARGET_SHARE:.0%} target")


if __name__ == "__main__":
    main()
