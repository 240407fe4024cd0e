"""Metric sinks and the per-round callback, checked against the run's own metrics.

The oracle is the run's ``metrics.parquet``: every sink must carry exactly its rows
(jsonl, callback) or its server rows (TensorBoard, read back by TensorBoard's own
event reader and by a real ``tensorboard`` server; MLflow, read back by MLflow's
client from its store).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
SMALL = {"rounds": 2, "partition.num_clients": 3, "fairness.enabled": False}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"round": "int64", "client": str, "metric": str, "value": float})
    return frame.sort_values(["round", "client", "metric"]).reset_index(drop=True)


def test_jsonl_sink_and_callback_carry_exactly_the_runs_rows(tmp_path: Path) -> None:
    seen: list[tuple[int, pd.DataFrame]] = []
    result = fedsim.run(
        DEFAULT,
        {**SMALL, "output.sinks": ["jsonl"]},
        out=tmp_path / "run",
        on_round=lambda r, frame: seen.append((r, frame)),
    )
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    jsonl = pd.DataFrame([json.loads(line) for line in lines])
    expected = _sorted(result.metrics)
    pd.testing.assert_frame_equal(_sorted(jsonl[expected.columns]), expected)
    assert [r for r, _ in seen] == [1, 2]
    assert all(set(frame["round"]) == {r} for r, frame in seen)
    callback = pd.concat([frame for _, frame in seen], ignore_index=True)
    pd.testing.assert_frame_equal(_sorted(callback), expected)


def test_jsonl_sink_on_resume_keeps_each_round_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fedsim.run(DEFAULT, {**SMALL, "output.sinks": ["jsonl"]}, out=run)
    extended = fedsim.resume(run, {"rounds": 3})
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    jsonl = pd.DataFrame(rows)
    pd.testing.assert_frame_equal(
        _sorted(jsonl[["round", "client", "metric", "value"]]), _sorted(extended.metrics)
    )


def test_tensorboard_sink_scalars_read_back_by_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = fedsim.run(
        DEFAULT,
        {**SMALL, "output.sinks": ["tensorboard"], "output.tensorboard_clients": True},
        out=tmp_path / "run",
    )
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    server = result.server_metrics()
    got = [(e.step, e.value) for e in events.Scalars("server/eval-acc")]
    want = [(int(r), float(np.float32(v))) for r, v in server["eval-acc"].items()]
    assert got == want
    client_tags = [t for t in events.Tags()["scalars"] if t.startswith("client-")]
    assert "client-0/eval-acc" in client_tags


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
def test_tensorboard_server_serves_the_runs_scalars(tmp_path: Path) -> None:
    result = fedsim.run(DEFAULT, {**SMALL, "output.sinks": ["tensorboard"]}, out=tmp_path / "r")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path / "r" / "tensorboard"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=.&tag=server/eval-acc"
    try:
        data = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    data = json.loads(response.read())
                if data:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(1.0)
        assert data, "tensorboard did not serve the scalars in 90 s"
        steps = [int(step) for _, step, _ in data]
        values = [float(value) for _, _, value in data]
        server_metrics = result.server_metrics()["eval-acc"]
        assert steps == list(server_metrics.index)
        np.testing.assert_allclose(values, server_metrics.to_numpy(), rtol=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_mlflow_sink_logs_params_and_server_metrics_by_round(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    result = fedsim.run(DEFAULT, {**SMALL, "output.sinks": ["mlflow"]}, out=run)
    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id.txt").read_text().strip()
    record = client.get_run(run_id)
    assert record.info.status == "FINISHED"
    assert record.data.params["rounds"] == "2"
    assert record.data.params["strategy.name"] == "fedavg"
    history = client.get_metric_history(run_id, "eval-acc")
    server = result.server_metrics()["eval-acc"]
    assert [m.step for m in history] == list(server.index)
    np.testing.assert_allclose([m.value for m in history], server.to_numpy())
    extended = fedsim.resume(run, {"rounds": 3})  # the same MLflow run continues
    steps = [m.step for m in client.get_metric_history(run_id, "eval-acc")]
    assert steps == [1, 2, 3] and len(extended.server_metrics()) == 3


def test_sink_mistakes_end_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="output.sinks: expected names from jsonl"):
        fedsim.run(DEFAULT, {**SMALL, "output.sinks": ["wandb"]}, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="give --out"):
        fedsim.run(DEFAULT, {**SMALL, "output.sinks": ["jsonl"]})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r'pip install "fedsim\[mlflow\]"'):
        fedsim.run(DEFAULT, {**SMALL, "output.sinks": ["mlflow"]}, out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_overwrite_clears_a_run_folder_with_sink_outputs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    over = {**SMALL, "output.sinks": ["jsonl", "tensorboard"]}
    fedsim.run(DEFAULT, over, out=run)
    first = sorted(p.name for p in (run / "tensorboard").iterdir())
    fedsim.run(DEFAULT, over, out=run, overwrite=True)
    second = sorted(p.name for p in (run / "tensorboard").iterdir())
    assert len(first) == len(second) == 1 and first != second  # old event file removed
