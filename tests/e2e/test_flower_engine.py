"""Flower's own simulation runtime runs fedsim's ServerApp/ClientApp unchanged.

These tests start real Flower processes (``flwr run``, a background SuperLink,
SuperExec, the simulation process and Ray), so each one also checks that none of
them is left behind. Every Flower run gets its ``FLWR_HOME`` under ``tmp_path``; a
sampler thread notes the process groups of the processes that carry it, and after the
run no live process may remain in those groups.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import fedsim
from fedsim import results
from fedsim.errors import ConfigError

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
FAST = {"rounds": 2, "partition.num_clients": 4}
PROC = Path("/proc")


class ProcessWatch:
    """Process groups of the processes whose FLWR_HOME lies under ``root`` (Linux)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root).encode()
        self.groups: set[int] = set()
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()

    def _sample(self) -> None:
        while not self._stop.wait(0.3):
            self._scan()

    def _scan(self) -> None:
        for pid, pgid, environ in _live_processes():
            if any(v.startswith(b"FLWR_HOME=" + self.root) for v in environ):
                self.seen.add(pid)
                self.groups.add(pgid)

    def leftovers(self) -> list[int]:
        own = os.getpgid(0)
        return [
            pid
            for pid, pgid, environ in _live_processes()
            if (pgid in self.groups and pgid != own)
            or any(v.startswith(b"FLWR_HOME=" + self.root) for v in environ)
        ]


def _live_processes() -> Iterator[tuple[int, int, list[bytes]]]:
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
            pgid = int(fields[2])
        except (OSError, IndexError, ValueError):
            continue
        if fields[0] != b"Z":  # zombies hold nothing and cannot be killed
            yield int(entry.name), pgid, environ


def _cmdline(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ")[:200].decode(errors="replace")


@pytest.fixture
def watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessWatch]:
    assert (PROC / "self" / "environ").exists(), "these process checks need Linux's /proc"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # FLWR_HOME goes under tmp_path
    with ProcessWatch(tmp_path) as w:
        yield w
    assert w.seen, "no Flower process was seen: did the run start Flower at all?"
    left = {pid: _cmdline(pid) for pid in w.leftovers()}
    assert not left, f"Flower/Ray processes outlived the run: {left}"


def test_flower_engine_matches_local_engine(watch: ProcessWatch) -> None:
    flower = fedsim.run(DEFAULT, FAST, engine="flower")
    local = fedsim.run(DEFAULT, FAST, engine="local")
    assert list(flower.arrays) == list(local.arrays)  # same keys, same order
    for key, value in local.arrays.items():
        np.testing.assert_allclose(flower.arrays[key], value, rtol=0, atol=1e-6, err_msg=key)
    acc_flower = flower.summary["final"]["eval-acc"]
    assert acc_flower == pytest.approx(local.summary["final"]["eval-acc"], abs=1e-6)
    assert flower.summary["engine"] == "flower" and flower.summary["rounds"] == 2
    # Same rows: only the reply order (and float summation order) differ.
    cols = ["round", "client", "metric"]
    a = flower.metrics.sort_values(cols, ignore_index=True)
    b = local.metrics.sort_values(cols, ignore_index=True)
    assert a[cols].equals(b[cols])
    np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-6)


def test_cli_runs_the_flower_engine(tmp_path: Path, watch: ProcessWatch) -> None:
    out = tmp_path / "run"
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the CLI's FLWR_HOME goes under tmp_path
    # ... but not Ray's sockets: their paths must stay short.
    env["RAY_TMPDIR"] = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsim.cli",
            "run",
            str(DEFAULT),
            "--engine",
            "flower",
            "--set",
            "rounds=1",
            "--set",
            "partition.num_clients=3",
            "--out",
            str(out),
            "-q",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = results.read_summary(out)
    assert summary["engine"] == "flower" and summary["rounds"] == 1
    assert summary["final"]["eval-acc"] > 0.5


def test_flower_run_that_times_out_raises_and_leaves_nothing(watch: ProcessWatch) -> None:
    from fedsim.engine.flower import run_flower
    from fedsim.runner import resolve

    sc = resolve(DEFAULT, FAST, engine="flower")
    with pytest.raises(RuntimeError, match="timed out"):
        run_flower(sc, {"data-dir": ""}, timeout_s=8)


def test_what_the_flower_engine_cannot_run_is_rejected_before_flower_starts() -> None:
    from fedsim.engine.flower import run_flower
    from fedsim.runner import resolve

    sc = resolve(DEFAULT, {**FAST, "ray.num_cpus": 0.5}, engine="flower")
    with pytest.raises(ConfigError, match="ray.num_cpus"):
        run_flower(sc, {})
    with pytest.raises(ConfigError, match="cannot resume"):
        run_flower(resolve(DEFAULT, FAST, engine="flower"), {}, start_round=1)


def test_flower_api_contract() -> None:
    """Fails loudly when the parts of Flower's API that fedsim builds on move."""
    from flwr.app import Message, RecordDict
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Strategy

    from fedsim.engine.grid import InProcessGrid, task_identity

    assert importlib.metadata.version("flwr").startswith("1.42")
    params = inspect.signature(Strategy.start).parameters
    assert {"grid", "initial_arrays", "num_rounds", "train_config", "evaluate_fn"} <= set(params)
    implemented = {name for name in vars(InProcessGrid) if not name.startswith("_")}
    assert Grid.__abstractmethods__ == implemented
    assert not InProcessGrid.__abstractmethods__

    def message() -> Message:
        return Message(RecordDict(), dst_node_id=5, message_type="train")

    with pytest.raises(RuntimeError):
        message()  # Flower needs a task identity to build a message
    with task_identity(7):
        assert message().metadata.run_id == 7
        with task_identity(9):
            assert message().metadata.run_id == 9
        assert message().metadata.run_id == 7  # the prior identity is back
    with pytest.raises(RuntimeError):
        message()
