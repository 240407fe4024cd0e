"""The ``fedsim`` command line.

User mistakes (bad scenario, missing data, bad arguments) end with one line
``fedsim: error: ...`` on stderr and exit code 2, with no traceback; programming
errors keep their traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console

from fedsim.errors import ConfigError, FedsimError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="fedsim: federated-learning simulation for heterogeneity and fairness research.",
)
console = Console(stderr=True)

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a scenario key: key.path=value (repeatable)."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Dataset folder (default: $FEDSIM_DATA_DIR or ~/.cache/fedsim)."
    ),
]


def _overrides(items: list[str] | None) -> dict[str, object]:
    from fedsim.config import parse_assignment

    return dict(parse_assignment(item) for item in items or [])


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results folder.")] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="local, ray or flower (default: scenario's).")
    ] = None,
    data_dir: DataDirOpt = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Attach the Ray engine to this cluster.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run checkpointed in this folder.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a scenario and write its results folder."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import fedsim

    overrides = _overrides(set_)
    if ray_address:
        overrides["ray.address"] = ray_address
    if engine is not None and engine not in ("local", "ray", "flower"):
        raise ConfigError(f"--engine: expected local, ray or flower, got {engine!r}")
    if out is None and resume is None:
        out = Path("runs") / scenario.stem
    progress = Progress(
        TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console, disable=quiet, transient=False,
    )  # fmt: skip
    task = progress.add_task("", total=None)

    def report(done: int, total: int, latest: Mapping[str, float]) -> None:
        if not progress.live.is_started:  # shown from the first round: errors stay one line
            progress.start()
        shown = ("eval-acc", "eval-loss", "train-loss", "global-disparity")
        text = "  ".join(f"{k}={latest[k]:.4f}" for k in shown if k in latest)
        progress.update(task, completed=done, total=total, description=text)

    kwargs = dict(out=out, engine=engine, data_dir=data_dir, progress=report)
    try:
        if resume is not None:
            result = fedsim.resume(resume, overrides=overrides, **kwargs)
        else:
            result = fedsim.run(scenario, overrides, **kwargs)
    finally:
        progress.stop()
    final = result.summary.get("final", {})
    acc = final.get("eval-acc")
    acc_text = f"final eval-acc {acc:.4f}" if acc is not None else "no evaluation"
    typer.echo(f"{result.scenario.name}: {acc_text}; results in {result.out_dir}")


@app.command("list")
def list_() -> None:
    """List datasets, partitioners, strategies, models and losses."""
    from clients.models import MODELS
    from fedsim.data import METHODS, REGISTRY
    from strategies.registry import REGISTRY as STRATEGIES

    typer.echo("datasets:")
    for info in REGISTRY.values():
        sens = f" [sensitive: {', '.join(info.sensitive)}]" if info.sensitive else ""
        typer.echo(f"  {info.name:<14} {info.description}{sens}")
    typer.echo("partitioners: " + ", ".join(METHODS))
    typer.echo("strategies: " + ", ".join(sorted(STRATEGIES)))
    typer.echo("models: " + ", ".join(MODELS))
    typer.echo("losses: ce, comp-sum (tau), sum-exp, gce (q), mae; + margin control, adversarial")


@app.command()
def pid(
    counts: Annotated[Path, typer.Argument(help="CSV with columns z, yhat, s, count (y optional).")],
) -> None:
    """Decompose global and local disparity of your own count table (bits)."""
    from fairness.pid import pid_from_csv

    res = pid_from_csv(counts)
    typer.echo(f"global disparity I(Z;Yhat)   {res.global_disparity:.6f} bits")
    typer.echo(f"local disparity  I(Z;Yhat|S) {res.local_disparity:.6f} bits")
    typer.echo(f"unique     {res.unique:.6f}")
    typer.echo(f"redundant  {res.redundant:.6f}")
    typer.echo(f"masked     {res.masked:.6f}")
    typer.echo(f"solver status: {res.status}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    _quiet_flower()
    try:
        app(args=argv, standalone_mode=False)
    except FedsimError as exc:
        _fail(str(exc))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted")
    except click.ClickException as exc:
        _fail(exc.format_message())
    sys.exit(0)


def _fail(message: str) -> None:
    first = " ".join(message.split())
    sys.stderr.write(f"fedsim: error: {first}\n")
    sys.exit(2)


def _quiet_flower() -> None:
    """Flower logs every round at INFO; fedsim shows its own progress instead."""
    logging.getLogger("flwr").setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
