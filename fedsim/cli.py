"""The ``fedsim`` command line.

User mistakes (bad scenario, missing data, bad arguments) end with one line
``fedsim: error: ...`` on stderr and exit code 2, with no traceback; programming
errors keep their traceback.
"""

from __future__ import annotations

import functools
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsim.config import (
    ENGINES,
    LOSSES,
    MODELS,
    OPTIMIZERS,
    PARTITIONERS,
    TABULAR_FILES,
    load_scenario,
    parse_assignment,
    parse_value,
)
from fedsim.errors import ConfigError, FedsimError
from fedsim.plugins import SIGNATURES, add_plugin_folders
from fedsim.progress import progress_bar

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
    return dict(parse_assignment(item) for item in items or [])


class _Interrupted(Exception):
    """Carries a Ctrl-C/SIGTERM out of a command: typer would turn it into exit 130."""

    def __init__(self, cause: KeyboardInterrupt) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _interruptible(command: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise _Interrupted(exc) from None

    return wrapper


def _print_version(value: bool) -> None:
    if value:
        import fedsim  # cycle: fedsim/__init__ is above this module

        typer.echo(f"fedsim {fedsim.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    """fedsim: federated-learning simulation for heterogeneity and fairness research."""


@app.command()
@_interruptible
def run(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario TOML file (not with --resume).")
    ] = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Results folder (default runs/<scenario stem>)."),
    ] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help=f"{', '.join(ENGINES)} (default: scenario's).")
    ] = None,
    data_dir: DataDirOpt = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Attach the Ray engine to this cluster.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the run checkpointed in this folder, in place."),
    ] = None,
    vectorize: Annotated[
        bool, typer.Option("--vectorize", help="Train each round's clients as one vmap.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Empty --out first if it holds an earlier run.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    """Run a scenario and write its results folder (or continue one with --resume)."""
    import fedsim.runner  # torch and flwr: start-up of every command

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = _overrides(set_)
    if ray_address:
        overrides["ray.address"] = ray_address
    if vectorize:
        overrides["vectorize"] = True
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"--engine: expected {', '.join(ENGINES)}, got {engine!r}")
    report, stop = _progress(quiet)
    kwargs: dict[str, Any] = dict(engine=engine, data_dir=data_dir, progress=report)
    try:
        if resume is not None:
            if scenario is not None:
                raise ConfigError(
                    f"--resume continues the scenario saved in {resume}; drop {scenario}"
                )
            if out is not None or overwrite:
                raise ConfigError(f"--resume writes into {resume}; drop --out and --overwrite")
            result = fedsim.runner.resume(resume, overrides=overrides, **kwargs)
        else:
            if scenario is None:
                raise ConfigError("missing SCENARIO (a TOML file) or --resume RUN_DIR")
            from fedsim.rundir import default_out  # start-up: only for runs

            target = out if out is not None else default_out(scenario)
            result = fedsim.runner.run(
                scenario, overrides, out=target, overwrite=overwrite, **kwargs
            )
    finally:
        stop()
    final = result.summary.get("final", {})
    acc = final.get("eval-acc")
    acc_text = f"final eval-acc {acc:.4f}" if acc is not None else "no evaluation"
    typer.echo(f"{result.scenario.name}: {acc_text}; results in {result.out_dir}")


SHOWN = ("eval-acc", "eval-loss", "train-loss", "global-disparity")


def _progress(
    quiet: bool,
) -> tuple[Callable[[int, int, Mapping[str, float]], None], Callable[[], None]]:
    """A per-round progress callback and its stop function.

    On a terminal: a progress bar. Elsewhere (batch jobs, ``| tee``, CI logs): one plain
    line per round on stderr, so that logs stay readable.
    """
    if quiet:
        return (lambda done, total, latest: None), (lambda: None)
    if not sys.stderr.isatty():

        def line(done: int, total: int, latest: Mapping[str, float]) -> None:
            text = "  ".join(f"{k} {latest[k]:.4f}" for k in SHOWN if k in latest)
            sys.stderr.write(f"round {done}/{total}  {text}".rstrip() + "\n")
            sys.stderr.flush()

        return line, lambda: None

    progress = Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    )
    task = progress.add_task("", total=None)

    def bar(done: int, total: int, latest: Mapping[str, float]) -> None:
        if not progress.live.is_started:  # shown from the first round: errors stay one line
            progress.start()
        text = "  ".join(f"{k}={latest[k]:.4f}" for k in SHOWN if k in latest)
        progress.update(task, completed=done, total=total, description=text)

    return bar, progress.stop


@app.command("list")
def list_() -> None:
    """List the built-in datasets, partitioners, strategies, models, losses and optimisers,
    and the signature of each kind of plug-in given by reference ("package.module:attr")."""
    from fedsim.data import REGISTRY  # pandas: start-up of every command
    from fedsim.strategies.registry import REGISTRY as STRATEGIES  # flwr: start-up

    def plugin(key: str) -> None:
        typer.echo(f'  or {key} = "package.module:attr": {SIGNATURES[key]}')

    typer.echo("datasets (data.dataset):")
    for info in REGISTRY.values():
        sens = f" [sensitive: {', '.join(info.sensitive)}]" if info.sensitive else ""
        typer.echo(f"  {info.name:<14} {info.description}{sens}")
    files = "/".join(TABULAR_FILES)
    typer.echo(f"  {files:<14} a table file: data.path, data.label, data.sensitive, data.drop")
    plugin("data.dataset")
    typer.echo("partitioners (partition.method): " + ", ".join(PARTITIONERS))
    plugin("partition.method")
    typer.echo("strategies (strategy.name): " + ", ".join(sorted(STRATEGIES)))
    plugin("strategy.name")
    typer.echo("models (model.name): " + ", ".join(MODELS))
    plugin("model.name")
    typer.echo(
        "losses (client.loss.name): " + ", ".join(LOSSES) + "; + margin control, "
        "adversarial smoothing, FedProx, [client.fairness] penalties"
    )
    plugin("client.loss.name")
    typer.echo("optimisers (client.optimizer): " + ", ".join(OPTIMIZERS))
    plugin("client.optimizer")


@app.command()
@_interruptible
def sweep(
    scenario: Annotated[Path, typer.Argument(help="Base scenario TOML file.")],
    grid: Annotated[
        list[str],
        typer.Option("--grid", "-g", help="key.path=v1,v2,... (repeatable; at most two keys)."),
    ],
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds 0..N-1 per combination.")] = 3,
    set_: SetOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="CSV of every run, one row per run, written as each run ends; rerunning "
            "into the same CSV skips the rows it holds.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Runs at once, in separate processes.")
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Run each cell as a Ray task on this cluster."),
    ] = None,
) -> None:
    """Run a scenario over a grid of overrides and seeds; print final accuracy mean ± std."""
    from fedsim.study import format_table, run_grid, summarise, to_markdown  # pandas: start-up

    if seeds < 1:
        raise ConfigError(f"--seeds: expected at least 1, got {seeds}")
    if out is not None:  # checked before the first run, not after it
        from fedsim.rundir import check_target  # start-up: only for sweeps

        if out.is_dir():
            raise ConfigError(f"--out: {out} is a folder; expected the path of a CSV file")
        check_target(out.parent, resume=True)
    table: dict[str, list[object]] = {}
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid expects key.path=v1,v2,..., got {item!r}")
        table[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    if not 1 <= len(table) <= 2:
        raise ConfigError(f"--grid: expected one or two keys, got {len(table)}")

    def report(done: int, total: int, row: Mapping[str, object]) -> None:
        console.print(f"run {done}/{total}: eval-acc {row['eval-acc']:.4f}", highlight=False)

    frame = run_grid(
        scenario,
        table,
        list(range(seeds)),
        overrides=_overrides(set_),
        data_dir=data_dir,
        progress=report,
        csv_path=out,
        jobs=jobs,
        ray_address=ray_address,
    )
    keys = list(table)
    summary = summarise(frame, "eval-acc", by=keys)
    if len(keys) == 1:
        summary["metric"] = "final eval-acc"
        laid_out = format_table(summary, keys[0], "metric", digits=4)
    else:
        laid_out = format_table(summary, keys[0], keys[1], digits=4)
    typer.echo(to_markdown(laid_out))


@app.command()
def pid(
    counts: Annotated[Path, typer.Argument(help="CSV: columns z, yhat, s, count (y optional).")],
) -> None:
    """Decompose global and local disparity of your own count table (bits)."""
    from fedsim.fairness.pid_tables import pid_from_csv  # cvxpy: start-up

    res = pid_from_csv(counts)
    typer.echo(f"global disparity I(Z;Yhat)   {res.global_disparity:.6f} bits")
    typer.echo(f"local disparity  I(Z;Yhat|S) {res.local_disparity:.6f} bits")
    typer.echo(f"unique     {res.unique:.6f}")
    typer.echo(f"redundant  {res.redundant:.6f}")
    typer.echo(f"masked     {res.masked:.6f}")
    typer.echo(f"solver status: {res.status}")


@app.command()
def bounds(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    grid: Annotated[
        int | None, typer.Option("--grid", "-g", help="N x N grid (default: fairness.bounds_grid).")
    ] = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="CSV file (default runs/<name>-bounds.csv).")
    ] = None,
    rows: Annotated[
        str, typer.Option("--rows", help="Count all rows of every client, or only train or test.")
    ] = "all",
    pid: Annotated[bool, typer.Option("--pid/--no-pid", help="PID terms per point.")] = True,
    data_dir: DataDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """AGLFOP frontier: best accuracy under global and local disparity budgets (bits)."""
    from fedsim import bounds as aglfop_bounds  # pandas: start-up
    from fedsim.results import atomic_write_text  # pandas: start-up

    sc = load_scenario(scenario, _overrides(set_))
    size = grid if grid is not None else sc.fairness.bounds_grid
    aglfop_bounds.budget_grid(1.0, size)  # validates --grid before any work
    if rows not in aglfop_bounds.ROWS:
        raise ConfigError(f"--rows: expected one of {', '.join(aglfop_bounds.ROWS)}, got {rows!r}")
    counts = aglfop_bounds.scenario_counts(sc, data_dir, rows)  # type: ignore[arg-type]
    info = aglfop_bounds.describe_counts(counts)
    stop, update = aglfop_bounds.progress_bar(console, quiet)
    t0 = time.perf_counter()
    try:
        table = aglfop_bounds.compute_frontier(counts, size, progress=update, compute_pid=pid)
    finally:
        stop()
    seconds = time.perf_counter() - t0
    target = out if out is not None else Path("runs") / f"{scenario.stem}-bounds.csv"
    atomic_write_text(target, table.to_csv(index=False))
    s, z, y = counts.shape
    typer.echo(
        f"{sc.name}: {int(counts.sum())} rows ({rows}) of {s} clients, {z} groups, {y} classes; "
        + ", ".join(f"{k} = {v:.4f}" for k, v in info.items())
        + " bits"
    )
    typer.echo(aglfop_bounds.format_frontier(table))
    bad = int((table.status != "optimal").sum())
    if bad:
        typer.echo(f"{bad} point(s) not solved to 'optimal'; see the status column")
    typer.echo(f"wrote {target} ({len(table)} points, {seconds:.1f} s)")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Results folder of a `fedsim run`.")],
    grid: Annotated[
        int | None, typer.Option("--grid", "-g", help="Recompute the frontier on an N x N grid.")
    ] = None,
    data_dir: DataDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    figures: Annotated[
        Path | None,
        typer.Option("--figures", help="Also write every figure as standalone SVG and PDF here."),
    ] = None,
) -> None:
    """Write RUN_DIR/report.html (self-contained) and the report's CSV tables.

    RUN_DIR may also be a sweep's CSV (or a folder with runs.csv): then the comparison
    figure across its runs (mean ± std over seeds) is written instead.
    """
    from fedsim.report_figures import sweep_csv, write_sweep_figures  # pandas: start-up
    from fedsim.report_run import write_report  # pandas, matplotlib: start-up

    if (csv := sweep_csv(run_dir)) is not None:
        typer.echo("wrote " + ", ".join(map(str, write_sweep_figures(csv, figures))))
        return
    stop, update = progress_bar(console, quiet)
    try:
        files = write_report(
            run_dir, grid=grid, data_dir=data_dir, progress=update, figures=figures
        )
    finally:
        stop()
    tables = ", ".join(p.name for p in files.tables.values())
    note = " (frontier computed and stored)" if files.frontier_computed else ""
    typer.echo(f"wrote {files.html}{note}; tables: {tables or 'none'}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    from fedsim.runner import RunInterrupted  # torch and flwr: start-up of every command

    _quiet_flower()
    add_plugin_folders(sys.argv[1:] if argv is None else argv)  # modules beside user/scenario
    received: list[int] = []
    saved = _catch_signals(received)
    try:
        code = app(args=argv, standalone_mode=False)
        if received:  # interrupted outside a command
            _interrupted(received, None)
        if isinstance(code, int) and code:
            sys.exit(code)
    except _Interrupted as exc:
        cause = exc.cause
        _interrupted(received, cause if isinstance(cause, RunInterrupted) else None)
    except KeyboardInterrupt:
        _interrupted(received, None)
    except FedsimError as exc:
        _fail(str(exc))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted")
    except click.exceptions.NoArgsIsHelpError:
        sys.exit(0)  # the usage was printed, as `fedsim --help` would
    except click.ClickException as exc:
        _fail(exc.format_message())
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    sys.exit(0)


def _catch_signals(received: list[int]) -> dict[int, Any]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (the run stops after its checkpoint).

    SIGINT is set explicitly too: a process started in the background of a
    non-interactive shell inherits it ignored.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    saved: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        saved[signum] = signal.signal(signum, handler)
    return saved


def _interrupted(received: list[int], exc: Any) -> None:
    signum = received[0] if received else signal.SIGINT
    if exc is None:
        line = "fedsim: interrupted"
    elif exc.resumable and exc.last_round > 0:
        line = (
            f"fedsim: interrupted after round {exc.last_round}; "
            f"resume with: fedsim run --resume {exc.out_dir}"
        )
    elif exc.resumable:
        line = f"fedsim: interrupted before the first round ended; nothing saved in {exc.out_dir}"
    else:
        line = f"fedsim: interrupted after round {exc.last_round} (this run keeps no checkpoint)"
    sys.stderr.write(line + "\n")
    sys.exit(128 + int(signum))


def _fail(message: str) -> None:
    first = " ".join(message.split())
    # click and typer both append the same "Did you mean ...?" suggestion
    first = re.sub(r"(Did you mean [^?]*\?)(\s*\1)+", r"\1", first)
    sys.stderr.write(f"fedsim: error: {first}\n")
    sys.exit(2)


def _quiet_flower() -> None:
    """Flower logs every round at INFO; fedsim shows its own progress instead."""
    logging.getLogger("flwr").setLevel(logging.WARNING)


# ------------------------------------------------------------------ fedsim deploy

deploy_app = typer.Typer(
    no_args_is_help=True,
    help="Real Flower deployment: a SuperLink and SuperNodes on several machines, over TLS "
    "with SuperNode authentication. DIR is a deployment folder (certs/, keys/, one folder "
    "per started component with its FLWR_HOME, log and pid).",
)
app.add_typer(deploy_app, name="deploy")

DeployDir = Annotated[Path, typer.Argument(help="Deployment folder.")]
SuperlinkOpt = Annotated[
    str, typer.Option("--superlink", help="The SuperLink as HOST:PORT (as in its certificate).")
]


@deploy_app.command("certs")
def deploy_certs(
    folder: DeployDir,
    hosts: Annotated[
        str, typer.Option("--hosts", help="Comma-separated names/IPs of the SuperLink host.")
    ] = "",
    days: Annotated[int, typer.Option("--days", help="Certificate validity in days.")] = 365,
) -> None:
    """Create a CA and the SuperLink's TLS certificate (127.0.0.1 and localhost included)."""
    from fedsim import deploy  # pandas: start-up

    certs = deploy.make_certificates(folder, [h for h in hosts.split(",") if h.strip()], days)
    typer.echo(f"CA certificate {certs.ca} (copy it to every SuperNode and flwr host)")
    typer.echo(f"SuperLink certificate {certs.server}, key {certs.server_key}")
    typer.echo(f"keep {certs.ca_key} private: it signs certificates")


@deploy_app.command("keygen")
def deploy_keygen(
    folder: DeployDir,
    names: Annotated[list[str], typer.Argument(help="Key names, e.g. node-0 node-1.")],
) -> None:
    """Create SuperNode key pairs (P-384, OpenSSH) in DIR/keys."""
    from fedsim import deploy  # pandas: start-up

    for name in names:
        key = deploy.make_node_key(folder, name)
        typer.echo(f"{name}: private {key.private} (stays on the node), public {key.public}")


@deploy_app.command("superlink")
def deploy_superlink(
    folder: DeployDir,
    host: Annotated[
        str, typer.Option("--host", help="Address of the public Fleet API proxy.")
    ] = "0.0.0.0",
    port: Annotated[
        int, typer.Option("--port", help="Port of the public Fleet API proxy (nginx, TLS).")
    ] = 8000,
    local_port: Annotated[
        int,
        typer.Option(
            "--local-port", help="The SuperLink's own port on 127.0.0.1 (Control API: flwr)."
        ),
    ] = 9093,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Run the SuperLink and its ServerApps as this user (root)."),
    ] = None,
) -> None:
    """Start the SuperLink on 127.0.0.1 and a TLS proxy exposing only its Fleet API."""
    from fedsim import deploy  # pandas: start-up

    proc = deploy.start_superlink(folder, host=host, port=port, local_port=local_port, user=user)
    component = deploy.Component.at(folder, "superlink")
    typer.echo(
        f"SuperLink running on 127.0.0.1:{local_port} (Control API: --superlink "
        f"127.0.0.1:{local_port}), pid {proc.pid}, log {component.log}"
    )
    typer.echo(f"Fleet API proxy (SuperNodes: --superlink HOST:{port}) listening on {host}:{port}")


@deploy_app.command("register")
def deploy_register(
    folder: DeployDir,
    public_keys: Annotated[list[Path], typer.Argument(help="SuperNode public key files (.pub).")],
    superlink: SuperlinkOpt,
) -> None:
    """Register SuperNode public keys with the SuperLink (flwr supernode register)."""
    from fedsim import deploy  # pandas: start-up

    for key in public_keys:
        node_id = deploy.register_node(folder, key, superlink)
        typer.echo(f"{key}: registered as node {node_id}")


@deploy_app.command("supernode")
def deploy_supernode(
    folder: DeployDir,
    superlink: SuperlinkOpt,
    partition_id: Annotated[int, typer.Option("--partition-id", help="This node's partition.")],
    num_partitions: Annotated[int, typer.Option("--num-partitions", help="Number of nodes.")],
    data_dir: DataDirOpt = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Private key (default DIR/keys/node-K.key).")
    ] = None,
    runtime_port: Annotated[
        int, typer.Option("--runtime-port", help="Local port for this node's ClientApps.")
    ] = 9094,
) -> None:
    """Start a SuperNode in the background for one partition."""
    from fedsim import deploy  # pandas: start-up

    proc = deploy.start_supernode(
        folder,
        superlink,
        partition_id=partition_id,
        num_partitions=num_partitions,
        data_dir=data_dir,
        key=key,
        runtime_port=runtime_port,
    )
    component = deploy.Component.at(folder, f"supernode-{partition_id}")
    state = (
        "connected"
        if deploy.CONNECTED in deploy.tail(component.log, 400)
        else "started, still connecting to the SuperLink"
    )
    typer.echo(f"SuperNode {partition_id} {state}, pid {proc.pid}, log {component.log}")


@deploy_app.command("nodes")
def deploy_nodes(folder: DeployDir, superlink: SuperlinkOpt) -> None:
    """List the SuperLink's SuperNodes and their status."""
    from fedsim import deploy  # pandas: start-up

    for node in deploy.list_nodes(folder, superlink):
        typer.echo(f"{node.get('node-id')}  {node.get('status')}")


@deploy_app.command("run")
def deploy_run(
    folder: DeployDir,
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    superlink: SuperlinkOpt,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Results folder on the SuperLink's machine.")
    ],
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = None,
) -> None:
    """Run a scenario on the deployment (flwr run) and report its final accuracy."""
    from fedsim import deploy  # pandas: start-up
    from fedsim.runner import resolve  # torch and flwr: start-up

    sc = resolve(scenario, _overrides(set_))
    out = out.expanduser().resolve()
    typer.echo(f"flwr run log: {deploy.Component.at(folder, 'cli').folder / 'flwr-run.log'}")
    summary = deploy.run_scenario(folder, superlink, sc.to_toml(), out, data_dir, timeout)
    if summary is None:
        typer.echo(f"{sc.name}: run finished; results are in {out} on the SuperLink's machine")
        return
    acc = summary.get("final", {}).get("eval-acc")
    acc_text = f"final eval-acc {acc:.4f}" if acc is not None else "no evaluation"
    typer.echo(f"{sc.name}: {acc_text}; results in {out}")


@deploy_app.command("stop")
def deploy_stop(
    folder: DeployDir,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds between SIGTERM and SIGKILL.")
    ] = 10.0,
) -> None:
    """Stop every component started from DIR on this machine (by their pid files)."""
    from fedsim import deploy  # pandas: start-up

    stopped = deploy.stop_all(folder, grace_s=grace)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


if __name__ == "__main__":
    main()
