"""Flower engine: the scenario run by Flower's own simulation runtime, as ``flwr run``.

fedsim's ServerApp and ClientApp (:mod:`fedsim.flower_app`) are started exactly as a
user would start them, with ``flwr run <project> <connection> --stream``; nothing of
Flower's runtime is imported or patched here.

* **Isolation.** Each run gets a temporary ``FLWR_HOME`` (``~/.flwr`` is never read
  or written) whose ``config.toml`` holds one connection to a local simulation
  SuperLink (``address = ":local:"``). ``flwr run`` then starts that SuperLink in the
  background on two free ports chosen here (``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``,
  ``FLWR_LOCAL_CONTROL_API_PORT``), so it never submits to a SuperLink someone else
  started, and concurrent runs do not collide. ``RAY_ADDRESS`` is removed from the
  environment so that Flower starts a private Ray instance.
* **Federation.** ``num-supernodes`` = ``partition.num_clients``; each ClientApp gets
  ``ray.num_cpus`` CPUs (a whole number: Flower 1.42 takes an integer) and
  ``ray.num_gpus`` GPUs. Flower 1.42 deprecates simulation ``options.`` in
  ``config.toml``, so these go to ``flwr run --federation-config``.
* **Results.** The ServerApp writes a results folder into a temporary ``out-dir``;
  it is read back into an :class:`~fedsim.engine.core.Execution` (the runner then
  writes the user's folder as for any engine). A user error raised in the ServerApp
  comes back as the same :class:`~fedsim.errors.FedsimError` class; any other
  failure is a :class:`RuntimeError` carrying the tail of Flower's output.
* **Clean-up.** The SuperLink that ``flwr run`` starts outlives the run (Flower
  records no pid for it), and so do its SuperExec, the simulation process and Ray's
  processes when a run fails or times out. Afterwards, whatever happened, every
  process whose environment names this run's ``FLWR_HOME``, their children and their
  process groups are stopped (see :func:`run_processes`).
* **Progress.** The rounds run in another process, so ``on_round`` is called once
  per round after the run, from the recorded rows; its ``arrays`` argument is the
  final global model in every call (a checkpoint written from it is exact for the
  last round only, and resuming is not supported by this engine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

from fedsim import results
from fedsim.config import Scenario
from fedsim.data.files import data_dir as resolve_data_dir
from fedsim.engine.core import Execution, RoundHook, RunRecorder
from fedsim.errors import ConfigError
from fedsim.server_files import ARRAY_KEYS, OUT_DIR, raise_recorded_error
from fedsim.strategies.registry import build_strategy

log = logging.getLogger(__name__)

CONNECTION = "fedsim"  # the SuperLink connection's name in the temporary config.toml
TAIL_LINES = 60  # lines of Flower's output quoted in a RuntimeError
# `flwr run` waits 15 s for the SuperLink it starts; a busy machine can take longer.
SUPERLINK_START_FAILED = "Failed to start local SuperLink"
STARTUP_RETRIES = 1


def run_flower(
    scenario: Scenario,
    run_config: Mapping[str, Any],
    *,
    on_round: RoundHook | None = None,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> Execution:
    """Run the scenario in Flower's simulation runtime via ``flwr run``.

    Parameters
    ----------
    scenario
        The validated scenario.
    run_config
        ``{"scenario": ..., "data-dir": ...}`` as for the other engines; the scenario
        is taken from ``scenario`` (its resolved TOML is what Flower receives).
    on_round
        Called for every round once the run has finished (see the module notes).
    timeout_s
        Give up (and stop Flower's processes) after this many seconds; None: never.
    **kwargs
        Options of the other engines: ``recorder`` (filled with the rows);
        ``stack`` and ``run_id`` are not used (the ServerApp builds its own strategy
        stack, Flower assigns the run id); resuming (``start_round`` > 0, ``arrays``)
        is not supported.

    Returns
    -------
    Execution
        The final global weights and the recorded rows; ``strategy`` is ``stack``'s
        inner strategy, or a fresh one: the instance that ran lived in Flower's
        process, so its state (e.g. server-optimiser moments) is not the final one.

    Raises
    ------
    ConfigError
        For what this engine cannot run (fractional ``ray.num_cpus``, resuming, no
        source checkout of fedsim).
    FedsimError
        The user error the ServerApp raised (for instance a missing dataset file).
    RuntimeError
        When Flower's run failed for any other reason.
    """
    recorder, stack = _engine_options(kwargs)
    with tempfile.TemporaryDirectory(prefix="fedsim-flower-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        home, out_dir = work / "flwr-home", work / "out"
        command = flwr_run_command(work, home, out_dir, scenario, run_config)
        t0 = time.perf_counter()
        for attempt in range(1 + STARTUP_RETRIES):
            try:
                code, output = _run(command, flower_env(home), work / "flwr-run.log", timeout_s)
            finally:
                stop_processes(home)
            if code == 0 or SUPERLINK_START_FAILED not in output or attempt == STARTUP_RETRIES:
                break
            log.warning("Flower's local SuperLink did not start in time; trying again")
        wall = time.perf_counter() - t0
        log.debug("flwr run exited with %s after %.1f s:\n%s", code, wall, output)
        strategy = (
            stack[1]
            if stack is not None
            else build_strategy(scenario.strategy, scenario.partition.num_clients)
        )
        execution = read_execution(out_dir, recorder, strategy, wall, code, output, home)
    if on_round is not None:
        replay_rounds(execution, on_round)
    return execution


def flwr_run_command(
    work: Path, home: Path, out_dir: Path, scenario: Scenario, run_config: Mapping[str, Any]
) -> list[str]:
    """Write Flower's ``config.toml`` and the run config; return the ``flwr run`` command.

    Raises
    ------
    ConfigError
        For what this engine cannot run (see :func:`run_flower`).
    """
    project = project_root()
    num_cpus = _whole_cpus(scenario.ray.num_cpus)
    write_flower_config(home)
    data_dir = resolve_data_dir(run_config.get("data-dir") or None).resolve()
    rc_file = work / "run-config.toml"
    run_toml = {"scenario": scenario.to_toml(), "data-dir": str(data_dir), OUT_DIR: str(out_dir)}
    rc_file.write_text(tomli_w.dumps(run_toml))
    return [
        _flwr_executable(),
        "run",
        str(project),
        CONNECTION,
        "--run-config",
        str(rc_file),
        "--federation-config",
        f"num-supernodes={scenario.partition.num_clients}",
        "--federation-config",
        f"client-resources-num-cpus={num_cpus}",
        "--federation-config",
        f"client-resources-num-gpus={float(scenario.ray.num_gpus)}",
        "--stream",
    ]


def project_root() -> Path:
    """The Flower App folder: fedsim's source checkout (it holds ``pyproject.toml``)."""
    root = Path(__file__).resolve().parents[2]  # fedsim/engine/flower.py -> the checkout
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app" not in pyproject.read_text("utf-8"):
        raise ConfigError(
            f"engine: the flower engine runs fedsim's project folder as a Flower App, but "
            f"{root} has no pyproject.toml with [tool.flwr.app]; install fedsim from a "
            f"source checkout (pip install -e .) or use the local or ray engine"
        )
    return root


def write_flower_config(home: Path) -> None:
    """A Flower ``config.toml`` with one connection to a local simulation SuperLink."""
    home.mkdir(parents=True, exist_ok=True)
    config = {"superlink": {"default": CONNECTION, CONNECTION: {"address": ":local:"}}}
    (home / "config.toml").write_text(tomli_w.dumps(config))


def flower_env(home: Path) -> dict[str, str]:
    """The environment of ``flwr run`` and everything it starts."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # Flower must start its own Ray instance
    http_port, control_port = free_ports(2)
    bin_dir = str(Path(sys.executable).parent)  # flwr starts `flower-superlink` via PATH
    env.update(
        FLWR_HOME=str(home),
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",  # fedsim is installed already
        FLWR_DISABLE_UPDATE_CHECK="1",  # no network calls
        FLWR_TELEMETRY_ENABLED="0",
        PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
    )
    return env


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free right now."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def read_execution(
    out_dir: Path,
    recorder: RunRecorder,
    strategy: Strategy,
    wall: float,
    code: int | None,
    output: str,
    home: Path,
) -> Execution:
    """Read the ServerApp's results folder back; raise what went wrong if it has none."""
    raise_recorded_error(out_dir)
    if not (out_dir / results.SUMMARY).is_file():
        raise RuntimeError(_failure_message(code, output, home))
    frame = results.read_metrics(out_dir)
    recorder.rows.extend(
        (int(r), str(c), str(m), float(v))
        for r, c, m, v in zip(frame["round"], frame.client, frame.metric, frame.value, strict=True)
    )
    weights = results.load_weights(out_dir)
    order = json.loads((out_dir / ARRAY_KEYS).read_text("utf-8"))
    arrays = ArrayRecord({k: Array(weights[k]) for k in order})
    summary = results.read_summary(out_dir)
    loop = float(summary.get("round_loop_time_s", wall))
    return Execution(arrays, recorder, loop, strategy, list(summary.get("round_times_s", [])))


def replay_rounds(execution: Execution, on_round: RoundHook) -> None:
    """Call ``on_round`` for every recorded round, each seeing the rows up to it."""
    rows = execution.recorder.rows
    for server_round in sorted({r for r, *_ in rows if r > 0}):
        upto = RunRecorder(rows=[row for row in rows if row[0] <= server_round])
        on_round(server_round, execution.arrays, upto)


def _engine_options(kwargs: dict[str, Any]) -> tuple[RunRecorder, Any]:
    start_round, arrays = kwargs.pop("start_round", 0), kwargs.pop("arrays", None)
    if start_round or arrays is not None:
        raise ConfigError(
            "engine: the flower engine cannot resume a run (its rounds run in Flower's "
            "process); resume with the local or ray engine (--engine local)"
        )
    kwargs.pop("run_id", None)
    recorder = kwargs.pop("recorder", None)
    stack = kwargs.pop("stack", None)
    if kwargs:
        raise TypeError(f"run_flower() got unexpected keyword arguments: {sorted(kwargs)}")
    return (recorder if recorder is not None else RunRecorder()), stack


def _whole_cpus(num_cpus: float) -> int:
    # Flower 1.42 reads client-resources num-cpus into an integer protobuf field.
    if num_cpus != int(num_cpus):
        raise ConfigError(
            f"ray.num_cpus: the flower engine needs a whole number of CPUs per client "
            f"(Flower's simulation takes an integer), got {num_cpus}; use e.g. "
            f"{max(1, round(num_cpus))} or the ray engine"
        )
    return int(num_cpus)


def _flwr_executable() -> str:
    candidate = Path(sys.executable).parent / "flwr"
    return str(candidate) if candidate.is_file() else "flwr"


def _run(
    command: list[str], env: dict[str, str], log_file: Path, timeout_s: float | None
) -> tuple[int | None, str]:
    """Run ``command``; return its exit code (None on timeout) and its output."""
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except BaseException:  # timeout or KeyboardInterrupt: Flower's CLI must go too
            proc.kill()
            proc.wait()
            code = None
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
    return code, log_file.read_text("utf-8", errors="replace")


def _failure_message(code: int | None, output: str, home: Path) -> str:
    status = "timed out" if code is None else f"exited with code {code}"
    text = _tail(output)
    superlink_log = home / "local-superlink" / "superlink.log"
    if superlink_log.is_file():
        text += "\n--- SuperLink log ---\n" + _tail(superlink_log.read_text("utf-8", "replace"))
    return (
        f"Flower's simulation run {status} without results; the last lines of its "
        f"output follow (set FEDSIM_FLOWER_LOG=INFO for Flower's own log):\n{text}"
    )


def _tail(text: str) -> str:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Flower colours its log lines
    return "\n".join(plain.strip().splitlines()[-TAIL_LINES:])


# ------------------------------------------------------------------ process clean-up


def stop_processes(home: Path, grace_s: float = 3.0, kill_wait_s: float = 15.0) -> None:
    """Stop every process of the Flower run whose ``FLWR_HOME`` is ``home``.

    SIGTERM first; what is still alive after ``grace_s`` (Ray's agents ignore
    SIGTERM) gets SIGKILL, and is waited for up to ``kill_wait_s`` more.
    """
    groups: set[int] = set()
    deadline = time.monotonic() + grace_s
    sig = signal.SIGTERM
    while pids := run_processes(home, groups):
        if sig == signal.SIGKILL and time.monotonic() > deadline + kill_wait_s:
            log.warning("processes %s of Flower's run did not stop", pids)
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(0.1)
        if time.monotonic() > deadline:
            sig = signal.SIGKILL


def run_processes(home: Path, groups: set[int]) -> list[int]:
    """Live (not zombie) processes of the Flower run whose ``FLWR_HOME`` is ``home``.

    A process is the run's when its environment holds ``FLWR_HOME=home`` (on systems
    without ``/proc``: when its command line names ``home``, as the SuperLink's does),
    when its parent is, or when it is in the process group of one that is (the
    SuperLink and SuperExec start sessions of their own; Ray's processes stay in the
    SuperExec's, and those that rename themselves lose their readable environment).
    ``groups`` collects those groups across calls, so processes whose parents are
    gone are still found.
    """
    table = _process_table(home)
    own_group = os.getpgid(0)
    ours = {pid for pid, _, _, marked in table if marked}
    ours |= {pid for pid, ppid, _, _ in table if ppid in ours}
    groups.update(pgid for pid, _, pgid, _ in table if pid in ours and pgid != own_group)
    return sorted(pid for pid, _, pgid, _ in table if pid in ours or pgid in groups)


def _process_table(home: Path) -> list[tuple[int, int, int, bool]]:
    """``(pid, ppid, pgid, names home)`` of every live process but this one."""
    rows = []
    proc = Path("/proc")
    if (proc / "self" / "environ").exists():
        marker = f"FLWR_HOME={home}".encode()
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:  # bytes: a process name need not be UTF-8
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
                marked = marker in (entry / "environ").read_bytes().split(b"\0")
                row = (int(entry.name), int(fields[1]), int(fields[2]), marked)
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or another user's
            if fields[0] != b"Z":
                rows.append(row)
    else:
        out = subprocess.run(
            ["ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "pgid=", "-o", "stat=", "-o", "args="],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for line in out.splitlines():
            pid, ppid, pgid, stat, *args = line.split(None, 4)
            if not stat.startswith("Z"):
                rows.append((int(pid), int(ppid), int(pgid), str(home) in " ".join(args)))
    return [row for row in rows if row[0] != os.getpid()]
