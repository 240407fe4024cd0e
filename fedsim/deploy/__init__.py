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
* **Only the Fleet API is public.** Flower 1.42 serves the Fleet, Control and Runtime
  APIs on one HTTPS port; the SuperLink binds 127.0.0.1 and an nginx proxy
  (:mod:`~fedsim.deploy.proxy`) on the public address forwards only the Fleet routes
  SuperNodes use, so holding ``ca.pem`` does not open the Control API (register keys,
  ``flwr run``). The operator uses the Control API on the SuperLink host or through an
  SSH tunnel.
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
    superlink/  proxy/  supernode-K/  cli/      home/ (FLWR_HOME), log, pid

Modules: :mod:`~fedsim.deploy.certs` (CA, SuperLink certificate, node key pairs),
:mod:`~fedsim.deploy.commands` (command lines, environment, the CLI's config file),
:mod:`~fedsim.deploy.processes` (start, stop, pid files, logs),
:mod:`~fedsim.deploy.proxy` (the nginx Fleet proxy),
:mod:`~fedsim.deploy.steps` (start components, register, list, run) and
:mod:`~fedsim.deploy.errors`; this package re-exports their public names.
"""

from __future__ import annotations

from fedsim.deploy.certs import (
    CURVE,
    LOOPBACK,
    Certificates,
    NodeKey,
    make_certificates,
    make_node_key,
)
from fedsim.deploy.commands import (
    CONNECTION,
    DEFAULT_LOCAL_PORT,
    DEFAULT_PORT,
    DEFAULT_RUNTIME_PORT,
    deploy_env,
    list_nodes_command,
    node_config,
    register_command,
    run_command,
    stop_run_command,
    superlink_command,
    supernode_command,
    write_cli_config,
)
from fedsim.deploy.errors import DeployError
from fedsim.deploy.processes import (
    Component,
    components,
    start,
    stop,
    stop_all,
    tail,
    wait_for_port,
)
from fedsim.deploy.proxy import FLEET_ROUTES, nginx_config
from fedsim.deploy.steps import (
    CONNECTED,
    flwr_cli,
    list_nodes,
    register_node,
    run_scenario,
    start_superlink,
    start_supernode,
    submit_run,
)

__all__ = [
    "CONNECTED",
    "CONNECTION",
    "DEFAULT_LOCAL_PORT",
    "FLEET_ROUTES",
    "nginx_config",
    "CURVE",
    "DEFAULT_PORT",
    "DEFAULT_RUNTIME_PORT",
    "LOOPBACK",
    "Certificates",
    "Component",
    "DeployError",
    "NodeKey",
    "components",
    "deploy_env",
    "flwr_cli",
    "list_nodes",
    "list_nodes_command",
    "make_certificates",
    "make_node_key",
    "node_config",
    "register_command",
    "register_node",
    "run_command",
    "run_scenario",
    "start",
    "start_superlink",
    "start_supernode",
    "stop",
    "stop_all",
    "stop_run_command",
    "submit_run",
    "superlink_command",
    "supernode_command",
    "tail",
    "wait_for_port",
    "write_cli_config",
]
