"""Per-round metrics to TensorBoard through the runner's ``progress`` callback.

``fedsim.run(..., progress=fn)`` calls ``fn(round, num_rounds, latest_metrics)``
after every round with the newest server metrics (``eval-acc``, ``train-loss``,
``global-disparity``...); this script writes each one as a TensorBoard scalar under
``<out>/tensorboard``. View them with ``tensorboard --logdir runs/examples``. (The
file is not called ``tensorboard.py``: on the import path it would shadow the
``tensorboard`` package itself.)

Needs the optional extra: ``pip install -e ".[tensorboard]"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


def tensorboard_progress(writer: SummaryWriter) -> Callable[[int, int, Mapping[str, float]], None]:
    """A ``progress`` callback that writes every server metric of every round."""

    def progress(server_round: int, num_rounds: int, latest: Mapping[str, float]) -> None:
        for name, value in latest.items():
            writer.add_scalar(name, value, global_step=server_round)
        writer.flush()

    return progress


if __name__ == "__main__":
    from _cli import parse_args, report_line, run_example

    args = parse_args("tensorboard_logging")
    # The writer is made after fedsim has taken the run folder (a fresh run needs an
    # empty --out); fedsim counts its tensorboard/ folder among a run folder's files.
    logs = Path(args.out) / "tensorboard"
    writers: list[SummaryWriter] = []

    def progress(server_round: int, num_rounds: int, latest: Mapping[str, float]) -> None:
        if not writers:
            writers.append(SummaryWriter(log_dir=str(logs)))
        tensorboard_progress(writers[0])(server_round, num_rounds, latest)

    result = run_example("tensorboard_logging", args, progress=progress)
    for writer in writers:
        writer.close()
    print(report_line("tensorboard_logging", result) + f"; TensorBoard logs in {logs}")
