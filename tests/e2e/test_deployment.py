"""A real Flower deployment on loopback: one SuperLink, two SuperNodes, TLS, node auth.

The e2e test starts ``flower-superlink`` (TLS, ``--enable-supernode-auth``), registers
two SuperNode keys with ``flwr supernode register``, starts the two SuperNodes and a
third one whose key is not registered, runs two rounds of the default scenario with
``flwr run`` and checks the results against the local engine. Every process log lies
under ``tmp_path``; their tails are printed (shown by pytest when the test fails).
The other tests check certificates, keys and command lines without starting Flower.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

import fedsim
from fedsim import deploy, results
from fedsim.engine.flower import free_ports
from fedsim.runner import resolve

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
PROC = Path("/proc")
TOL = 1e-5


def _flower_processes(root: Path) -> list[int]:
    """Live processes whose FLWR_HOME lies under ``root``."""
    marker = f"FLWR_HOME={root.resolve()}".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if state != "Z" and any(v.startswith(marker) for v in environ):
            found.append(int(entry.name))
    return found


def _log_tails(folder: Path) -> str:
    parts = []
    for log_file in sorted(folder.rglob("*.log")):
        parts.append(f"----- {log_file.relative_to(folder)} -----\n{deploy.tail(log_file, 60)}")
    return "\n".join(parts)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Path]:
    """A deployment folder whose processes are all stopped (and checked) afterwards."""
    assert (PROC / "self" / "environ").exists(), "these process checks need Linux's /proc"
    folder = tmp_path / "deploy"
    try:
        yield folder
    finally:
        t0 = time.perf_counter()
        stopped = deploy.stop_all(folder)
        print(f"stopped {stopped} in {time.perf_counter() - t0:.1f} s")
        print(_log_tails(folder))  # pytest shows it when the test fails
        assert not deploy.components(folder), "pid files remain"
        assert _flower_processes(folder) == [], "Flower processes outlived the deployment"


def _readme_commands() -> list[str]:
    """The ``fedsim deploy`` commands of the README's deployment section, in order."""
    text = (REPO / "README.md").read_text("utf-8")
    section = text.split("## Running on real machines (Flower deployment)", 1)[1]
    section = section.split("### Threat model", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    commands += re.findall(r"`(fedsim deploy [^`]+)`", section)
    order = ["certs", "superlink", "keygen", "register", "supernode", "run", "nodes", "stop"]
    found = [c for c in commands if c.startswith("fedsim deploy ")]
    return sorted(found, key=lambda c: order.index(c.split()[2]))


def _fedsim(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def _post(port: int, path: str, ca: Path) -> int:
    """HTTP status of a raw POST of ``path`` (sent as is: no URL normalisation)."""
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        conn.request("POST", path, body=b"", headers={"Content-Type": "application/protobuf"})
        return conn.getresponse().status
    finally:
        conn.close()


# What the README's run command sets (N = 2).
RUN_SETTINGS = {"partition.num_clients": 2, "rounds": 2, "round_timeout": 120}
CONTROL_PATHS = [
    "/v1/control/register-node",
    "/v1/control/start-run",
    "/v1/control/list-nodes",
    "/v1/runtime/create-task",
    "/v1/fleet/../control/start-run",
    "/v1/fleet/%2e%2e/control/start-run",
    "/v1/fleet/..%2fcontrol%2fregister-node",
    "/v1/fleet/register-node/../../control/register-node",
]


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_readme_deployment_commands_on_loopback(deployment: Path) -> None:
    """The README's deployment commands, literally; then an outsider tries the proxy."""
    t0 = time.perf_counter()
    link, hosts = deployment, [deployment.parent / f"host-{k}" for k in range(2)]
    public, local, *runtime = free_ports(5)
    out = deployment.parent / "results"
    data_dir = os.environ.get("FEDSIM_DATA_DIR", "")

    def literal(command: str, folder: Path, k: int | None = None) -> list[str]:
        for old, new in (
            ("~/fedsim-deploy", str(folder)),
            ("link.example.org", "127.0.0.1"),
            ("8000", str(public)),
            ("9093", str(local)),
            ("/srv/fedsim/runs/default", str(out)),
            ("/data/fedsim", data_dir),
        ):
            command = command.replace(old, new)
        command = re.sub(r"\bN\b", "2", command)
        if k is not None:
            command = re.sub(r"\bk\b", str(k), command)
        return shlex.split(command)[1:]

    commands = _readme_commands()
    assert [c.split()[2] for c in commands] == [
        "certs",
        "superlink",
        "keygen",
        "register",
        "supernode",
        "run",
        "nodes",
        "stop",
    ]
    outputs = {}
    for command in commands:
        verb = command.split()[2]
        if verb == "stop":
            break  # after the outsider's tries
        if verb in ("keygen", "supernode"):  # on each SuperNode host, with its own folder
            for k, host in enumerate(hosts):
                args = literal(command, host, k)
                if verb == "supernode":
                    args += ["--runtime-port", str(runtime[k])]  # two nodes on one machine
                    (host / "certs").mkdir(parents=True, exist_ok=True)
                    shutil.copy(link / "certs" / "ca.pem", host / "certs" / "ca.pem")
                result = _fedsim(*args)
                assert result.returncode == 0, (command, result.stderr)
                if verb == "keygen":  # the operator receives the .pub
                    (link / "keys").mkdir(parents=True, exist_ok=True)
                    shutil.copy(host / "keys" / f"node-{k}.pub", link / "keys")
            continue
        result = _fedsim(*literal(command, link))
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        outputs[verb] = result.stdout
    run_s = time.perf_counter() - t0
    summary = results.read_summary(out)
    assert summary["engine"] == "flower" and summary["rounds"] == 2
    assert summary["failed_nodes"] == [] and summary["failed_replies_total"] == 0
    assert (out / "frontier.json").is_file() and (out / "frontier.csv").is_file()
    assert set(results.read_metrics(out).client) >= {"server", "0", "1"}
    assert outputs["nodes"].count("online") == 2
    # Same scenario and seed in the local engine: same final weights.
    local_run = fedsim.run(DEFAULT, RUN_SETTINGS, engine="local", out=deployment.parent / "local")
    weights = results.load_weights(out)
    assert sorted(weights) == sorted(local_run.arrays)
    for key, value in local_run.arrays.items():
        np.testing.assert_allclose(weights[key], value, rtol=0, atol=TOL, err_msg=key)

    # The SuperLink listens on loopback only; the proxy is the only public listener.
    superlink = psutil.Process(deploy.Component.at(link, "superlink").pid())
    listening = {c.laddr for c in superlink.net_connections("tcp") if c.status == "LISTEN"}
    assert listening and {a.ip for a in listening} == {"127.0.0.1"}

    # A SuperNode with an unregistered key: fedsim deploy supernode fails, one line.
    intruder = deployment.parent / "intruder"
    assert _fedsim("deploy", "keygen", str(intruder), "node-0").returncode == 0
    (intruder / "certs").mkdir()
    shutil.copy(link / "certs" / "ca.pem", intruder / "certs")
    refused = _fedsim(*literal(commands[4], intruder, 0), "--runtime-port", str(free_ports(1)[0]))
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr.startswith("fedsim: error: supernode-0 was refused")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not deploy.components(intruder)

    # An outsider with ca.pem (and even a registered key) gets nothing from the proxy.
    ca = link / "certs" / "ca.pem"
    for key in (intruder / "keys" / "node-0.pub", hosts[0] / "keys" / "node-0.pub"):
        tried = _fedsim(
            "deploy", "register", str(intruder), str(key), "--superlink", f"127.0.0.1:{public}"
        )
        assert tried.returncode == 2 and "could not register" in tried.stderr
    stolen = deployment.parent / "outsider-results"
    run_args = [
        a.replace(f"127.0.0.1:{local}", f"127.0.0.1:{public}").replace(str(out), str(stolen))
        for a in literal(commands[5], intruder)
    ]
    tried = _fedsim(*run_args, "--timeout", "120")
    assert tried.returncode == 2 and not stolen.exists(), tried.stderr
    for path in CONTROL_PATHS:
        assert _post(public, path, ca) == 404, path
    assert _post(local, "/v1/control/list-nodes", ca) != 404  # the routes exist on loopback
    assert _post(local, "/v1/control/start-run", ca) != 404
    assert _post(public, "/v1/fleet/get-run", ca) != 404  # the Fleet API is forwarded
    listed = {int(n["node-id"]) for n in deploy.list_nodes(link, f"127.0.0.1:{local}")}
    assert len(listed) == 2  # no key was added through the proxy

    stop_folders = [link, *hosts]
    for folder in stop_folders:
        result = _fedsim(*literal(commands[-1], folder))
        assert result.returncode == 0, result.stderr
        assert not deploy.components(folder)
    print(
        f"README deployment: 2-round run done {run_s:.1f} s after start; "
        f"total {time.perf_counter() - t0:.1f} s"
    )


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_dead_supernode_fails_its_replies_and_the_run_finishes(deployment: Path) -> None:
    deploy.make_certificates(deployment, ["127.0.0.1"])
    public, local, *runtime = free_ports(4)
    deploy.start_superlink(deployment, host="127.0.0.1", port=public, local_port=local)
    control, fleet = f"127.0.0.1:{local}", f"127.0.0.1:{public}"
    for k in range(2):
        deploy.register_node(
            deployment, deploy.make_node_key(deployment, f"node-{k}").public, control
        )
    nodes = [
        deploy.start_supernode(
            deployment,
            fleet,
            partition_id=k,
            num_partitions=2,
            data_dir=os.environ.get("FEDSIM_DATA_DIR"),
            runtime_port=runtime[k],
        )
        for k in range(2)
    ]
    overrides = {
        "rounds": 3,
        "partition.num_clients": 2,
        "fairness.enabled": False,
        "round_timeout": 60,
    }
    scenario = resolve(DEFAULT, overrides)
    out = deployment / "results"
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            deploy.run_scenario, deployment, control, scenario.to_toml(), out, timeout_s=400
        )
        victim_log = deploy.Component.at(deployment, "supernode-1").log
        while deploy.tail(victim_log, 2000).count("Receiving: train message") < 2:
            assert not running.done(), running.result()
            time.sleep(0.2)
        victim = psutil.Process(nodes[1].pid)
        for proc in [*victim.children(recursive=True), victim]:  # the machine dies
            with contextlib.suppress(psutil.Error):
                proc.kill()
        killed_at = time.perf_counter() - t0
        summary = running.result()
    assert summary is not None and summary["rounds"] == 3
    failed = {(f["round"], f["phase"], f["partition_id"]) for f in summary["failed_nodes"]}
    assert (2, "train", 1) in failed
    assert {r for r, _, _ in failed} == {2, 3} and {p for _, _, p in failed} == {1}
    metrics = results.read_metrics(out)
    server = metrics[metrics.client == "server"].set_index(["round", "metric"]).value
    assert [server[(r, "train-failed-replies")] for r in (1, 2, 3)] == [0, 1, 1]
    assert [server[(r, "train-usable-replies")] for r in (1, 2, 3)] == [2, 1, 1]
    print(f"killed node 1 at {killed_at:.1f} s; run done at {time.perf_counter() - t0:.1f} s")


def test_certificates_name_the_hosts_and_chain_to_the_ca(tmp_path: Path) -> None:
    certs = deploy.make_certificates(tmp_path, ["10.0.0.5", "link.example.org", "[::1]"])
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"link.example.org", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "10.0.0.5",
        "127.0.0.1",
        "::1",
    }
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (certs.ca_key, certs.server_key):
        assert key.stat().st_mode & 0o077 == 0  # private keys: owner only


def test_node_keys_are_openssh_nist_ec_pairs(tmp_path: Path) -> None:
    key = deploy.make_node_key(tmp_path, "node-0")
    private = load_ssh_private_key(key.private.read_bytes(), None)
    public = load_ssh_public_key(key.public.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()
    assert key.private.stat().st_mode & 0o077 == 0


def test_command_lines(tmp_path: Path) -> None:
    certs = deploy.Certificates.at(tmp_path)
    link = deploy.superlink_command(certs, host="0.0.0.0", port=9000, database=tmp_path / "s.db")
    assert "--enable-supernode-auth" in link and "--insecure" not in link
    assert "--disable-runtime-dependency-installation" in link
    assert link[link.index("--ssl-ca-certfile") + 1] == str(certs.ca)
    node = deploy.supernode_command(
        "link.example.org:9000",
        certs.ca,
        tmp_path / "k",
        partition_id=1,
        num_partitions=3,
        data_dir="/data dir/x",
        runtime_port=9095,
    )
    assert node[node.index("--node-config") + 1] == (
        "partition-id=1 num-partitions=3 data-dir='/data dir/x'"
    )
    assert node[node.index("--superlink") + 1] == "link.example.org:9000"
    assert node[node.index("--port") + 1] == "9095" and "--insecure" not in node
    env = deploy.deploy_env(tmp_path / "home")
    assert env["FLWR_HOME"] == str((tmp_path / "home").resolve())
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"


def test_node_config_is_what_flower_parses(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    for name in ('odd "dir"', "it's here", "C:\\data", "a b=c"):
        text = deploy.node_config(2, 4, tmp_path / name)
        assert parse_config_args([text]) == {
            "partition-id": 2,
            "num-partitions": 4,
            "data-dir": str(tmp_path / name),
        }, text
    with pytest.raises(deploy.DeployError, match="--data-dir"):
        deploy.node_config(0, 1, 'it\'s "quoted"')


def test_cli_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedsim.cli import main

    def fedsim_cli(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(["deploy", *args])
        out, err = capsys.readouterr()
        return int(exit_info.value.code or 0), out, err

    code, _, err = fedsim_cli("certs", str(tmp_path), "--hosts", "127.0.0.1,link.example.org")
    assert code == 0, err
    assert (tmp_path / "certs" / "server.pem").is_file()
    code, _, err = fedsim_cli(
        "supernode",
        str(tmp_path),
        "--superlink",
        "127.0.0.1:9",
        "--partition-id",
        "0",
        "--num-partitions",
        "2",
    )
    assert code == 2 and err.startswith("fedsim: error: the SuperNode's private key")
    assert len(err.strip().splitlines()) == 1
    code, _, err = fedsim_cli(
        "supernode",
        str(tmp_path),
        "--superlink",
        "127.0.0.1:9",
        "--partition-id",
        "2",
        "--num-partitions",
        "2",
    )
    assert code == 2 and "--partition-id" in err
    code, out, _ = fedsim_cli("stop", str(tmp_path))
    assert code == 0 and out.strip() == "nothing was running"


def test_bad_deploy_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedsim.cli import main

    def fedsim_cli(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(["deploy", *args])
        err = capsys.readouterr().err
        return int(exit_info.value.code or 0), err

    folder = tmp_path / "dir"
    for args, expected in (
        (["certs", str(folder), "--days", "-5"], "--days"),
        (["certs", str(folder), "--hosts", "a b.example"], "--hosts"),
        (["keygen", str(folder), "../../x"], "key name"),
        (["keygen", str(folder), "node-0", ".."], "key name"),
    ):
        code, err = fedsim_cli(*args)
        assert code == 2 and err.startswith(f"fedsim: error: {expected}"), (args, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (folder / "certs").exists()
    code, err = fedsim_cli("certs", str(folder), "--hosts", "bücher.example")
    assert code == 0, err
    server = x509.load_pem_x509_certificate((folder / "certs" / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "xn--bcher-kva.example" in san.get_values_for_type(x509.DNSName)


IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open('ready', 'w').close(); time.sleep(600)"
)


def test_stop_kills_a_component_that_ignores_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    component = deploy.Component.at(tmp_path, "superlink")
    component.folder.mkdir(parents=True)
    proc = deploy.start(component, [sys.executable, "-c", IGNORES_SIGTERM])
    while not (component.folder / "ready").exists():
        assert proc.poll() is None
        time.sleep(0.05)
    t0 = time.perf_counter()
    assert deploy.stop_all(tmp_path, grace_s=1.0) == ["superlink"]
    proc.wait(timeout=10)  # gone (psutil may have reaped it: no exit status here)
    assert "superlink (pid" in caplog.text and "ignored SIGTERM" in caplog.text
    assert time.perf_counter() - t0 < 30
    assert not component.pid_file.exists()


def test_stop_leaves_an_unrelated_process_with_a_reused_pid(tmp_path: Path) -> None:
    component = deploy.Component.at(tmp_path, "supernode-0")
    component.folder.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        component.pid_file.write_text(f"{other.pid}\n")  # a stale pid file
        deploy.stop_all(tmp_path, grace_s=1.0)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_superlink_user_option(tmp_path: Path) -> None:
    """``--user``: as root the process runs as that user; otherwise a one-line refusal."""
    component = deploy.Component.at(Path(tempfile.mkdtemp(prefix="fedsim-user-")), "superlink")
    try:
        if os.geteuid() != 0:
            with pytest.raises(deploy.DeployError, match="only root"):
                deploy.start(component, ["sleep", "30"], user="nobody")
            return
        with pytest.raises(deploy.DeployError, match="no user named"):
            deploy.start(component, ["sleep", "30"], user="no-such-user-x")
        component.folder.parent.chmod(0o755)
        proc = deploy.start(component, ["sleep", "30"], user="nobody")
        assert psutil.Process(proc.pid).username() == "nobody"
        assert component.folder.stat().st_uid == psutil.Process(proc.pid).uids().real
        deploy.stop(component, grace_s=1)
        assert proc.wait(timeout=10) is not None
    finally:
        shutil.rmtree(component.folder.parent, ignore_errors=True)


def test_proxy_config_forwards_only_fleet_routes(tmp_path: Path) -> None:
    certs = deploy.Certificates.at(tmp_path)
    text = deploy.nginx_config(
        certs, tmp_path / "proxy", listen_host="0.0.0.0", listen_port=8000, superlink_port=9093
    )
    assert "listen 0.0.0.0:8000 ssl;" in text
    assert "proxy_pass https://127.0.0.1:9093$uri;" in text and "proxy_ssl_verify on;" in text
    assert "location / { return 404; }" in text
    routes = re.search(r"location ~ \^/v1/fleet/\(\?:([a-z|-]+)\)\$", text)
    assert routes is not None and set(routes.group(1).split("|")) == set(deploy.FLEET_ROUTES)
    assert "control" not in text and "runtime" not in text
    import flwr.supernode.fleet_http_client as client

    used = set(re.findall(r'"/v1/fleet/([a-z-]+)"', Path(client.__file__).read_text("utf-8")))
    assert used == set(deploy.FLEET_ROUTES)  # fails loudly when Flower's Fleet routes move
