"""Real Flower deployment: one SuperLink and SuperNodes on other machines, over TLS.

fedsim's ServerApp and ClientApp (:mod:`fedsim.flower_app`) run unchanged on
Flower 1.42's deployment runtime; this module prepares what that runtime needs and
builds the exact command lines (``flower-superlink``, ``flower-supernode``,
``flwr supernode register``, ``flwr run``), so a user can also type them by hand.

* **TLS.** A self-signed certificate authority signs the SuperLink's certificate,
  whose subject alternative names hold the given hosts plus ``127.0.0.1`` and
  ``localhost`` (the SuperLink's own SuperExec connects over loopback). SuperNodes
  and ``flwr`` verify the SuperLink with the CA certificate; Flower 1.42 has no
  client certificates (no mutual TLS): a SuperNode proves who it is with its key.
* **SuperNode authentication.** Each SuperNode owns a NIST P-384 key pair in
  OpenSSH format. The SuperLink runs with ``--enable-supernode-auth`` and accepts
  only nodes whose public key was registered through its Control API
  (``flwr supernode register KEY.pub``); any other node is refused at connection.
* **Isolation.** Every component gets its own ``FLWR_HOME`` inside the deployment
  folder (``~/.flwr`` is never read or written) and runtime dependency installation
  is off (fedsim is installed already on every machine).
* **Processes.** Components start in the background in sessions of their own, with
  their output in a log file and their pid in a pid file beside it. Stopping one
  sends SIGTERM to its pid, then SIGKILL, then stops what it started (SuperExec,
  ServerApp and ClientApp processes, found by their ``FLWR_HOME``).

Folder layout (``DIR``)::

    certs/ca.pem ca.key server.pem server.key   ca.key stays with whoever signs
    keys/NAME.key NAME.pub                      a SuperNode's key pair
    superlink/  supernode-K/  cli/              home/ (FLWR_HOME), log, pid
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsim import results
from fedsim.errors import FedsimError

log = logging.getLogger(__name__)

CONNECTION = "fedsim"  # the SuperLink connection's name in the CLI's config.toml
DEFAULT_PORT = 8000  # Flower 1.42 serves Fleet, Control and Runtime APIs on one port
DEFAULT_RUNTIME_PORT = 9094  # a SuperNode's local Runtime API (for its ClientApps)
LOOPBACK = ("127.0.0.1", "localhost")
CURVE = ec.SECP384R1()  # `flwr supernode register` accepts NIST curves only


class DeployError(FedsimError):
    """A deployment step failed in a way the user can fix (ports, keys, paths)."""


# ---------------------------------------------------------------- certificates, keys


@dataclass(frozen=True)
class Certificates:
    """Paths of the CA and SuperLink certificate files."""

    ca: Path
    ca_key: Path
    server: Path
    server_key: Path

    @classmethod
    def at(cls, folder: Path) -> Certificates:
        d = Path(folder) / "certs"
        return cls(d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key")


@dataclass(frozen=True)
class NodeKey:
    """Paths of a SuperNode's OpenSSH key pair."""

    private: Path
    public: Path

    @classmethod
    def at(cls, folder: Path, name: str) -> NodeKey:
        d = Path(folder) / "keys"
        return cls(d / f"{name}.key", d / f"{name}.pub")


def make_certificates(folder: Path, hosts: Iterable[str] = (), days: int = 365) -> Certificates:
    """Create a CA and a SuperLink certificate it signs, for ``hosts`` and loopback.

    Parameters
    ----------
    folder
        The deployment folder; files go to ``folder/certs``.
    hosts
        Host names and IP addresses by which SuperNodes and ``flwr`` reach the
        SuperLink; ``127.0.0.1`` and ``localhost`` are always added.
    days
        Validity of both certificates.

    Returns
    -------
    Certificates
        The written paths. Existing files are replaced.
    """
    certs = Certificates.at(folder)
    certs.ca.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # clock skew
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(CURVE)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsim deployment CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(CURVE)
    names = _subject_alt_names([*hosts, *LOOPBACK])
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsim superlink")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    _write_private(certs.ca_key, _pem_key(ca_key))
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(certs.server_key, _pem_key(key))
    certs.server.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return certs


def make_node_key(folder: Path, name: str) -> NodeKey:
    """Create a SuperNode key pair (P-384, OpenSSH format) in ``folder/keys``."""
    paths = NodeKey.at(folder, name)
    paths.private.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(CURVE)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_private(paths.private, private)
    paths.public.write_bytes(public + f" fedsim-{name}\n".encode())
    return paths


def _subject_alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip().strip("[]") for h in hosts if h.strip()):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# --------------------------------------------------------------------- command lines


def superlink_command(
    certs: Certificates, *, host: str = "0.0.0.0", port: int = DEFAULT_PORT, database: Path
) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication and a state database."""
    return [
        _executable("flower-superlink"),
        "--ssl-ca-certfile", str(certs.ca), "--ssl-certfile", str(certs.server),
        "--ssl-keyfile", str(certs.server_key),
        "--enable-supernode-auth",
        "--host", host, "--port", str(port),
        "--database", str(database),
        "--disable-runtime-dependency-installation",
    ]  # fmt: skip


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
        "--superlink", superlink, "--root-certificates", str(ca),
        "--auth-supernode-private-key", str(private_key),
        "--node-config", node_config(partition_id, num_partitions, data_dir),
        "--host", "127.0.0.1", "--port", str(runtime_port),
    ]  # fmt: skip


def register_command(public_key: Path) -> list[str]:
    """``flwr supernode register`` for the connection of :func:`write_cli_config`."""
    return [_executable("flwr"), "supernode", "register", str(public_key), CONNECTION,
            "--format", "json"]  # fmt: skip


def list_nodes_command() -> list[str]:
    return [_executable("flwr"), "supernode", "list", CONNECTION, "--format", "json"]


def run_command(project: Path, run_config: Path) -> list[str]:
    """``flwr run`` of fedsim's Flower App with a run-config file, streaming its log."""
    return [_executable("flwr"), "run", str(project), CONNECTION,
            "--run-config", str(run_config), "--stream"]  # fmt: skip


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


# ------------------------------------------------------------------------ processes


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


def start(component: Component, command: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in the background as ``component``; write its pid file.

    The process gets a session of its own (it outlives the command that started it
    and a Ctrl-C there), ``FLWR_HOME`` = ``component.home`` and its output goes to
    ``component.log``.
    """
    running = component.pid()
    if running is not None and _alive(running, component.home):
        raise DeployError(
            f"{component.name} already runs with pid {running} (pid file "
            f"{component.pid_file}); stop it first (fedsim deploy stop)"
        )
    component.home.mkdir(parents=True, exist_ok=True)
    with component.log.open("ab") as sink:
        proc = subprocess.Popen(
            list(command), env=deploy_env(component.home), cwd=component.folder,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    component.pid_file.write_text(f"{proc.pid}\n")
    log.info("started %s (pid %s): %s", component.name, proc.pid, " ".join(command))
    return proc


def stop(*targets: Component, grace_s: float = 5.0) -> None:
    """Stop components: SIGTERM to their pids, SIGKILL after ``grace_s``, then what they started.

    All targets are signalled at once. Only a process whose environment names the
    component's ``FLWR_HOME`` is signalled, so a stale pid file never hits an unrelated
    process that reused the pid. What a component started (SuperExec, ServerApp and
    ClientApp processes) carries its ``FLWR_HOME`` too and is stopped afterwards.
    """
    from fedsim.engine.flower import stop_processes

    running = {c: pid for c in targets if (pid := c.pid()) is not None and _alive(pid, c.home)}
    for pid in running.values():
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p, c.home) for c, p in running.items()):
        time.sleep(0.1)
    for component, pid in running.items():
        if _alive(pid, component.home):
            log.warning("%s (pid %s) ignored SIGTERM; killing it", component.name, pid)
            _signal(pid, signal.SIGKILL)
    for component in targets:
        stop_processes(component.home.resolve(), grace_s=grace_s)
        component.pid_file.unlink(missing_ok=True)


def components(deployment: Path) -> list[Component]:
    """The components of ``deployment`` that have a pid file."""
    root = Path(deployment).resolve()
    return [Component(p.parent) for p in sorted(root.glob("*/*.pid")) if p.stem == p.parent.name]


def stop_all(deployment: Path, grace_s: float = 5.0) -> list[str]:
    """Stop every component of ``deployment``, SuperNodes before the SuperLink.

    Returns the names of the components that had a pid file.
    """
    found = components(deployment)
    nodes = [c for c in found if c.name != "superlink"]
    stop(*nodes, grace_s=grace_s)  # they sign off from the SuperLink while it still runs
    stop(*[c for c in found if c.name == "superlink"], grace_s=grace_s)
    return [c.name for c in found]


def _alive(pid: int, home: Path) -> bool:
    """Whether ``pid`` is a live (not zombie) process of the component with ``home``.

    A zombie child is not reaped here: a caller holding its ``Popen`` keeps its status.
    """
    proc = Path("/proc") / str(pid)
    if not (Path("/proc") / "self" / "environ").exists():  # no /proc: trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        environ = (proc / "environ").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    marker = f"FLWR_HOME={Path(home).resolve()}".encode()
    return state != "Z" and marker in environ


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes] | None, log_file: Path,
                  timeout_s: float = 60.0) -> None:  # fmt: skip
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


# ------------------------------------------------------------------------ operations


def start_superlink(
    deployment: Path, *, host: str = "0.0.0.0", port: int = DEFAULT_PORT, timeout_s: float = 60
) -> subprocess.Popen[bytes]:
    """Start the SuperLink of ``deployment`` (its certificates must exist) and wait for it."""
    certs = _existing_certificates(deployment)
    component = Component.at(deployment, "superlink")
    component.folder.mkdir(parents=True, exist_ok=True)
    command = superlink_command(certs, host=host, port=port, database=component.folder / "state.db")
    proc = start(component, command)
    probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host.strip("[]")
    try:
        wait_for_port(probe, port, proc, component.log, timeout_s)
    except DeployError:
        stop(component)
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
) -> subprocess.Popen[bytes]:
    """Start a SuperNode serving partition ``partition_id`` of ``num_partitions``.

    ``key`` defaults to ``keys/node-<partition_id>.key``; ``name`` (the component's
    folder) to ``supernode-<partition_id>``.
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
            raise DeployError(f"{what} {path} does not exist; copy it here or create it "
                              f"(fedsim deploy certs / fedsim deploy keygen)")  # fmt: skip
    if data_dir:
        data_dir = Path(data_dir).expanduser().resolve()
    command = supernode_command(
        superlink, ca.resolve(), key.resolve(), partition_id=partition_id,
        num_partitions=num_partitions, data_dir=data_dir, runtime_port=runtime_port,
    )  # fmt: skip
    return start(Component.at(deployment, name or f"supernode-{partition_id}"), command)


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
    from fedsim.engine.flower import project_root

    cli = flwr_cli(deployment, superlink)
    rc_file = cli.folder / "run-config.toml"
    rc_file.write_text(tomli_w.dumps({
        "scenario": scenario_toml, "data-dir": str(data_dir or ""), "out-dir": str(out_dir),
    }))  # fmt: skip
    run_log = cli.folder / "flwr-run.log"
    with run_log.open("wb") as sink:
        proc = subprocess.Popen(
            run_command(project_root(), rc_file), env=deploy_env(cli.home), cwd=cli.folder,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
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
    command = [_executable("flwr"), "stop", found.group(1), CONNECTION]
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(
            command, env=deploy_env(cli.home), cwd=cli.folder, capture_output=True,
            timeout=60, check=False,
        )  # fmt: skip


def _run_cli(cli: Component, command: list[str], what: str) -> str:
    proc = subprocess.run(
        command, env=deploy_env(cli.home), cwd=cli.folder, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
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
    from fedsim import errors
    from fedsim.flower_app import ERROR

    for stale in (Path(out_dir) / ERROR, Path(out_dir) / results.SUMMARY):
        stale.unlink(missing_ok=True)  # from an earlier run into the same folder
    code = submit_run(
        deployment, superlink, scenario_toml, out_dir=out_dir, data_dir=data_dir,
        timeout_s=timeout_s,
    )  # fmt: skip
    error_file = Path(out_dir) / ERROR
    if error_file.is_file():
        error = json.loads(error_file.read_text("utf-8"))
        cls = getattr(errors, str(error.get("type")), None)
        if isinstance(cls, type) and issubclass(cls, FedsimError):
            raise cls(error["message"])
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
