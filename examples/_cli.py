"""What every example script shares: its command line and its one-line report.

``python examples/X.py [--engine local|ray|flower] [--rounds N] [--out DIR]`` runs
``examples/X.toml``; the plug-in it names lives in ``examples/X.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fedsim
from fedsim.plugins import add_import_folder

if TYPE_CHECKING:
    from fedsim.runner import RunResult

HERE = Path(__file__).resolve().parent
#: The server metrics each example reports, when the run has them.
SHOWN = ("eval-acc", "eval-loss", "train-loss", "global-acc")


def parse_args(name: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The examples' command line; ``--out`` defaults to ``runs/examples/<name>``."""
    parser = argparse.ArgumentParser(prog=f"examples/{name}.py", description=f"examples/{name}")
    parser.add_argument("--engine", choices=("local", "ray", "flower"), default="local")
    parser.add_argument("--rounds", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--out", type=Path, default=Path("runs") / "examples" / name)
    return parser.parse_args(argv)


def run_example(
    name: str,
    args: argparse.Namespace,
    overrides: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> RunResult:
    """Run ``examples/<name>.toml`` with the examples' folder importable everywhere.

    The plug-in references in the scenario (``"custom_model:make_net"``) name modules
    in this folder: adding it to ``sys.path`` and ``PYTHONPATH`` lets this process,
    the Ray workers and Flower's processes import them.
    """
    add_import_folder(HERE)
    over = dict(overrides or {})
    if args.rounds is not None:
        over["rounds"] = args.rounds
    return fedsim.run(HERE / f"{name}.toml", over, engine=args.engine, out=args.out, **kwargs)


def report_line(name: str, result: RunResult) -> str:
    """One line: the example, its engine and rounds, the final metrics, the folder."""
    final = result.summary["final"]
    metrics = " ".join(f"{k}={final[k]:.4f}" for k in SHOWN if k in final)
    sc = result.scenario
    return f"{name}: engine={sc.engine} rounds={sc.rounds} {metrics}; results in {result.out_dir}"
