"""A real Flower deployment on loopback: one SuperLink, two SuperNodes, TLS, node auth.

The e2e test starts ``flower-superlink`` (TLS, ``--enable-supernode-auth``), registers
two SuperNode keys with ``flwr supernode register``, starts the two SuperNodes and a
third one whose key is not registered, runs two rounds of the default scenario with
``flwr run`` and checks the results against the local engine. Every process log lies
under ``tmp_path``; their tails are printed (shown by pytest when the test fails).
The other tests check certificates, keys and command lines without starting Flower.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
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
FAST = {"rounds": 2, "partition.num_clients": 2, "fairness.enabled": False}
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


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_deployment_with_tls_and_node_auth_matches_local_engine(deployment: Path) -> None:
    t0 = time.perf_counter()
    lap = {}
    deploy.make_certificates(deployment, ["127.0.0.1", "localhost"])
    keys = [deploy.make_node_key(deployment, f"node-{k}") for k in range(2)]
    intruder_key = deploy.make_node_key(deployment, "intruder")
    port, *runtime_ports = free_ports(4)
    superlink = f"127.0.0.1:{port}"
    deploy.start_superlink(deployment, host="127.0.0.1", port=port)
    lap["superlink"] = time.perf_counter() - t0
    # A SuperNode whose key was never registered: the SuperLink must refuse it.
    intruder = deploy.start_supernode(
        deployment,
        superlink,
        partition_id=0,
        num_partitions=2,
        key=intruder_key.private,
        runtime_port=runtime_ports[2],
        name="intruder",
    )
    data_dir = os.environ.get("FEDSIM_DATA_DIR")

    def register_and_start(k: int) -> int:
        node_id = deploy.register_node(deployment, keys[k].public, superlink)
        deploy.start_supernode(
            deployment,
            superlink,
            partition_id=k,
            num_partitions=2,
            data_dir=data_dir,
            runtime_port=runtime_ports[k],
        )
        return node_id

    with ThreadPoolExecutor(2) as pool:
        node_ids = set(pool.map(register_and_start, range(2)))
    lap["nodes"] = time.perf_counter() - t0

    scenario = resolve(DEFAULT, FAST)
    out = deployment / "results"
    summary = deploy.run_scenario(deployment, superlink, scenario.to_toml(), out, timeout_s=170)
    lap["run"] = time.perf_counter() - t0
    assert summary is not None
    assert summary["engine"] == "flower" and summary["rounds"] == 2

    # The unregistered SuperNode was turned away and never served the run.
    assert intruder.wait(timeout=30) != 0
    refusal = deploy.tail(deploy.Component.at(deployment, "intruder").log, 200)
    assert "Failed to activate SuperNode" in refusal
    listed = deploy.list_nodes(deployment, superlink)
    assert {int(n["node-id"]) for n in listed} == node_ids
    assert {n["status"] for n in listed} == {"online"}
    metrics = results.read_metrics(out)
    assert set(metrics.client) == {"server", "0", "1"}
    lap["checks"] = time.perf_counter() - t0

    # Same scenario and seed in the local engine: same metrics and weights.
    local = fedsim.run(DEFAULT, FAST, engine="local", out=deployment.parent / "local")
    weights = results.load_weights(out)
    assert sorted(weights) == sorted(local.arrays)
    for key, value in local.arrays.items():
        np.testing.assert_allclose(weights[key], value, rtol=0, atol=TOL, err_msg=key)
    for name, value in local.summary["final"].items():
        assert summary["final"][name] == pytest.approx(value, abs=TOL), name
    cols = ["round", "client", "metric"]
    a = metrics.sort_values(cols, ignore_index=True)
    b = local.metrics.sort_values(cols, ignore_index=True)
    assert a[cols].equals(b[cols])
    np.testing.assert_allclose(a.value, b.value, rtol=0, atol=TOL)
    lap["local"] = time.perf_counter() - t0
    print("timings (s since start): " + ", ".join(f"{k} {v:.1f}" for k, v in lap.items()))


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
