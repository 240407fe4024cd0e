"""Background processes of the components: start, stop, pid files, logs and ports.

A component (SuperLink, SuperNode, ``flwr`` CLI, TLS proxy) is a folder with its
``FLWR_HOME``, a log and a pid file. A process is only signalled when its environment
names the component's ``FLWR_HOME`` (:mod:`fedsim.procs`, psutil), so a stale pid file
never hits an unrelated process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from fedsim import procs
from fedsim.deploy.commands import deploy_env
from fedsim.deploy.errors import DeployError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Component:
    """A SuperLink, a SuperNode or the ``flwr`` CLI: its folder, FLWR_HOME, log and pid."""

    folder: Path

    @classmethod
    def at(cls, deployment: Path, name: str) -> Component:
        return cls(Path(deployment).resolve() / name)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


def start(
    component: Component, command: Sequence[str], *, user: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in the background as ``component``; write its pid file.

    The process gets a session of its own (it outlives the command that started it
    and a Ctrl-C there), ``FLWR_HOME`` = ``component.home`` and its output goes to
    ``component.log``; with ``user``, it runs as that user (see :func:`grant`).
    """
    running = _process(component)
    if running is not None:
        raise DeployError(
            f"{component.name} already runs with pid {running.pid} (pid file "
            f"{component.pid_file}); stop it first (fedsim deploy stop)"
        )
    component.home.mkdir(parents=True, exist_ok=True)
    env = deploy_env(component.home)
    ids: dict[str, Any] = {}
    if user is not None:
        account = _account(user)
        ids = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env.update(HOME=account.pw_dir, USER=user, LOGNAME=user)
        grant(user, component.folder)
    with component.log.open("ab") as sink:
        proc = subprocess.Popen(
            list(command),
            env=env,
            **ids,
            cwd=component.folder,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    component.pid_file.write_text(f"{proc.pid}\n")
    log.info("started %s (pid %s): %s", component.name, proc.pid, " ".join(command))
    return proc


def stop(*targets: Component, grace_s: float = 10.0) -> None:
    """Stop components: SIGTERM to their pids, SIGKILL after ``grace_s``, then what they started.

    All targets are signalled at once. Only a process whose environment names the
    component's ``FLWR_HOME`` is signalled, so a stale pid file never hits an unrelated
    process that reused the pid. A component that ignores SIGTERM (a SuperLink with a
    streaming ``flwr run`` attached can, for longer than any grace) is killed by pid.
    What a component started (SuperExec, ServerApp and ClientApp processes) carries its
    ``FLWR_HOME`` too and is stopped afterwards.
    """
    running = {c: proc for c in targets if (proc := _process(c)) is not None}
    for pid in procs.terminate(running.values(), grace_s=grace_s):
        name = next(c.name for c, p in running.items() if p.pid == pid)
        log.warning("%s (pid %s) ignored SIGTERM for %.0f s; killed it", name, pid, grace_s)
    for component in targets:
        procs.stop_processes(component.home.resolve(), grace_s=min(grace_s, 3.0))
        component.pid_file.unlink(missing_ok=True)


def grant(user: str, folder: Path, *files: Path) -> None:
    """Hand ``folder`` (recursively) and ``files`` to ``user``, so a process run as it can use them.

    Raises
    ------
    DeployError
        When this process is not root (only root can start a process as another user)
        or ``user`` does not exist.
    """
    account = _account(user)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder, *folder.rglob("*"), *files]
    for path in paths:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)


def _account(user: str) -> pwd.struct_passwd:
    if os.geteuid() != 0:
        raise DeployError(
            f"--user {user}: only root can start the SuperLink as another user; "
            f"run fedsim deploy as {user} instead, without --user"
        )
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise DeployError(f"--user: no user named {user!r} on this machine") from None


def components(deployment: Path) -> list[Component]:
    """The components of ``deployment`` that have a pid file."""
    root = Path(deployment).resolve()
    return [Component(p.parent) for p in sorted(root.glob("*/*.pid")) if p.stem == p.parent.name]


def stop_all(deployment: Path, grace_s: float = 10.0) -> list[str]:
    """Stop every component of ``deployment``, SuperNodes before the SuperLink.

    Returns the names of the components that had a pid file.
    """
    found = components(deployment)
    nodes = [c for c in found if c.name != "superlink"]
    stop(*nodes, grace_s=grace_s)  # they sign off from the SuperLink while it still runs
    stop(*[c for c in found if c.name == "superlink"], grace_s=grace_s)
    return [c.name for c in found]


def _process(component: Component) -> psutil.Process | None:
    """The component's live process by its pid file (None: none, or the pid was reused)."""
    pid = component.pid()
    return None if pid is None else procs.owned_process(pid, component.home)


def wait_for_port(
    host: str,
    port: int,
    proc: subprocess.Popen[bytes] | None,
    log_file: Path,
    timeout_s: float = 60.0,
) -> None:
    """Wait until ``host:port`` accepts connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DeployError(
                f"the process exited with code {proc.returncode} before listening on "
                f"{host}:{port}; its log ({log_file}) ends:\n{tail(log_file)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.2)
    raise DeployError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s; see {log_file}")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, without colour codes ('' if missing)."""
    try:
        text = Path(path).read_text("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()[-lines:])
