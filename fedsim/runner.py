"""The Python API: ``fedsim.run(scenario) -> RunResult`` (the CLI calls the same code)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsim import checkpoint, preflight, results, rundir
from fedsim.bounds import run_frontier_files
from fedsim.config import ENGINES, Scenario, build, load_scenario
from fedsim.engine.core import RunRecorder, build_stack, initial_arrays
from fedsim.errors import ConfigError
from fedsim.plugins import api_overrides, require_importable
from fedsim.runtime import get_runtime
from fedsim.sinks import RoundCallback, RoundPublisher, check_sinks
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
    run_config: Mapping[str, str] | None = None  # what get_runtime rebuilds the data from

    def server_metrics(self) -> pd.DataFrame:
        """Server-level metrics, one row per round and one column per metric."""
        frame = self.metrics[self.metrics.client == "server"]
        return frame.pivot_table(index="round", columns="metric", values="value")

    def predictions(self) -> pd.DataFrame:
        """The final model's prediction for every client's every test row (fairlearn-ready).

        Computed here, in the driver process, from the final weights and the data rebuilt
        from the scenario (the clients' rows never travel), so it costs one forward pass
        over all test rows; nothing is computed unless asked. In a deployment the driver
        needs the data to call it (opt-in).

        Returns
        -------
        pandas.DataFrame
            One row per evaluated example: ``client`` (partition id), ``y_true``,
            ``y_pred`` (the arg-max class, as the clients evaluate), ``sensitive`` (group
            index) and ``group`` (its name), e.g. for
            ``fairlearn.metrics.MetricFrame(..., y_true=df.y_true, y_pred=df.y_pred,
            sensitive_features=df.group)``.

        Raises
        ------
        ConfigError
            If the result carries no scenario to rebuild the data from.
        """
        from fedsim.predictions import predictions  # torch: start-up, only when asked for

        if self.run_config is None:
            raise ConfigError("predictions: this RunResult has no run config to rebuild data from")
        return predictions(self.run_config, self.arrays)


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


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; its last checkpoint is kept.

    Attributes
    ----------
    last_round
        The last round whose checkpoint is on disk (0: none).
    out_dir
        The run folder, or ``None`` for a run without one.
    resumable
        Whether ``fedsim run --resume out_dir`` can continue it (the Flower engine
        does not checkpoint).
    """

    def __init__(self, last_round: int, out_dir: Path | None, resumable: bool) -> None:
        super().__init__(f"interrupted after round {last_round}")
        self.last_round, self.out_dir, self.resumable = last_round, out_dir, resumable


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
    overwrite: bool = False,
    on_round: RoundCallback | None = None,
) -> RunResult:
    """Run a scenario and (with ``out``) write its results folder.

    Parameters
    ----------
    scenario
        A scenario file, a parsed mapping or a :class:`~fedsim.config.Scenario`.
    overrides
        ``{"key.path": value}`` applied before validation (as ``--set``).
    out
        Results folder; nothing is written without it. It must be empty or new
        (see :mod:`fedsim.rundir`), unless ``overwrite`` or it is ``resume_from``.
    engine
        Overrides the scenario's engine: ``local``, ``ray`` or ``flower``.
    data_dir
        Dataset folder (default ``FEDSIM_DATA_DIR`` or the user cache).
    progress
        ``progress(round, num_rounds, latest_server_metrics)`` after every round.
    resume_from
        A run folder whose checkpoint to continue from (see :func:`resume`).
    model, dataset, partitioner, loss, optimizer, strategy
        The researcher's own parts, as objects (a model factory, a loader function, a
        partitioner function, a loss function, a ``torch.optim`` class, a Flower
        ``Strategy`` subclass) or ``"package.module:attr"`` references; they replace
        ``model.name``, ``data.dataset``, ``partition.method``, ``client.loss.name``,
        ``client.optimizer`` and ``strategy.name``. Objects that cannot be imported by
        module and name (lambdas, functions in ``__main__``) work on the local engine
        only.
    overwrite
        Empty ``out`` first if it holds an earlier fedsim run.
    on_round
        ``on_round(round, frame)`` after every round, with that round's long-form rows
        (server and clients) as a DataFrame: the route to W&B or any other tracker.
        ``[output] sinks`` name the built-in ones (jsonl, TensorBoard, MLflow).

    Raises
    ------
    fedsim.errors.FedsimError
        For invalid scenarios, missing data, unusable output folders and other
        problems the user can fix; all before anything is written.
    RunInterrupted
        On Ctrl-C or SIGTERM (a ``KeyboardInterrupt``), after the last checkpoint.
    """
    parts = dict(model=model, dataset=dataset, partitioner=partitioner, loss=loss)
    plugged = api_overrides({**parts, "optimizer": optimizer, "strategy": strategy})
    sc = resolve(scenario, {**(overrides or {}), **plugged}, engine)
    if sc.engine != "local":
        for key, ref in plugged.items():
            require_importable(ref, key, sc.engine)
    preflight.check_scenario(sc)
    out_dir = Path(out) if out is not None else None
    check_sinks(sc.output, out_dir)
    resume_dir = Path(resume_from) if resume_from is not None else None
    own = out_dir is not None and resume_dir is not None and _same(out_dir, resume_dir)
    if out_dir is not None:
        rundir.check_target(out_dir, overwrite=overwrite, resume=own)
    lock = rundir.RunLock(out_dir) if out_dir is not None else None
    try:
        if lock is not None and own:  # a second writer is refused before any work
            lock.acquire()
        hooks = _Hooks(progress, on_round)
        return _run_locked(sc, out_dir, lock, data_dir, hooks, resume_dir, overwrite, own)
    finally:
        if lock is not None:
            lock.release()


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _run_locked(
    sc: Scenario,
    out_dir: Path | None,
    lock: rundir.RunLock | None,
    data_dir: str | Path | None,
    hooks: _Hooks,
    resume_dir: Path | None,
    overwrite: bool,
    own: bool,
) -> RunResult:
    config_toml = sc.to_toml()
    run_config = {"scenario": config_toml, "data-dir": str(data_dir or "")}
    t0 = time.perf_counter()
    state = _prepare(sc, run_config, resume_dir)
    previous = _Previous()
    if out_dir is not None and lock is not None:
        if not own:
            lock.acquire(overwrite=overwrite)
        else:
            previous = _Previous.of(out_dir, state.start_round)
        results.atomic_write_text(out_dir / results.CONFIG, config_toml)
    publisher = RoundPublisher(sc, out_dir, hooks.on_round, state.start_round)
    done = [state.start_round]
    last = [time.perf_counter()]
    scanned = [len(state.recorder.rows)]  # rows before this round: scan only new ones
    published = [len(state.recorder.rows)]

    def after_round(server_round: int, arrays: Any, recorder: Any) -> None:
        latest = recorder.latest()
        new_rows = recorder.rows[published[0] :]
        published[0] = len(recorder.rows)
        if out_dir is not None:
            if sc.engine != "flower":  # Flower's runs cannot resume
                checkpoint.save(
                    out_dir,
                    server_round,
                    arrays,
                    state.stack[1],
                    state.accountant,
                    recorder.rows,
                    config_toml,
                )
            now = time.perf_counter()
            new_rows = recorder.rows[scanned[0] :]
            scanned[0] = len(recorder.rows)
            round_metrics = {m: v for r, c, m, v in new_rows if r == server_round and c == "server"}
            results.append_live_metrics(out_dir, server_round, round_metrics, now - last[0])
        done[0] = server_round
        publisher.publish(server_round, new_rows)
        if hooks.progress is not None:
            hooks.progress(server_round, sc.rounds, latest)
        last[0] = time.perf_counter()

    finished = False
    try:
        execution = _engine(sc.engine)(
            sc,
            run_config,
            on_round=after_round,
            start_round=state.start_round,
            arrays=state.arrays,
            recorder=state.recorder,
            stack=state.stack,
        )
        finished = True
    except KeyboardInterrupt as exc:
        resumable = out_dir is not None and sc.engine != "flower"
        raise RunInterrupted(done[0] if resumable else 0, out_dir, resumable) from exc
    finally:
        publisher.close(finished)
    wall = time.perf_counter() - t0
    arrays = {k: np.asarray(v.numpy()) for k, v in execution.arrays.items()}
    frame = results.metrics_frame(execution.recorder.rows)
    summary = make_summary(
        sc,
        frame,
        previous.wall + wall,
        previous.loop + execution.wall_time,
        previous.round_times + list(execution.round_times),
    )
    if previous.resumed_at is not None:
        summary["resumed_at_rounds"] = previous.resumed_at
    if out_dir is not None:
        extra: dict[str, bytes] = {}
        if sc.fairness.enabled and sc.fairness.bounds:  # AGLFOP frontier on the run's test rows
            extra = run_frontier_files(sc, frame, state.accountant, run_config)
        results.write_run(out_dir, config_toml, frame, arrays, summary, extra_files=extra)
    return RunResult(sc, frame, summary, arrays, out_dir, run_config)


@dataclass(frozen=True)
class _Hooks:
    """What the caller wants after every round."""

    progress: ProgressFn | None
    on_round: RoundCallback | None


@dataclass
class _Previous:
    """Timings of the rounds a resumed run already did, so its summary covers them all."""

    round_times: list[float] = field(default_factory=list)
    wall: float = 0.0
    loop: float = 0.0
    resumed_at: list[int] | None = None

    @classmethod
    def of(cls, run_dir: Path, start_round: int) -> _Previous:
        times = results.truncate_live_metrics(run_dir, start_round)
        resumed_at = [start_round]
        wall = loop = sum(times)
        if (run_dir / results.SUMMARY).is_file():  # a finished run being extended
            old = results.read_summary(run_dir)
            times = [float(t) for t in old.get("round_times_s", [])][:start_round]
            wall = float(old.get("wall_time_s", 0.0))
            loop = float(old.get("round_loop_time_s", 0.0))
            resumed_at = [*old.get("resumed_at_rounds", []), start_round]
        return cls(times, wall, loop, resumed_at)


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


def resume(
    run_dir: str | Path, overrides: Mapping[str, Any] | None = None, **kwargs: Any
) -> RunResult:
    """Continue the run checkpointed in ``run_dir``, writing into ``run_dir``.

    The scenario is the one saved with the run; the only override allowed is
    ``rounds`` above the checkpointed round, which extends the run. Resuming a
    finished run without it writes nothing and returns the stored results.

    Parameters
    ----------
    run_dir
        A run folder with ``config.toml`` and ``checkpoint.safetensors``.
    overrides
        At most ``{"rounds": N}``.
    **kwargs
        ``engine``, ``data_dir``, ``progress`` as for :func:`run`.

    Raises
    ------
    ConfigError
        If ``run_dir`` is not a checkpointed run folder, an override other than
        ``rounds`` is given, or ``rounds`` does not exceed the checkpointed round.
    """
    run_dir = Path(run_dir)
    extra = dict(overrides or {})
    rounds = extra.pop("rounds", None)
    ray_address = extra.pop("ray.address", None)  # where to run, not what: allowed
    if extra:
        keys = ", ".join(sorted(extra))
        raise ConfigError(
            f"--resume continues the saved scenario; only --set rounds=N (to extend it) is "
            f"allowed, got --set {keys}"
        )
    if not (run_dir / results.CONFIG).is_file():
        raise ConfigError(f"--resume: {run_dir} holds no {results.CONFIG}; is it a run folder?")
    saved = load_scenario(run_dir / results.CONFIG)
    header, _ = checkpoint.load(run_dir)
    done = int(header["round"])
    if rounds is not None:
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds <= done:
            raise ConfigError(
                f"--set rounds: the run in {run_dir} is checkpointed at round {done}; "
                f"to extend it give more rounds, got {rounds!r}"
            )
    elif done >= saved.rounds and (run_dir / results.SUMMARY).is_file():
        return load_result(run_dir)
    kwargs.setdefault("out", run_dir)
    over = {"rounds": rounds} if rounds is not None else {}
    if ray_address is not None:
        over["ray.address"] = ray_address
    return run(run_dir / results.CONFIG, over, resume_from=run_dir, **kwargs)


def load_result(run_dir: str | Path) -> RunResult:
    """The stored results of a finished run (nothing is recomputed or written)."""
    run_dir = Path(run_dir)
    if not (run_dir / results.SUMMARY).is_file():
        raise ConfigError(f"{run_dir}: no {results.SUMMARY}; the run did not finish")
    return RunResult(
        load_scenario(run_dir / results.CONFIG),
        results.read_metrics(run_dir),
        results.read_summary(run_dir),
        results.load_weights(run_dir),
        run_dir,
    )
