"""The Python API: ``fedsim.run(scenario) -> RunResult`` (the CLI calls the same code)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsim import checkpoint, results
from fedsim.bounds import run_frontier_files
from fedsim.config import ENGINES, Scenario, build, load_scenario
from fedsim.engine.core import RunRecorder, build_stack, initial_arrays
from fedsim.errors import ConfigError
from fedsim.plugins import api_overrides, require_importable
from fedsim.runtime import get_runtime
from fedsim.summary import make_summary

if TYPE_CHECKING:  # imported lazily: it brings in cvxpy
    from fedsim.strategies.fairness_accounting import FairnessAccounting

ProgressFn = Callable[[int, int, Mapping[str, float]], None]


@dataclass(frozen=True, eq=False)
class RunResult:
    """What a run produced."""

    scenario: Scenario
    metrics: pd.DataFrame  # long form: round, client, metric, value
    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]  # final global weights
    out_dir: Path | None = None

    def server_metrics(self) -> pd.DataFrame:
        """Server-level metrics, one row per round and one column per metric."""
        frame = self.metrics[self.metrics.client == "server"]
        return frame.pivot_table(index="round", columns="metric", values="value")


def resolve(
    scenario: Scenario | str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    engine: str | None = None,
) -> Scenario:
    """A validated scenario from a file, a mapping or a Scenario, plus overrides."""
    if isinstance(scenario, Scenario):
        scenario = scenario.to_dict()
    sc = load_scenario(scenario, overrides)
    if engine is not None:
        sc = build(Scenario, {**sc.to_dict(), "engine": engine}, "")
    return sc


def run(
    scenario: Scenario | str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    engine: str | None = None,
    data_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    resume_from: str | Path | None = None,
    model: Any = None,
    dataset: Any = None,
    partitioner: Any = None,
    loss: Any = None,
    optimizer: Any = None,
    strategy: Any = None,
) -> RunResult:
    """Run a scenario and (with ``out``) write its results folder.

    Parameters
    ----------
    scenario
        A scenario file, a parsed mapping or a :class:`~fedsim.config.Scenario`.
    overrides
        ``{"key.path": value}`` applied before validation (as ``--set``).
    out
        Results folder; nothing is written without it.
    engine
        Overrides the scenario's engine: ``local``, ``ray`` or ``flower``.
    data_dir
        Dataset folder (default ``FEDSIM_DATA_DIR`` or the user cache).
    progress
        ``progress(round, num_rounds, latest_server_metrics)`` after every round.
    resume_from
        A run folder whose checkpoint to continue from (see :mod:`fedsim.checkpoint`).
    model, dataset, partitioner, loss, optimizer, strategy
        The researcher's own parts, as objects (a model factory, a loader function, a
        partitioner function, a loss function, a ``torch.optim`` class, a Flower
        ``Strategy`` subclass) or ``"package.module:attr"`` references; they replace
        ``model.name``, ``data.dataset``, ``partition.method``, ``client.loss.name``,
        ``client.optimizer`` and ``strategy.name``. Objects that cannot be imported by
        module and name (lambdas, functions in ``__main__``) work on the local engine
        only.

    Raises
    ------
    fedsim.errors.FedsimError
        For invalid scenarios, missing data and other problems the user can fix.
    """
    parts = dict(model=model, dataset=dataset, partitioner=partitioner, loss=loss)
    plugged = api_overrides({**parts, "optimizer": optimizer, "strategy": strategy})
    sc = resolve(scenario, {**(overrides or {}), **plugged}, engine)
    if sc.engine != "local":
        for key, ref in plugged.items():
            require_importable(ref, key, sc.engine)
    config_toml = sc.to_toml()
    run_config = {"scenario": config_toml, "data-dir": str(data_dir or "")}
    out_dir = Path(out) if out is not None else None
    t0 = time.perf_counter()
    state = _prepare(sc, run_config, Path(resume_from) if resume_from is not None else None)

    def on_round(server_round: int, arrays: Any, recorder: Any) -> None:
        if out_dir is not None and sc.engine != "flower":  # Flower's runs cannot resume
            checkpoint.save(
                out_dir,
                server_round,
                arrays,
                state.stack[1],
                state.accountant,
                recorder.rows,
                config_toml,
            )
        if progress is not None:
            progress(server_round, sc.rounds, recorder.latest())

    execution = _engine(sc.engine)(
        sc,
        run_config,
        on_round=on_round,
        start_round=state.start_round,
        arrays=state.arrays,
        recorder=state.recorder,
        stack=state.stack,
    )
    wall = time.perf_counter() - t0
    arrays = {k: np.asarray(v.numpy()) for k, v in execution.arrays.items()}
    frame = results.metrics_frame(execution.recorder.rows)
    summary = make_summary(sc, frame, wall, execution.wall_time, execution.round_times)
    if out_dir is not None:
        extra: dict[str, bytes] = {}
        if sc.fairness.enabled and sc.fairness.bounds:  # AGLFOP frontier on the run's test rows
            extra = run_frontier_files(sc, frame, state.accountant, run_config)
        results.write_run(out_dir, config_toml, frame, arrays, summary, extra_files=extra)
    return RunResult(sc, frame, summary, arrays, out_dir)


@dataclass
class _Start:
    """Where a run starts: fresh, or from a checkpoint."""

    recorder: RunRecorder
    stack: tuple[Any, Any]
    accountant: FairnessAccounting | None
    start_round: int = 0
    arrays: Any = None


def _prepare(sc: Scenario, run_config: dict[str, str], resume_from: Path | None) -> _Start:
    """Load the data (user errors surface here, before anything is written), build the
    strategy stack and, when resuming, restore it from the checkpoint."""
    data = get_runtime(run_config).data
    recorder = RunRecorder()
    stack = build_stack(sc, data, recorder)
    outer, inner = stack
    accountant = None
    if sc.fairness.enabled:
        from fedsim.strategies.fairness_accounting import FairnessAccounting  # cvxpy: start-up

        accountant = outer.inner if isinstance(outer.inner, FairnessAccounting) else None
    start = _Start(recorder, stack, accountant)
    if resume_from is None:
        return start
    reference = {k: v.numpy() for k, v in initial_arrays(sc, data).items()}
    restored = checkpoint.restore(Path(resume_from), sc.rounds, reference, inner, accountant)
    recorder.rows[:] = restored.rows
    start.start_round, start.arrays = restored.start_round, restored.arrays
    return start


def _engine(name: str) -> Callable[..., Any]:
    """The run function of engine ``name``: ``run_<name>`` in ``fedsim.engine.<name>``."""
    if name not in ENGINES:
        raise ConfigError(f"engine: unknown engine {name!r} (expected {', '.join(ENGINES)})")
    # By name, when asked for: each engine brings its own runtime (Ray, Flower's processes).
    module = importlib.import_module(f"fedsim.engine.{name}")
    run: Callable[..., Any] = getattr(module, f"run_{name}")
    return run
