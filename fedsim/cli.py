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
    vectorize: Annotated[
        bool, typer.Option("--vectorize", help="Train each round's clients as one vmap.")
    ] = False,
) -> None:
    """Run a scenario and write its results folder."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import fedsim

    overrides = _overrides(set_)
    if ray_address:
        overrides["ray.address"] = ray_address
    if vectorize:
        overrides["vectorize"] = True
    if engine is not None and engine not in ("local", "ray", "flower"):
        raise ConfigError(f"--engine: expected local, ray or flower, got {engine!r}")
    if out is None and resume is None:
        out = Path("runs") / scenario.stem
    progress = Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=quiet,
        transient=False,
    )
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
    from fedsim.clients.models import MODELS
    from fedsim.data import METHODS, REGISTRY
    from fedsim.strategies.registry import REGISTRY as STRATEGIES

    typer.echo("datasets:")
    for info in REGISTRY.values():
        sens = f" [sensitive: {', '.join(info.sensitive)}]" if info.sensitive else ""
        typer.echo(f"  {info.name:<14} {info.description}{sens}")
    typer.echo("partitioners: " + ", ".join(METHODS))
    typer.echo("strategies: " + ", ".join(sorted(STRATEGIES)))
    typer.echo("models: " + ", ".join(MODELS))
    typer.echo("losses: ce, comp-sum (tau), sum-exp, gce (q), mae; + margin control, adversarial")


@app.command()
def sweep(
    scenario: Annotated[Path, typer.Argument(help="Base scenario TOML file.")],
    grid: Annotated[
        list[str],
        typer.Option("--grid", "-g", help="key.path=v1,v2,... (repeatable; at most two keys)."),
    ],
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds 0..N-1 per combination.")] = 3,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="CSV of every run (one row per run).")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run a scenario over a grid of overrides and seeds; print final accuracy mean ± std."""
    from fedsim.config import parse_value
    from fedsim.results import atomic_write_text
    from fedsim.study import format_table, run_grid, summarise, to_markdown

    if seeds < 1:
        raise ConfigError(f"--seeds: expected at least 1, got {seeds}")
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
    )
    keys = list(table)
    summary = summarise(frame, "eval-acc", by=keys)
    if len(keys) == 1:
        summary["metric"] = "final eval-acc"
        laid_out = format_table(summary, keys[0], "metric", digits=4)
    else:
        laid_out = format_table(summary, keys[0], keys[1], digits=4)
    typer.echo(to_markdown(laid_out))
    if out is not None:
        atomic_write_text(out, frame.to_csv(index=False))


@app.command()
def pid(
    counts: Annotated[Path, typer.Argument(help="CSV: columns z, yhat, s, count (y optional).")],
) -> None:
    """Decompose global and local disparity of your own count table (bits)."""
    from fedsim.fairness.pid import pid_from_csv

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
    import time

    from fedsim import bounds as aglfop_bounds
    from fedsim.config import load_scenario
    from fedsim.results import atomic_write_text

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
) -> None:
    """Write RUN_DIR/report.html (self-contained) and the report's CSV tables."""
    from fedsim.bounds import progress_bar, write_report

    stop, update = progress_bar(console, quiet)
    try:
        files = write_report(run_dir, grid=grid, data_dir=data_dir, progress=update)
    finally:
        stop()
    tables = ", ".join(p.name for p in files.tables.values())
    note = " (frontier computed and stored)" if files.frontier_computed else ""
    typer.echo(f"wrote {files.html}{note}; tables: {tables or 'none'}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    _quiet_flower()
    from fedsim.plugins import add_plugin_folders

    add_plugin_folders(sys.argv[1:] if argv is None else argv)  # modules beside user/scenario
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
    from fedsim import deploy

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
    from fedsim import deploy

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
    from fedsim import deploy

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
    from fedsim import deploy

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
    from fedsim import deploy

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
    from fedsim import deploy

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
    from fedsim import deploy
    from fedsim.runner import resolve

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
    from fedsim import deploy

    stopped = deploy.stop_all(folder, grace_s=grace)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


if __name__ == "__main__":
    main()
