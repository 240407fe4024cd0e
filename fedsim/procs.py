"""Processes of a Flower component or run, found by their ``FLWR_HOME``, and how to stop them.

The one place that finds and signals Flower's processes: the Flower engine
(:mod:`fedsim.engine.flower`) stops the processes of a ``flwr run`` with it, the
deployment (:mod:`fedsim.deploy.processes`) its SuperLink and SuperNodes. A process
belongs to a component when its environment holds ``FLWR_HOME=<home>`` (every Flower
process inherits it), when its parent does, or when it sits in the process group of
one that does; so a stale pid file never hits an unrelated process that reused the pid.
Process tables come from psutil, not from ``/proc`` by hand.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


def names_home(proc: psutil.Process, home: Path) -> bool:
    """Whether ``proc``'s environment (where unreadable: command line) names ``home`` (resolved)."""
    try:
        value = proc.environ().get("FLWR_HOME")
        return value is not None and (value == str(home) or Path(value).resolve() == home)
    except psutil.AccessDenied:
        try:
            return str(home) in " ".join(proc.cmdline())
        except psutil.Error:
            return False
    except psutil.Error:
        return False


def is_live(proc: psutil.Process) -> bool:
    """Whether ``proc`` runs (it exists and is not a zombie)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def owned_process(pid: int, home: Path) -> psutil.Process | None:
    """The live process ``pid`` if it belongs to the component with ``home``, else None."""
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return None
    return proc if is_live(proc) and names_home(proc, Path(home).resolve()) else None


def flower_processes(home: Path, groups: set[int] | None = None) -> list[psutil.Process]:
    """Live processes of the Flower component or run whose ``FLWR_HOME`` is ``home``.

    Parameters
    ----------
    home
        The ``FLWR_HOME`` of the component.
    groups
        Collects the process groups of the processes found, across calls, so that
        processes whose marked parent is gone are still found (the SuperLink and
        SuperExec start sessions of their own; Ray's processes stay in the SuperExec's,
        and those that rename themselves lose their readable environment).

    Returns
    -------
    list of psutil.Process
        Sorted by pid; this process is never among them.
    """
    home = Path(home).resolve()
    groups = set() if groups is None else groups
    own_group = os.getpgid(0)
    table: list[tuple[psutil.Process, int, int, bool]] = []
    for proc in psutil.process_iter(["pid", "ppid", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            pgid = os.getpgid(proc.pid)
        except OSError:
            continue  # gone meanwhile
        table.append((proc, proc.info["ppid"], pgid, names_home(proc, home)))
    ours = {p.pid for p, _, _, marked in table if marked}
    ours |= {p.pid for p, ppid, _, _ in table if ppid in ours}
    groups.update(pgid for p, _, pgid, _ in table if p.pid in ours and pgid != own_group)
    return sorted(
        (p for p, _, pgid, _ in table if p.pid in ours or pgid in groups), key=lambda p: p.pid
    )


def terminate(
    procs: Iterable[psutil.Process], grace_s: float = 5.0, kill_wait_s: float = 15.0
) -> list[int]:
    """SIGTERM ``procs``; SIGKILL those still alive after ``grace_s``; wait up to ``kill_wait_s``.

    Returns
    -------
    list of int
        Pids that ignored SIGTERM and were killed.
    """
    procs = [p for p in procs if is_live(p)]
    for proc in procs:
        _send(proc, "terminate")
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    alive = [p for p in alive if is_live(p)]
    for proc in alive:
        _send(proc, "kill")
    psutil.wait_procs(alive, timeout=kill_wait_s)
    return [p.pid for p in alive]


def stop_processes(home: Path, grace_s: float = 3.0, kill_wait_s: float = 15.0) -> None:
    """Stop every process of the Flower component or run whose ``FLWR_HOME`` is ``home``.

    SIGTERM first; what is still alive after ``grace_s`` (Ray's agents ignore SIGTERM)
    gets SIGKILL. Processes that a stopped one started meanwhile are found and stopped
    in further passes, until none is left or ``grace_s + kill_wait_s`` have passed.
    """
    groups: set[int] = set()
    deadline = time.monotonic() + grace_s + kill_wait_s
    while procs := flower_processes(home, groups):
        if time.monotonic() > deadline:
            log.warning("processes %s of %s did not stop", [p.pid for p in procs], home)
            return
        remaining = max(0.1, deadline - time.monotonic())
        killed = terminate(procs, grace_s=min(grace_s, remaining), kill_wait_s=remaining)
        if killed:
            log.info("processes %s of %s ignored SIGTERM and were killed", killed, home)


def _send(proc: psutil.Process, how: str) -> None:
    try:
        getattr(proc, how)()
    except psutil.Error:
        pass  # gone meanwhile, or not ours to signal
