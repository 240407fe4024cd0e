"""Every shell command in the README's ```bash blocks is run, literally, here.

``PLANS`` maps each README command (``\\`` continuations joined, comments dropped) to how
it is checked: extra arguments appended to keep it short, README commands to run
before it in the same folder, files and output it must produce; or the test that runs
it elsewhere (multi-machine deployment, a Ray cluster, ``flwr run``). A command the
table does not know fails :func:`test_every_readme_command_has_a_plan`, so new docs
come with a test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SHORT = " --set rounds=2"  # appended where a README run would take long in the suite


@dataclass(frozen=True)
class Plan:
    """How one README command is checked."""

    extra: str = ""  # appended to the command
    before: tuple[str, ...] = ()  # README commands run first, in the same folder
    files: tuple[str, ...] = ()  # must exist afterwards (relative to the folder)
    stdout: str = ""  # must appear in the output
    delegated: str = ""  # "tests/...py::test_name" that runs it instead
    pip: bool = False  # run pip parts as a --dry-run from the checkout, without deps


DEFAULT_RUN = "fedsim run scenarios/default.toml --out runs/default"
ZSKEW_RUN = "fedsim run scenarios/aglfop-synthetic-zskew.toml --out runs/zskew"
DEPLOY = "tests/e2e/test_deployment.py::test_readme_deployment_commands_on_loopback"
EXAMPLES = "tests/e2e/test_examples.py::test_readme_extending_commands_run_literally"
FAIR_RUN = "fedsim run scenarios/default.toml --set fairness.enabled=true --out runs/fair"
TRADEOFF = (
    "fedsim sweep scenarios/default.toml --set client.fairness.penalty=demographic-parity "
    "-g client.fairness.weight=0,1,4 --seeds 2 --out runs/tradeoff.csv"
)
RAY = "tests/e2e/test_ray_engine.py::test_attaches_to_a_running_cluster"

PLANS: dict[str, Plan] = {
    "pip install -e . && fedsim run scenarios/default.toml": Plan(
        pip=True, files=("runs/default/summary.json", "runs/default/model.safetensors")
    ),
    'pip install -e ".[test]" && python -m pytest': Plan(pip=True),
    DEFAULT_RUN: Plan(files=("runs/default/summary.json", "runs/default/metrics.csv")),
    "fedsim run --resume runs/default --set rounds=15": Plan(
        before=(DEFAULT_RUN,), files=("runs/default/summary.json",), stdout="results in"
    ),
    "fedsim run scenarios/default.toml --out runs/default --overwrite --set client.lr=0.1": Plan(
        before=(DEFAULT_RUN,), files=("runs/default/summary.json",)
    ),
    "fedsim run scenarios/default.toml --out runs/ray --engine ray": Plan(
        extra=SHORT, files=("runs/ray/summary.json",)
    ),
    "fedsim run scenarios/default.toml --out runs/flower --engine flower": Plan(
        extra=SHORT, files=("runs/flower/summary.json",)
    ),
    "fedsim sweep scenarios/default.toml -g client.lr=0.01,0.1 --seeds 2 --out runs/lr.csv": Plan(
        extra=SHORT + " --set fairness.enabled=false", files=("runs/lr.csv",), stdout="| 0.1 |"
    ),
    "fedsim list": Plan(stdout="datasets (data.dataset):"),
    "fedsim --version": Plan(stdout="fedsim "),
    (
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 flwr run . --stream "
        '--federation-config "num-supernodes=10" '
        "--run-config \"scenario='scenarios/default.toml' out-dir='/abs/path/results'\""
    ): Plan(delegated="tests/e2e/test_flower_engine.py::test_cli_runs_the_flower_engine"),
    "ray start --head --port=6379 --num-cpus=16 [--num-gpus=1]": Plan(delegated=RAY),
    "ray start --address=<head-ip>:6379": Plan(delegated=RAY),
    (
        "FEDSIM_DATA_DIR=/data/fedsim fedsim run scenarios/default.toml --engine ray "
        "--ray-address <head-ip>:6379 --out results/run1"
    ): Plan(delegated=RAY),
    "fedsim bounds scenarios/aglfop-synthetic-zskew.toml --grid 6": Plan(
        files=("runs/aglfop-synthetic-zskew-bounds.csv",)
    ),
    "fedsim bounds scenarios/default.toml --grid 3 --rows test --no-pid --out f.csv": Plan(
        files=("f.csv",)
    ),
    ZSKEW_RUN: Plan(files=("runs/zskew/frontier.csv", "runs/zskew/summary.json")),
    "fedsim report runs/zskew": Plan(before=(ZSKEW_RUN,), files=("runs/zskew/report.html",)),
    "fedsim deploy certs ~/fedsim-deploy --hosts link.example.org,10.0.0.5": Plan(delegated=DEPLOY),
    "fedsim deploy superlink ~/fedsim-deploy --host 0.0.0.0 --port 8000 --local-port 9093": Plan(
        delegated=DEPLOY
    ),
    (
        "fedsim deploy supernode ~/fedsim-deploy --superlink link.example.org:8000 "
        "--partition-id k --num-partitions N --data-dir /data/fedsim"
    ): Plan(delegated=DEPLOY),
    (
        "fedsim deploy run ~/fedsim-deploy scenarios/default.toml --superlink 127.0.0.1:9093 "
        "--set partition.num_clients=N --set rounds=2 --set round_timeout=120 "
        "--out /srv/fedsim/runs/default"
    ): Plan(delegated=DEPLOY),
    "fedsim deploy nodes ~/fedsim-deploy --superlink 127.0.0.1:9093": Plan(delegated=DEPLOY),
    "python examples/custom_model.py --rounds 2": Plan(delegated=EXAMPLES),
    "python examples/custom_strategy.py --engine ray --rounds 2 --out runs/clipped": Plan(
        delegated=EXAMPLES
    ),
    "fedsim run examples/custom_loss.toml --set rounds=2 --out runs/focal": Plan(
        delegated=EXAMPLES
    ),
    "fedsim run scenarios/default.toml --vectorize --out runs/default-vmap": Plan(
        extra=SHORT, files=("runs/default-vmap/summary.json",)
    ),
    FAIR_RUN: Plan(extra=SHORT, files=("runs/fair/summary.json", "runs/fair/frontier.csv")),
    "fedsim report runs/fair --figures runs/fair/figures": Plan(
        before=(FAIR_RUN,), files=("runs/fair/report.html", "runs/fair/figures/accuracy.svg")
    ),
    TRADEOFF: Plan(extra=SHORT, files=("runs/tradeoff.csv",), stdout="| 4 |"),
    "fedsim report runs/tradeoff.csv": Plan(
        before=(TRADEOFF,), files=("runs/sweep.svg", "runs/sweep.pdf")
    ),
    (
        "fedsim run scenarios/default.toml --set strategy.name=fairfed "
        "--set strategy.options.beta=0.5 --set rounds=3"
    ): Plan(files=("runs/default/summary.json",), stdout="results in runs/default"),
}


def readme_commands(text: str) -> list[str]:
    """Shell commands of the ```bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))
LOCAL = [c for c in COMMANDS if c in PLANS and not PLANS[c].delegated]


def test_every_readme_command_has_a_plan() -> None:
    unknown = [c for c in COMMANDS if c not in PLANS]
    assert not unknown, f"README commands without a test plan in PLANS: {unknown}"
    stale = [c for c in PLANS if c not in COMMANDS]
    assert not stale, f"PLANS entries the README no longer shows: {stale}"


def test_the_extraction_joins_continuations_and_drops_comments() -> None:
    text = "```bash\n# head\nfedsim run a \\\n    --out b   # note\n```\n```python\nx\n```\n"
    assert readme_commands(text) == ["fedsim run a --out b"]


@pytest.mark.parametrize("command", sorted({PLANS[c].delegated for c in PLANS} - {""}))
def test_delegated_commands_have_their_test(command: str) -> None:
    path, _, name = command.partition("::")
    source = (REPO / path).read_text(encoding="utf-8")
    assert re.search(rf"^def {re.escape(name)}\(", source, re.M), command


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)  # fedsim as the suite imports it; its console script on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.e2e
@pytest.mark.parametrize("command", LOCAL)
def test_readme_command_runs(command: str, tmp_path: Path) -> None:
    plan = PLANS[command]
    shutil.copytree(REPO / "scenarios", tmp_path / "scenarios")
    for earlier in plan.before:
        done = _shell(earlier + PLANS[earlier].extra, tmp_path)
        assert done.returncode == 0, f"{earlier}\n{done.stderr}"
    if plan.pip:
        pip_part, _, rest = command.partition(" && ")
        dry = _shell(f"{pip_part} --no-deps --dry-run", REPO)
        assert dry.returncode == 0 and "Would install fedsim" in dry.stdout, dry.stderr
        if rest.startswith("python -m pytest"):  # never run the suite from inside itself
            assert _shell("python -m pytest --version", tmp_path).returncode == 0
            return
        command = rest
    proc = _shell(command + plan.extra, tmp_path)
    assert proc.returncode == 0, f"{command}\n{proc.stderr}"
    assert plan.stdout in proc.stdout
    for name in plan.files:
        assert (tmp_path / name).is_file(), name
