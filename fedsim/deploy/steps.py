"""The deployment's steps: start the SuperLink and SuperNodes, register keys, list, run.

Each step checks the files it needs (certificates, keys) and turns a failing ``flwr``
command into a :class:`~fedsim.deploy.errors.DeployError` with the tail of its output.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import tomli_w

from fedsim import results
from fedsim.deploy.certs import LOOPBACK, Certificates, NodeKey
from fedsim.deploy.commands import (
    DEFAULT_LOCAL_PORT,
    DEFAULT_PORT,
    DEFAULT_RUNTIME_PORT,
    deploy_env,
    list_nodes_command,
    register_command,
    run_command,
    stop_run_command,
    superlink_command,
    supernode_command,
    write_cli_config,
)
from fedsim.deploy.errors import DeployError
from fedsim.deploy.processes import Component, grant, start, stop, tail, wait_for_port
from fedsim.deploy.proxy import proxy_command, write_proxy_config
from fedsim.server_files import ERROR, raise_recorded_error


def start_superlink(
    deployment: Path,
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    local_port: int = DEFAULT_LOCAL_PORT,
    user: str | None = None,
    timeout_s: float = 60,
) -> subprocess.Popen[bytes]:
    """Start the SuperLink on ``127.0.0.1:local_port`` and the Fleet proxy on ``host:port``.

    The SuperLink (Fleet, Control and Runtime APIs on one port) listens on loopback
    only; nginx (:mod:`~fedsim.deploy.proxy`) terminates TLS on the public address and
    forwards only the Fleet API. The operator reaches the Control API on
    ``127.0.0.1:local_port`` (on this host, or through an SSH tunnel).

    Parameters
    ----------
    user
        Run the SuperLink (and so its ServerApps) as this unprivileged user; needs root.

    Returns
    -------
    subprocess.Popen
        The SuperLink's process (the proxy's pid is in ``proxy/proxy.pid``).
    """
    certs = _existing_certificates(deployment)
    if host.strip("[]") in (*LOOPBACK, "::1") and port == local_port:
        raise DeployError(f"--port and --local-port must differ, both are {port}")
    component = Component.at(deployment, "superlink")
    proxy = Component.at(deployment, "proxy")
    component.folder.mkdir(parents=True, exist_ok=True)
    command = superlink_command(
        certs, host="127.0.0.1", port=local_port, database=component.folder / "state.db"
    )
    if user is not None:
        grant(user, component.folder, certs.server, certs.server_key)
    proc = start(component, command, user=user)
    try:
        wait_for_port("127.0.0.1", local_port, proc, component.log, timeout_s)
        proxy.folder.mkdir(parents=True, exist_ok=True)
        config = write_proxy_config(
            certs, proxy.folder, listen_host=host, listen_port=port, superlink_port=local_port
        )
        nginx = start(proxy, proxy_command(config, proxy.folder))
        probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host.strip("[]")
        wait_for_port(probe, port, nginx, proxy.log, timeout_s)
    except DeployError:
        stop(proxy, component)
        raise
    return proc


def start_supernode(
    deployment: Path,
    superlink: str,
    *,
    partition_id: int,
    num_partitions: int,
    data_dir: str | Path | None = None,
    key: Path | None = None,
    runtime_port: int = DEFAULT_RUNTIME_PORT,
    name: str | None = None,
    confirm_s: float = 15.0,
) -> subprocess.Popen[bytes]:
    """Start a SuperNode serving partition ``partition_id`` of ``num_partitions``.

    ``key`` defaults to ``keys/node-<partition_id>.key``; ``name`` (the component's
    folder) to ``supernode-<partition_id>``. Waits up to ``confirm_s`` seconds for
    the SuperLink to accept the node (0: do not wait).

    Raises
    ------
    DeployError
        When the SuperLink refuses the node (unregistered key, wrong address): the
        SuperNode is stopped and the refusal quoted.
    """
    if not 0 <= partition_id < num_partitions:
        raise DeployError(
            f"--partition-id: expected 0 <= partition id < --num-partitions "
            f"({num_partitions}), got {partition_id}"
        )
    ca = Certificates.at(deployment).ca
    key = Path(key) if key is not None else NodeKey.at(deployment, f"node-{partition_id}").private
    for path, what in ((ca, "the CA certificate"), (key, "the SuperNode's private key")):
        if not path.is_file():
            raise DeployError(
                f"{what} {path} does not exist; copy it here or create it "
                f"(fedsim deploy certs / fedsim deploy keygen)"
            )
    if data_dir:
        data_dir = Path(data_dir).expanduser().resolve()
    command = supernode_command(
        superlink,
        ca.resolve(),
        key.resolve(),
        partition_id=partition_id,
        num_partitions=num_partitions,
        data_dir=data_dir,
        runtime_port=runtime_port,
    )
    component = Component.at(deployment, name or f"supernode-{partition_id}")
    offset = component.log.stat().st_size if component.log.is_file() else 0
    proc = start(component, command)
    if confirm_s > 0:
        _await_activation(component, proc, offset, confirm_s)
    return proc


CONNECTED = "SuperNode ID:"  # what Flower 1.42's SuperNode logs once the SuperLink accepted it
REFUSED = ("Failed to activate SuperNode", "Failed to initialize the connection")


def _await_activation(
    component: Component, proc: subprocess.Popen[bytes], offset: int, timeout_s: float
) -> bool:
    """Wait until the SuperLink accepts the SuperNode; raise when it refuses it.

    Returns False when the SuperNode still tries to connect after ``timeout_s`` (the
    SuperLink may not be up yet: it keeps retrying).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        exited = proc.poll() is not None
        text = _read_from(component.log, offset)
        if CONNECTED in text:
            return True
        if exited or any(r in text for r in REFUSED):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)  # a refused SuperNode exits by itself (code 305)
            stop(component, grace_s=2)
            lines = [ln for ln in text.splitlines() if "[code:" in ln or "Failed" in ln]
            reason = " ".join(lines[-2:]) or f"it exited with code {proc.returncode}"
            raise DeployError(
                f"{component.name} was refused by the SuperLink ({reason.strip()}); is its "
                f"public key registered (fedsim deploy register) and the address that of "
                f"the Fleet proxy? Log: {component.log}"
            )
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            raw = f.read()
    except OSError:
        return ""
    return re.sub(r"\x1b\[[0-9;]*m", "", raw.decode("utf-8", errors="replace"))


def flwr_cli(deployment: Path, superlink: str) -> Component:
    """The ``flwr`` CLI's component, its ``config.toml`` naming ``superlink``."""
    component = Component.at(deployment, "cli")
    write_cli_config(component.home, superlink, _existing_ca(deployment))
    return component


def register_node(deployment: Path, public_key: Path, superlink: str) -> int:
    """Register a SuperNode's public key with the SuperLink; return its node id."""
    cli = flwr_cli(deployment, superlink)
    out = _run_cli(cli, register_command(Path(public_key).resolve()), "register the key")
    return int(_json_output(out, "register the key")["node-id"])


def list_nodes(deployment: Path, superlink: str) -> list[dict[str, Any]]:
    """The SuperLink's SuperNodes (``flwr supernode list``): node id, status..."""
    cli = flwr_cli(deployment, superlink)
    out = _run_cli(cli, list_nodes_command(), "list the SuperNodes")
    return list(_json_output(out, "list the SuperNodes").get("nodes", []))


def submit_run(
    deployment: Path,
    superlink: str,
    scenario_toml: str,
    *,
    out_dir: Path,
    data_dir: str | Path | None = None,
    timeout_s: float | None = None,
) -> int | None:
    """Run a scenario on the deployment with ``flwr run ... --stream``.

    ``out_dir`` and ``data_dir`` are paths on the SuperLink's machine (the ServerApp
    runs there). Returns ``flwr run``'s exit code (None: it timed out and was killed;
    its output is in ``cli/flwr-run.log``).
    """
    from fedsim.engine.flower import project_root  # torch and flwr: start-up of `fedsim deploy`

    cli = flwr_cli(deployment, superlink)
    rc_file = cli.folder / "run-config.toml"
    rc_file.write_text(
        tomli_w.dumps(
            {
                "scenario": scenario_toml,
                "data-dir": str(data_dir or ""),
                "out-dir": str(out_dir),
            }
        )
    )
    run_log = cli.folder / "flwr-run.log"
    with run_log.open("wb") as sink:
        proc = subprocess.Popen(
            run_command(project_root(), rc_file),
            env=deploy_env(cli.home),
            cwd=cli.folder,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:  # timed out or interrupted: the run must stop too
                proc.kill()
                proc.wait()
                _stop_run(cli, run_log)


def _stop_run(cli: Component, run_log: Path) -> None:
    """``flwr stop`` the run that ``flwr run`` started (its id is in the log)."""
    found = re.search(r"Successfully started run (\d+)", tail(run_log, 10_000))
    if found is None:
        return
    command = stop_run_command(found.group(1))
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(
            command,
            env=deploy_env(cli.home),
            cwd=cli.folder,
            capture_output=True,
            timeout=60,
            check=False,
        )


def _run_cli(cli: Component, command: list[str], what: str) -> str:
    proc = subprocess.run(
        command,
        env=deploy_env(cli.home),
        cwd=cli.folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise DeployError(
            f"flwr could not {what} (exit code {proc.returncode}): "
            + " ".join((proc.stdout + proc.stderr).split())[-800:]
        )
    return proc.stdout


def _json_output(text: str, what: str) -> dict[str, Any]:
    start_at = text.find("{")
    try:
        value = json.loads(text[start_at:]) if start_at >= 0 else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or value.get("success") is False:
        raise DeployError(f"flwr could not {what}: {' '.join(text.split())[-800:]}")
    return value


def _existing_ca(deployment: Path) -> Path:
    ca = Certificates.at(deployment).ca
    if not ca.is_file():
        raise DeployError(
            f"the CA certificate {ca} does not exist; create it with fedsim deploy certs "
            f"or copy certs/ca.pem from the SuperLink's deployment folder"
        )
    return ca.resolve()


def _existing_certificates(deployment: Path) -> Certificates:
    certs = Certificates.at(Path(deployment).resolve())
    missing = [p for p in (certs.ca, certs.server, certs.server_key) if not p.is_file()]
    if missing:
        raise DeployError(
            f"the SuperLink needs {', '.join(map(str, missing))}; create them with "
            f"fedsim deploy certs {deployment} --hosts <the SuperLink's host names/IPs>"
        )
    return certs


def run_scenario(
    deployment: Path,
    superlink: str,
    scenario_toml: str,
    out_dir: Path,
    data_dir: str | Path | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any] | None:
    """:func:`submit_run`, then read the results folder if it is on this machine.

    Returns
    -------
    dict or None
        The run's ``summary.json``; None when the SuperLink runs on another machine
        and the folder is not here.

    Raises
    ------
    FedsimError
        The user error the ServerApp raised (its ``error.json``), same class.
    DeployError
        When ``flwr run`` failed or timed out (with the tail of its output).
    """
    for stale in (Path(out_dir) / ERROR, Path(out_dir) / results.SUMMARY):
        stale.unlink(missing_ok=True)  # from an earlier run into the same folder
    code = submit_run(
        deployment,
        superlink,
        scenario_toml,
        out_dir=out_dir,
        data_dir=data_dir,
        timeout_s=timeout_s,
    )
    raise_recorded_error(Path(out_dir))
    run_log = Component.at(deployment, "cli").folder / "flwr-run.log"
    if code != 0:
        status = "timed out" if code is None else f"exited with code {code}"
        raise DeployError(f"flwr run {status}; {run_log} ends:\n{tail(run_log)}")
    if (Path(out_dir) / results.SUMMARY).is_file():
        return results.read_summary(out_dir)
    host = superlink.rsplit(":", 1)[0].strip("[]")
    if host in (*LOOPBACK, "::1"):  # the ServerApp ran here: no results means it failed
        raise DeployError(f"the run ended without results; {run_log} ends:\n{tail(run_log)}")
    return None
