"""Engines side by side: plain PyTorch loop, local engine, Ray engine, Flower's engine.

Run: ``python bench/engines.py`` (both workloads) or ``--workload 10x10``.

Every mode runs in a fresh Python process doing the same work — same data, same
model initialisation, same per-client training (``clients.training.train``) and
evaluation, FedAvg — so import and start-up costs count as a user would pay them.
The parent samples the resident memory of the child and all its descendants (Ray's
raylet and workers, Flower's SuperLink and SuperExec...) every 50 ms and reports the
peak of the sum.

Per mode it prints: wall time, steady-state time per round, fixed start-up cost
(wall − rounds × steady round), peak memory summed over processes, and the ratios to
the plain loop. Steady-state round time is the median round after the first, timed
where the round loop runs (for Flower's engine: inside its ServerApp, reported in
``summary.json``'s ``round_times_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fedsim.seeds import Stream

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "scenarios" / "default.toml"
WORKLOADS = {
    # 10 clients x 10 rounds: MLP 20->64->2 on synthetic data, 1 local epoch.
    "10x10": {"rounds": 10, "partition.num_clients": 10, "data.num_samples": 4000},
    # 100 clients x 3 rounds, same per-client data size (~32 train rows each).
    "100x3": {
        "rounds": 3,
        "partition.num_clients": 100,
        "data.num_samples": 4000,
        "partition.method": "iid",
    },
}
COMMON = {"fairness.enabled": False}
MODES = ("plain", "local", "ray", "flower")


# ----------------------------------------------------------------------- children


def child_plain(overrides: dict) -> dict:
    """FedAvg written directly in PyTorch: no Flower, no fedsim engine."""
    import numpy as np
    import torch

    from fedsim.clients.models import build_model
    from fedsim.clients.training import client_generator, evaluate, train  # as the ClientApp
    from fedsim.config import load_scenario
    from fedsim.data import build_federated

    sc = load_scenario(DEFAULT, overrides)
    torch.set_num_threads(sc.threads)
    fed = build_federated(sc.data, sc.partition, sc.seed)
    raw = fed.raw
    model = build_model(sc.model.name, raw.input_shape, raw.num_classes, sc.model.hidden, sc.seed)
    tensors = [
        tuple(torch.as_tensor(a) for a in (c.x_train, c.y_train, c.x_test, c.y_test))
        for c in fed.clients
    ]
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    stamps = [time.perf_counter()]
    for rnd in range(1, sc.rounds + 1):
        total = 0
        acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_state.items()}
        for pid, (x, y, _, _) in enumerate(tensors):
            model.load_state_dict(global_state)
            res = train(model, x, y, sc.client, client_generator(sc.seed, Stream.TRAIN, rnd, pid))
            for k, v in model.state_dict().items():
                acc[k] += v.double() * res.num_examples
            total += res.num_examples
        global_state = {k: (v / total).float() for k, v in acc.items()}
        model.load_state_dict(global_state)
        correct = 0
        for pid, (_, _, xt, yt) in enumerate(tensors):
            ev = evaluate(model, xt, yt, fed.clients[pid].z_test, raw.num_groups, raw.num_classes)
            correct += ev.accuracy * ev.num_examples
        stamps.append(time.perf_counter())
    weights = {k: v.numpy() for k, v in global_state.items()}
    durations = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
    return {
        "durations": durations,
        "checksum": float(sum(np.abs(w).sum() for w in weights.values())),
    }


def child_engine(mode: str, overrides: dict) -> dict:
    import numpy as np

    import fedsim

    res = fedsim.run(DEFAULT, overrides, engine=mode)
    durations = res.summary["round_times_s"]  # measured where the round loop ran
    return {
        "durations": durations,
        "checksum": float(sum(np.abs(w).sum() for w in res.arrays.values())),
    }


# ----------------------------------------------------------------------- parent


def _tree_rss(root_pid: int, t0: float, orphans: bool = True) -> int:
    """Resident memory of ``root_pid`` and its descendants; with ``orphans``, also of Ray
    and Flower processes started since ``t0`` (Flower's SuperLink detaches; on a shared
    machine this also counts other users' Ray processes)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    seen = {p.pid for p in procs}
    # Ray and Flower daemons may be re-parented; count them when they started after t0.
    for p in psutil.process_iter(["pid", "cmdline", "create_time"]) if orphans else ():
        cmd = " ".join(p.info["cmdline"] or [])
        if (
            p.info["pid"] not in seen
            and p.info["create_time"] >= t0 - 1
            and ("ray" in cmd or "flower" in cmd or "flwr" in cmd)
        ):
            procs.append(p)
            seen.add(p.info["pid"])
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(mode: str, overrides: dict, script: str = __file__, orphans: bool = True) -> dict:
    """Run ``script --child mode`` in a fresh process; wall, steady round, peak memory."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    cmd = [
        sys.executable,
        script,
        "--child",
        mode,
        "--overrides",
        json.dumps(overrides),
        "--json",
        out,
    ]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid, t0, orphans))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.time() - t0
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{err.decode()[-3000:]}")
    data = json.loads(Path(out).read_text())
    os.unlink(out)
    # Steady state: the median round after the first (every mode reports every round,
    # timed where its round loop runs).
    durations = sorted(data["durations"][1:])
    steady = durations[len(durations) // 2] if durations else None
    return {"wall": wall, "steady": steady, "peak_mb": peak / 2**20, "checksum": data["checksum"]}


def run_workload(name: str, modes: tuple[str, ...]) -> list[dict]:
    overrides = {**WORKLOADS[name], **COMMON}
    rows = []
    for mode in modes:
        m = measure(mode, overrides)
        m["mode"] = mode
        m["startup"] = m["wall"] - overrides["rounds"] * m["steady"] if m["steady"] else None
        rows.append(m)
        print(f"  {name} {mode}: wall {m['wall']:.2f}s", file=sys.stderr, flush=True)
    return rows


def print_table(name: str, rows: list[dict]) -> None:
    plain = next(r for r in rows if r["mode"] == "plain")
    print(f"\n### Workload {name}\n")
    print(
        "| mode | wall (s) | steady round (s) | start-up (s) | peak memory, all processes (MiB) "
        "| wall / plain | steady / plain | memory / plain |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def ratio(r: dict, key: str) -> str:
        return f"{r[key] / plain[key]:.2f}×" if r[key] and plain[key] else "–"

    for r in rows:
        steady = f"{r['steady']:.3f}" if r["steady"] else "–"
        startup = f"{r['startup']:.2f}" if r["startup"] is not None else "–"
        print(
            f"| {r['mode']} | {r['wall']:.2f} | {steady} | {startup} | {r['peak_mb']:.0f} | "
            f"{ratio(r, 'wall')} | {ratio(r, 'steady')} | {ratio(r, 'peak_mb')} |"
        )
    checks = {r["mode"]: round(r["checksum"], 3) for r in rows}
    print(f"\nSum of |final weights| per mode (same work, same result): {checks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
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
    modes = tuple(m for m in args.modes.split(",") if m)
    if "plain" not in modes:
        modes = ("plain", *modes)
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    print(f"fedsim engines benchmark on {os.cpu_count()} CPUs")
    for name in names:
        print_table(name, run_workload(name, modes))


if __name__ == "__main__":
    main()
