"""Command lines of the Flower components, their environment and the CLI's config file.

Pure builders: nothing here starts a process, so a user can also type these command
lines by hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import tomli_w

from fedsim import results
from fedsim.deploy.certs import Certificates
from fedsim.deploy.errors import DeployError

CONNECTION = "fedsim"  # the SuperLink connection's name in the CLI's config.toml
DEFAULT_PORT = 8000  # the public Fleet API proxy (nginx, TLS) that SuperNodes connect to
# The SuperLink itself, on 127.0.0.1 only: Flower 1.42 serves Fleet, Control and Runtime
# APIs on this one port, so the Control API never leaves the host.
DEFAULT_LOCAL_PORT = 9093
DEFAULT_RUNTIME_PORT = 9094  # a SuperNode's local Runtime API (for its ClientApps)


def superlink_command(
    certs: Certificates, *, host: str = "0.0.0.0", port: int = DEFAULT_PORT, database: Path
) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication and a state database."""
    return [
        _executable("flower-superlink"),
        "--ssl-ca-certfile",
        str(certs.ca),
        "--ssl-certfile",
        str(certs.server),
        "--ssl-keyfile",
        str(certs.server_key),
        "--enable-supernode-auth",
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(database),
        "--disable-runtime-dependency-installation",
    ]


def node_config(partition_id: int, num_partitions: int, data_dir: str | Path | None) -> str:
    """The ``--node-config`` text: this node's partition and its local data folder."""
    text = f"partition-id={int(partition_id)} num-partitions={int(num_partitions)}"
    if data_dir:
        text += f" data-dir={_toml_string(str(data_dir))}"
    return text


def _toml_string(value: str) -> str:
    # Flower splits --node-config with a regex that knows '...' and "..." but no
    # escapes: a TOML literal string ('...', backslashes kept) fits any path without
    # a single quote; a basic string one without double quotes or backslashes.
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    if not any(c in value for c in '"\\\n'):
        return f'"{value}"'
    raise DeployError(
        f"--data-dir: Flower's --node-config cannot carry a path with both quote "
        f"characters (or a backslash and a single quote), got {value!r}; rename the folder"
    )


def supernode_command(
    superlink: str,
    ca: Path,
    private_key: Path,
    *,
    partition_id: int,
    num_partitions: int,
    data_dir: str | Path | None = None,
    runtime_port: int = DEFAULT_RUNTIME_PORT,
) -> list[str]:
    """``flower-supernode`` that authenticates with ``private_key`` over TLS."""
    return [
        _executable("flower-supernode"),
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca),
        "--auth-supernode-private-key",
        str(private_key),
        "--node-config",
        node_config(partition_id, num_partitions, data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
    ]


def register_command(public_key: Path) -> list[str]:
    """``flwr supernode register`` for the connection of :func:`write_cli_config`."""
    return [
        _executable("flwr"),
        "supernode",
        "register",
        str(public_key),
        CONNECTION,
        "--format",
        "json",
    ]


def list_nodes_command() -> list[str]:
    return [_executable("flwr"), "supernode", "list", CONNECTION, "--format", "json"]


def run_command(project: Path, run_config: Path) -> list[str]:
    """``flwr run`` of fedsim's Flower App with a run-config file, streaming its log."""
    return [
        _executable("flwr"),
        "run",
        str(project),
        CONNECTION,
        "--run-config",
        str(run_config),
        "--stream",
    ]


def stop_run_command(run_id: int | str) -> list[str]:
    """``flwr stop`` of run ``run_id`` on the connection of :func:`write_cli_config`."""
    return [_executable("flwr"), "stop", str(run_id), CONNECTION]


def write_cli_config(home: Path, superlink: str, ca: Path) -> Path:
    """A ``config.toml`` in ``home`` (FLWR_HOME) with one TLS connection to ``superlink``."""
    home.mkdir(parents=True, exist_ok=True)
    connection = {"address": superlink, "root-certificates": str(Path(ca).resolve())}
    path = home / "config.toml"
    text = tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: connection}})
    if not path.is_file() or path.read_text() != text:  # a running flwr may be reading it
        results.atomic_write_text(path, text)
    return path


def deploy_env(home: Path) -> dict[str, str]:
    """The environment of a Flower component whose ``FLWR_HOME`` is ``home``."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # Flower starts its helpers via PATH
    env.update(
        FLWR_HOME=str(Path(home).resolve()),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",  # fedsim is installed already
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
    )
    return env


def _executable(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() else name
