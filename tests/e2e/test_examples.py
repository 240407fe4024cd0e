"""The examples in ``examples/``: every script runs, prints its line and writes its results.

Each script runs in a fresh process on the local and the Ray engine (2 rounds, the
scenarios' 4 clients), one on Flower's runtime, from a folder that is not the
repository and with nothing of ``examples/`` on ``PYTHONPATH``: the script must make
its own folder importable for every engine. The plug-ins themselves are checked
in-process against oracles (focal loss at gamma = 0 is cross-entropy, the clipped
strategy moves the model by at most its bound...), and the README's "Extending
fedsim" section against the files: its code is what the examples run, its commands
run literally.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

import fedsim
from fedsim.config import load_scenario
from fedsim.data import build_federated
from fedsim.engine.core import initial_arrays

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "examples"
EXAMPLES = [
    "custom_model",
    "custom_dataset",
    "custom_strategy",
    "custom_loss",
    "custom_partitioner",
    "tensorboard_logging",
]
ROUNDS = 2
LINE = re.compile(r"^(?P<name>\w+): engine=(?P<engine>\w+) rounds=(?P<rounds>\d+) (?P<rest>.*)$")


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """Import an example module by name, as an engine resolving its reference would."""
    import importlib

    monkeypatch.syspath_prepend(str(EXAMPLES_DIR))
    yield importlib.import_module
    for name in EXAMPLES:
        sys.modules.pop(name, None)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}  # nothing of examples/


def _run_script(name: str, engine: str, cwd: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLES_DIR / f"{name}.py"), "--engine", engine]
    command += ["--rounds", str(ROUNDS), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd, env=_env())


def _server(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "metrics.parquet")
    server = frame[frame.client == "server"]
    return server.pivot_table(index="round", columns="metric", values="value")


def _check_model(out: Path) -> None:
    weights = load_file(out / "model.safetensors")  # width 16, LayerNorm after each Linear
    assert weights["1.weight"].shape == (16, 20) and weights["2.weight"].shape == (16,)
    assert weights["7.weight"].shape == (2, 16)
    assert 'optimizer = "torch.optim:AdamW"' in (out / "config.toml").read_text()


def _check_dataset(out: Path) -> None:
    table = pd.read_csv(out.with_name(out.name + "-data") / "patients.csv")
    assert len(table) == 1200
    frame = pd.read_parquet(out / "metrics.parquet")
    rows = frame[frame.metric.isin(["num-examples-train", "num-examples-evaluate"])]
    sizes = rows[rows["round"] == 1].groupby("client").value.sum()  # train + test rows
    # natural partition: one client per hospital, holding exactly that hospital's rows
    assert sorted(sizes) == sorted(table.hospital.value_counts())
    assert "global-disparity" in set(frame.metric)  # the loader's sensitive attribute
    csv = out.with_name(out.name + "-data") / "patients.csv"
    assert str(csv.resolve()) in (out / "config.toml").read_text()


def _check_strategy(out: Path) -> None:
    server = _server(out)
    norm, scale = server["update-norm"], server["update-scale"]
    assert len(norm) == ROUNDS and (norm > 0.15).any()  # the bound bites...
    np.testing.assert_allclose(np.minimum(norm, 0.15), norm * scale, rtol=1e-5)  # ...exactly


def _check_loss(out: Path) -> None:
    assert 'name = "custom_loss:focal_loss"' in (out / "config.toml").read_text()
    assert np.isfinite(_server(out)["train-loss"]).all()


def _check_partitioner(out: Path) -> None:
    frame = pd.read_parquet(out / "metrics.parquet")
    sizes = frame[frame.metric == "num-examples-train"].groupby("client").value.max()
    assert len(sizes) == 4 and sizes.min() > 0


def _check_tensorboard(out: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    acc = events.Scalars("eval-acc")
    assert [e.step for e in acc] == list(range(1, ROUNDS + 1))
    final = json.loads((out / "summary.json").read_text())["final"]
    assert acc[-1].value == pytest.approx(final["eval-acc"], abs=1e-6)
    assert {"global-acc", "global-disparity"} <= set(events.Tags()["scalars"])


CHECKS: dict[str, Callable[[Path], None]] = {
    "custom_model": _check_model,
    "custom_dataset": _check_dataset,
    "custom_strategy": _check_strategy,
    "custom_loss": _check_loss,
    "custom_partitioner": _check_partitioner,
    "tensorboard_logging": _check_tensorboard,
}


def _check_run(name: str, engine: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run_script(name, engine, tmp_path, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    match = LINE.match(lines[0])
    assert match, lines[0]
    assert (match["name"], match["engine"], match["rounds"]) == (name, engine, str(ROUNDS))
    summary = json.loads((out / "summary.json").read_text())
    printed = float(re.search(r"eval-acc=([0-9.]+)", match["rest"])[1])  # type: ignore[index]
    assert printed == pytest.approx(summary["final"]["eval-acc"], abs=5e-5)
    assert f"results in {out}" in lines[0]
    CHECKS[name](out)


@pytest.mark.e2e
@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_script_runs_prints_its_metrics_and_writes_results(
    name: str, engine: str, tmp_path: Path
) -> None:
    _check_run(name, engine, tmp_path)


@pytest.mark.e2e
def test_example_strategy_runs_in_flowers_serverapp(tmp_path: Path) -> None:
    _check_run("custom_strategy", "flower", tmp_path)


def test_every_example_has_a_scenario_naming_its_own_module() -> None:
    scripts = sorted(p.stem for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))
    assert scripts == sorted(EXAMPLES)
    for name in EXAMPLES:
        sc = load_scenario(EXAMPLES_DIR / f"{name}.toml")
        assert sc.name == name
        refs = [sc.model.name, sc.data.dataset, sc.partition.method, sc.client.loss.name]
        refs.append(sc.strategy.name)
        plugged = [r for r in refs if ":" in r]
        if name == "tensorboard_logging":  # a progress callback, not a plug-in
            assert plugged == []
        else:
            assert plugged and all(r.startswith(f"{name}:") for r in plugged), plugged


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_matches_its_closed_form(
    examples: Callable[[str], ModuleType],
) -> None:
    focal = examples("custom_loss").focal_loss
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(64, 3, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    assert torch.allclose(focal(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    uniform = torch.zeros(8, 4)  # p_t = 1/4: (3/4)^gamma * log 4
    expected = (0.75**2) * math.log(4)
    assert focal(uniform, torch.zeros(8, dtype=torch.long)).item() == pytest.approx(expected)


def test_group_majority_partition_is_disjoint_and_keeps_home_groups(
    examples: Callable[[str], ModuleType],
) -> None:
    fn = examples("custom_partitioner").group_majority
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, 20_000)
    parts = fn(np.zeros_like(z), z, 4, np.random.default_rng(1), majority=0.9)
    joined = np.concatenate(parts)
    assert len(joined) == len(z) and len(np.unique(joined)) == len(z)
    for c, rows in enumerate(parts):  # home group of client c: c % 2
        share = np.mean(z[rows] == c % 2)  # 0.9 + 0.1 / 2 expected
        assert share == pytest.approx(0.95, abs=0.01)
    strict = fn(np.zeros_like(z), z, 4, np.random.default_rng(1), majority=1.0)
    assert all((z[rows] == c % 2).all() for c, rows in enumerate(strict))


def test_clip_update_shortens_only_updates_longer_than_the_bound(
    examples: Callable[[str], ModuleType],
) -> None:
    clip = examples("custom_strategy").clip_update
    old = {"w": np.zeros(2, np.float32)}
    new = {"w": np.array([3.0, 4.0], np.float32)}  # update norm 5
    clipped, norm, scale = clip(old, new, 1.0)
    assert norm == pytest.approx(5.0) and scale == pytest.approx(0.2)
    np.testing.assert_allclose(clipped["w"], [0.6, 0.8], rtol=1e-6)
    assert clipped["w"].dtype == np.float32
    same, _, scale = clip(old, new, 10.0)
    assert scale == 1.0 and np.array_equal(same["w"], new["w"])


def test_clipped_fedavg_moves_the_global_model_at_most_its_bound(
    examples: Callable[[str], ModuleType],
) -> None:
    examples("custom_strategy")
    path = EXAMPLES_DIR / "custom_strategy.toml"
    over = {"rounds": 1}
    sc = load_scenario(path, over)
    start = {
        k: v.numpy()
        for k, v in initial_arrays(sc, build_federated(sc.data, sc.partition, sc.seed)).items()
    }

    def distance(arrays: dict[str, np.ndarray]) -> float:
        return float(np.sqrt(sum(np.sum((arrays[k] - start[k]) ** 2) for k in start)))

    plain = fedsim.run(path, {**over, "strategy.name": "fedavg", "strategy.options": {}})
    loose = fedsim.run(path, {**over, "strategy.options.max_update_norm": 1e6})
    tight = fedsim.run(path, {**over, "strategy.options.max_update_norm": 0.05})
    for k, v in plain.arrays.items():  # an unreachable bound: FedAvg itself
        np.testing.assert_allclose(loose.arrays[k], v, rtol=0, atol=1e-6)
    assert distance(plain.arrays) > 0.1
    assert distance(tight.arrays) == pytest.approx(0.05, rel=1e-4)
    direction = {k: plain.arrays[k] - start[k] for k in start}  # same direction as FedAvg
    scale = 0.05 / distance(plain.arrays)
    for k in start:
        np.testing.assert_allclose(tight.arrays[k], start[k] + scale * direction[k], atol=1e-6)


def _extending_section() -> str:
    text = (REPO / "README.md").read_text("utf-8")
    start = text.index("\n## Extending fedsim\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_extending_code_is_what_the_examples_run() -> None:
    section = _extending_section()
    sources = "\n".join(p.read_text("utf-8") for p in sorted(EXAMPLES_DIR.iterdir()))
    blocks = _blocks(section, "python") + _blocks(section, "toml")
    assert len(blocks) >= 2 * len(EXAMPLES) - 1  # code and scenario per example
    for block in blocks:
        assert block in sources, f"README code not found verbatim in examples/:\n{block}"


@pytest.mark.e2e
def test_readme_extending_commands_run_literally(tmp_path: Path) -> None:
    # From a folder holding the repository's examples/ (not the repository itself, so
    # that runs/ lands in tmp_path); bench/ commands are timings, not tests.
    (tmp_path / "examples").symlink_to(EXAMPLES_DIR)
    commands = [
        line
        for block in _blocks(_extending_section(), "bash")
        for line in block.splitlines()
        if line.strip() and not line.startswith("#") and "bench/" not in line
    ]
    assert len(commands) >= 2
    for command in commands:
        proc = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env=_env(),
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        assert "eval-acc" in proc.stdout, f"{command}\n{proc.stdout}"
