"""Where plug-in modules are imported from: the working directory and scenario folders.

The CLI makes modules in the current directory and beside every scenario file it is
given importable, in its own process and (through ``PYTHONPATH``) in the processes
the engines start.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.plugins import add_import_folder, add_plugin_folders

REPO = Path(__file__).resolve().parents[2]
NET = (
    "from torch import nn\n"
    "def make_net(input_shape, num_classes):\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], {width}), nn.ReLU(),\n"
    "                         nn.Linear({width}, num_classes))\n"
)
SCENARIO = """\
name = "beside"
rounds = 1
[data]
num_samples = 300
[partition]
num_clients = 2
[model]
name = "besidenets:make_net"
[fairness]
enabled = false
"""


@pytest.fixture
def clean_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore sys.path, PYTHONPATH and the imported test modules afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    for name in ("besidenets",):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_import_folder_goes_first_or_last_on_sys_path_and_pythonpath(
    tmp_path: Path, clean_path: None
) -> None:
    first, last = tmp_path / "first", tmp_path / "last"
    add_import_folder(first)
    add_import_folder(last, last=True)
    add_import_folder(first)  # twice: no duplicate
    assert sys.path[0] == str(first) and sys.path[-1] == str(last)
    assert sys.path.count(str(first)) == 1
    entries = os.environ["PYTHONPATH"].split(os.pathsep)
    assert entries == [str(first), "/already/there", str(last)]


def test_plugin_folders_add_the_cwd_first_and_scenario_folders_last(
    tmp_path: Path, clean_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, scenarios = tmp_path / "cwd", tmp_path / "scenarios"
    cwd.mkdir(), scenarios.mkdir()
    (cwd / "besidenets.py").write_text("WHERE = 'cwd'\n")
    (scenarios / "besidenets.py").write_text("WHERE = 'scenario folder'\n")
    (scenarios / "s.toml").write_text(SCENARIO)
    monkeypatch.chdir(cwd)
    args = ["run", str(scenarios / "s.toml"), "--set", "x.toml=1", str(tmp_path / "none.toml")]
    add_plugin_folders(args)
    assert sys.path[0] == str(cwd) and sys.path[-1] == str(scenarios)
    assert str(tmp_path) not in sys.path  # a missing .toml adds nothing
    # the working directory's module wins over the one beside the scenario
    assert importlib.import_module("besidenets").WHERE == "cwd"


def test_cli_imports_a_plugin_module_beside_the_scenario_file(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "study", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    (folder / "besidenets.py").write_text(NET.format(width=7))
    (folder / "beside.toml").write_text(SCENARIO)
    out = tmp_path / "out"
    proc = subprocess.run(
        ["fedsim", "run", str(folder / "beside.toml"), "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # nothing of the scenario's folder
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.numpy import load_file

    assert load_file(out / "model.safetensors")["1.weight"].shape == (7, 20)
