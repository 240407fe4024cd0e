"""The command line's progress bar for AGLFOP frontier solves (``fedsim bounds``, ``report``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["ProgressFn", "progress_bar"]

ProgressFn = Callable[[int, int], None]


def progress_bar(console: Any, quiet: bool = False) -> tuple[Callable[[], None], ProgressFn]:
    """A rich progress bar on ``console``: ``(stop, progress)``.

    ``progress(done, total)`` starts the bar on the first solved point, so a command
    that fails before solving prints only its one error line; ``stop()`` removes it
    (and does nothing if it never started).
    """
    bar = Progress(
        TextColumn("[bold]AGLFOP frontier"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
    task = bar.add_task("", total=None)

    def update(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    def stop() -> None:
        if bar.live.is_started:
            bar.stop()

    return stop, update
