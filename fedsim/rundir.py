"""Run folders: where a run may write, who owns it, and what ``--overwrite`` may delete.

A run writes into one folder. Before anything is trained :func:`check_target` refuses
a target that cannot be a run folder (a file, a path below a file, ``/proc``, ``/dev``,
``/sys``, a folder that is not writable) and, for a fresh run, a non-empty folder
unless ``overwrite`` is given. ``overwrite`` empties a folder only if it is empty or
looks like a fedsim run folder (every entry is a name fedsim writes); any other folder
is refused, never deleted. While a run writes, :class:`RunLock` holds an exclusive
``fcntl.flock`` on ``RUN_DIR/.lock``, so a second writer (another run, a resume) is
refused instead of interleaving its files with the first one's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from types import TracebackType

from fedsim import results
from fedsim.errors import ConfigError

LOCK = ".lock"
#: Names fedsim writes into a run folder (results, checkpoint, report, live metrics).
RUN_FILES = frozenset(
    {
        results.CONFIG,
        results.METRICS,
        results.MODEL,
        results.SUMMARY,
        results.LIVE_METRICS,
        results.JSONL,
        results.MLFLOW_DB,
        results.MLFLOW_RUN_ID,
        "checkpoint.safetensors",  # fedsim.checkpoint.CHECKPOINT (that module imports flwr)
        "frontier.csv",
        "frontier.json",
        "report.html",
        LOCK,
    }
)
_RUN_PATTERNS = (re.compile(r"report_[a-z_]+\.csv"), re.compile(r"\..+\.tmp"))
_SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


#: Folders fedsim writes into a run folder (the TensorBoard sink's event files).
RUN_DIRS = frozenset({results.TENSORBOARD_DIR})


def is_run_file(name: str) -> bool:
    """Whether ``name`` is a file fedsim writes into a run folder."""
    return name in RUN_FILES or any(p.fullmatch(name) for p in _RUN_PATTERNS)


def looks_like_run(folder: Path) -> bool:
    """A folder holding a ``config.toml`` and nothing but files fedsim writes."""
    entries = list(folder.iterdir())
    return (folder / results.CONFIG).is_file() and all(
        not e.is_symlink()
        and ((e.is_file() and is_run_file(e.name)) or (e.is_dir() and e.name in RUN_DIRS))
        for e in entries
    )


def _entries(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir() if e.name != LOCK)


def check_target(out: Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse an output folder a run cannot or must not write to; writes nothing.

    Parameters
    ----------
    out
        The run folder.
    overwrite
        Allow a non-empty folder that looks like a fedsim run folder (it is emptied by
        :meth:`RunLock.acquire`).
    resume
        The folder is the run's own (``--resume``): being non-empty is expected.

    Raises
    ------
    ConfigError
        If ``out`` is a file, lies below a file or in a system folder, is not
        writable, or is non-empty without ``overwrite`` (or not a run folder with it).
    """
    where = Path(os.path.abspath(out))
    if any(where == root or root in where.parents for root in _SYSTEM_ROOTS):
        raise ConfigError(f"--out: {out} is a system path; choose a folder of your own")
    probe = where
    while not probe.exists():
        if probe.is_symlink():  # a dangling link
            raise ConfigError(f"--out: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == where else f"lies below the file {probe}"
        raise ConfigError(f"--out: {out} {what}; expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: {probe} is not writable")
    if probe != where or resume:
        return
    entries = _entries(where)
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"--out: {out} is not empty ({shown}); choose another --out, continue its run "
            f"with --resume {out}, or replace it with --overwrite"
        )
    if not looks_like_run(where):
        raise ConfigError(
            f"--overwrite: {out} does not look like a fedsim run folder (it holds files "
            "fedsim does not write); refusing to delete it"
        )


def default_out(scenario: Path) -> Path:
    """``runs/<stem>`` for a scenario file, refusing a run folder's own ``config.toml``.

    Rerunning ``RUN_DIR/config.toml`` into ``runs/config`` would mix unrelated runs, so
    that case needs ``--resume RUN_DIR`` or an explicit ``--out``.
    """
    parent = scenario.parent
    if scenario.name == results.CONFIG and parent.is_dir() and looks_like_run(parent):
        raise ConfigError(
            f"{scenario} is the scenario of the run folder {parent}: continue that run with "
            f"`fedsim run --resume {parent}`, or rerun it with `--out NEW_FOLDER`"
        )
    return Path("runs") / scenario.stem


class RunLock:
    """An exclusive lock on a run folder for as long as a run writes to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def acquire(self, *, overwrite: bool = False) -> RunLock:
        """Create the folder, lock it and (with ``overwrite``) empty it.

        Raises
        ------
        ConfigError
            If another process holds the lock.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ConfigError(f"--out: cannot write to {self.folder}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"{self.folder} is in use by another fedsim process (locked); wait for it "
                    "to finish or choose another --out"
                ) from None
            raise
        self._fd = fd
        if overwrite:
            for entry in self.folder.iterdir():
                if entry.name != LOCK and is_run_file(entry.name):
                    entry.unlink()
                elif entry.name in RUN_DIRS and entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
