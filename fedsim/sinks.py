"""Per-round metric sinks and the Python API's ``on_round`` callback.

After every round the runner hands the round's new long-form rows ``(round, client,
metric, value)`` to a :class:`RoundPublisher`, which passes them on to

* the sinks named in ``[output] sinks``: ``jsonl`` (``metrics.jsonl`` in the run
  folder, every row, clients too), ``tensorboard`` (event files in ``tensorboard/``,
  server metrics as ``server/<metric>``, clients' with ``tensorboard_clients``) and
  ``mlflow`` (one MLflow run: the scenario as parameters, server metrics by round);
* the caller's ``on_round(round, frame)`` (``fedsim.run(..., on_round=...)``), which
  gets the round's rows as a DataFrame — the route for W&B or anything else.

The run folder's live ``metrics.csv`` is always written (by the runner) and needs no
sink. TensorBoard and MLflow are optional extras (``pip install "fedsim[tensorboard]"``,
``"fedsim[mlflow]"``); a sink whose package is missing is one error line before the run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from fedsim import results
from fedsim.config import OutputConfig, Scenario
from fedsim.errors import ConfigError

Row = tuple[int, str, str, float]
RoundCallback = Callable[[int, pd.DataFrame], None]
JSONL, TENSORBOARD_DIR = results.JSONL, results.TENSORBOARD_DIR
MLFLOW_DB, MLFLOW_RUN_ID = results.MLFLOW_DB, results.MLFLOW_RUN_ID


class Sink(Protocol):
    """Receives each round's rows; closed once when the run ends or stops."""

    def write(self, server_round: int, rows: Sequence[Row]) -> None: ...

    def close(self, finished: bool) -> None: ...


class JsonlSink:
    """``metrics.jsonl``: one JSON object per row, appended as rounds end."""

    def __init__(self, run_dir: Path, start_round: int) -> None:
        self.path = run_dir / JSONL
        if start_round and self.path.is_file():  # a resume redoes the later rounds
            kept = [
                line
                for line in self.path.read_text("utf-8").splitlines(keepends=True)
                if line.strip() and json.loads(line)["round"] <= start_round
            ]
            results.atomic_write_text(self.path, "".join(kept))
        elif self.path.exists():
            self.path.unlink()

    def write(self, server_round: int, rows: Sequence[Row]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            for r, client, metric, value in rows:
                row = {"round": r, "client": client, "metric": metric, "value": value}
                fh.write(json.dumps(row) + "\n")

    def close(self, finished: bool) -> None:
        return None


class TensorBoardSink:
    """TensorBoard event files: ``server/<metric>`` (and ``client-<id>/<metric>``)."""

    def __init__(self, run_dir: Path, clients: bool) -> None:
        try:  # optional extra, imported only when asked for
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                'output.sinks: "tensorboard" needs the tensorboard package '
                '(pip install "fedsim[tensorboard]")'
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        self.clients = clients

    def write(self, server_round: int, rows: Sequence[Row]) -> None:
        for r, client, metric, value in rows:
            if client == "server":
                self.writer.add_scalar(f"server/{metric}", value, r)
            elif self.clients:
                self.writer.add_scalar(f"client-{client}/{metric}", value, r)
        self.writer.flush()

    def close(self, finished: bool) -> None:
        self.writer.close()


class MlflowSink:
    """One MLflow run per fedsim run (continued on resume): parameters and metrics."""

    def __init__(self, run_dir: Path, cfg: OutputConfig, scenario: Scenario) -> None:
        try:  # optional extra, imported only when asked for
            import mlflow
        except ImportError:
            raise ConfigError(
                'output.sinks: "mlflow" needs the mlflow package (pip install "fedsim[mlflow]")'
            ) from None
        self.mlflow = mlflow
        for name in ("mlflow", "alembic"):  # their INFO lines would break fedsim's progress
            logging.getLogger(name).setLevel(logging.WARNING)
        uri = cfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        mlflow.set_tracking_uri(uri or f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}")
        mlflow.set_experiment(cfg.mlflow_experiment)
        id_file = run_dir / MLFLOW_RUN_ID
        if id_file.is_file():  # a resumed run continues its MLflow run
            self.run = mlflow.start_run(run_id=id_file.read_text().strip())
        else:
            self.run = mlflow.start_run(run_name=scenario.name)
            results.atomic_write_text(id_file, self.run.info.run_id)
            mlflow.log_params(dict(_flatten(scenario.to_dict())))

    def write(self, server_round: int, rows: Sequence[Row]) -> None:
        metrics = {_mlflow_key(m): v for _, c, m, v in rows if c == "server"}
        if metrics:
            self.mlflow.log_metrics(metrics, step=server_round)

    def close(self, finished: bool) -> None:
        self.mlflow.end_run(status="FINISHED" if finished else "KILLED")


def _mlflow_key(metric: str) -> str:
    # MLflow keys allow letters, digits, '_', '-', '.', ' ', ':' and '/'.
    return "".join(ch if ch.isalnum() or ch in "_-. :/" else "_" for ch in metric)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, str(value)[:500]


#: Sink -> (the package it needs, the extra that installs it).
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def check_sinks(cfg: OutputConfig, run_dir: Path | None) -> None:
    """Refuse sinks that cannot work, before anything is trained or written.

    Raises
    ------
    ConfigError
        Sinks without a results folder, or a sink whose optional package is missing.
    """
    if cfg.sinks and run_dir is None:
        raise ConfigError("output.sinks: sinks write into the results folder; give --out")
    for name in cfg.sinks:
        if name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name][0]) is None:
            package, extra = _PACKAGES[name]
            raise ConfigError(
                f'output.sinks: "{name}" needs the {package} package '
                f'(pip install "fedsim[{extra}]")'
            )


class RoundPublisher:
    """Hands each round's new rows to the sinks and to the caller's callback."""

    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path | None,
        on_round: RoundCallback | None = None,
        start_round: int = 0,
    ) -> None:
        self.sinks: list[Sink] = []
        self.on_round = on_round
        cfg = scenario.output
        check_sinks(cfg, run_dir)
        if run_dir is None:
            return
        try:
            for name in cfg.sinks:
                if name == "jsonl":
                    self.sinks.append(JsonlSink(run_dir, start_round))
                elif name == "tensorboard":
                    self.sinks.append(TensorBoardSink(run_dir, cfg.tensorboard_clients))
                else:
                    self.sinks.append(MlflowSink(run_dir, cfg, scenario))
        except BaseException:
            self.close(finished=False)
            raise

    def publish(self, server_round: int, rows: Sequence[Row]) -> None:
        """Rows of ``server_round`` (only the ones added since the last call)."""
        for sink in self.sinks:
            sink.write(server_round, rows)
        if self.on_round is not None:
            self.on_round(server_round, results.metrics_frame(rows))

    def close(self, finished: bool) -> None:
        for sink in self.sinks:
            sink.close(finished)
        self.sinks = []
