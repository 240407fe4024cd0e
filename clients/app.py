"""fedsim's Flower ClientApp: local training and evaluation on one client's split.

The same ``client_app`` runs in fedsim's local and Ray engines, in Flower's simulation
engine and on real SuperNodes. It reads the scenario from ``context.run_config``
(``scenario``: a path or TOML text; ``data-dir``) and its partition from
``context.node_config`` (``partition-id``). Data, model and tensors are cached per
process, so a worker serving many simulated clients loads the data once and reuses
one model instance.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fedsim.clients import keys
from fedsim.clients.faults import InjectedCrash, corrupt_state, plan_faults
from fedsim.clients.models import build_model
from fedsim.clients.training import (
    check_loss,
    check_optimizer,
    client_generator,
    evaluate,
    learning_rate,
    train,
)
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.config import Scenario, load_scenario, loads_scenario
from fedsim.data import FederatedData, build_federated

client_app = ClientApp()


@dataclass
class ClientRuntime:
    """Per-process state shared by every simulated client this process serves."""

    scenario: Scenario
    data: FederatedData
    model: torch.nn.Module
    device: torch.device
    tensors: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    _last_record: ArrayRecord | None = None
    _last_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def incoming_state(self, record: ArrayRecord) -> dict[str, torch.Tensor]:
        """The global weights of a message as a state dict, decoded once per record.

        Every client of a round receives the same ArrayRecord object (in process, or
        per Ray actor call); decoding its ``.npy`` payloads once instead of once per
        client removes most of the engine's per-client overhead. The state dict is
        only read (``load_state_dict`` copies it).
        """
        if record is not self._last_record:
            self._last_state = record.to_torch_state_dict()
            self._last_record = record
        return self._last_state

    def client_tensors(self, pid: int) -> tuple[torch.Tensor, ...]:
        if pid not in self.tensors:
            c = self.data.clients[pid]
            self.tensors[pid] = tuple(
                torch.as_tensor(a).to(self.device)
                for a in (c.x_train, c.y_train, c.x_test, c.y_test)
            )
        return self.tensors[pid]


_runtimes: dict[tuple[str, str], ClientRuntime] = {}
# A process serves one scenario at a time; keeping a couple bounds the memory of
# sweeps that run many scenarios in one process (each holds its dataset and model).
_MAX_RUNTIMES = 2
_lock = threading.Lock()


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def scenario_from_run_config(run_config: dict) -> Scenario:
    """The scenario named by a run config: TOML text, or a path to a TOML file."""
    source = str(run_config.get("scenario", "scenarios/default.toml"))
    if "\n" in source or "=" in source:
        return loads_scenario(source)
    path = Path(source)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parent.parent / source  # the project root
    return load_scenario(path)


def get_runtime(run_config: dict) -> ClientRuntime:
    """Build (once per process and scenario) the data, model and device."""
    source = str(run_config.get("scenario", ""))
    data_dir = str(run_config.get("data-dir", "") or "")
    key = (hashlib.sha256(source.encode()).hexdigest(), data_dir)
    with _lock:
        if key not in _runtimes:
            scenario = scenario_from_run_config(run_config)
            if scenario.threads:
                torch.set_num_threads(scenario.threads)
            data = build_federated(
                scenario.data,
                scenario.partition,
                scenario.seed,
                data_dir or None,
                scenario.evaluation,
            )
            device = resolve_device(scenario.device)
            model = build_model(
                scenario.model.name,
                data.raw.input_shape,
                data.raw.num_classes,
                scenario.model.hidden,
                scenario.seed,
                options=scenario.model.options,
            ).to(device)
            check_loss(scenario.client.loss, data.raw.num_classes)
            check_optimizer(scenario.client)
            _runtimes[key] = ClientRuntime(scenario, data, model, device)
            while len(_runtimes) > _MAX_RUNTIMES:
                del _runtimes[next(iter(_runtimes))]  # the oldest (insertion order)
        return _runtimes[key]


def runtime_config(context: Context) -> dict:
    """The run config; a node's own ``data-dir`` (node config) takes precedence.

    On real SuperNodes each machine keeps the data where it likes
    (``fedsim deploy supernode --data-dir``).
    """
    node_dir = context.node_config.get("data-dir")
    return {**context.run_config, "data-dir": node_dir} if node_dir else dict(context.run_config)


@client_app.train()
def handle_train(msg: Message, context: Context) -> Message:
    """Train the received global model on this client's training split."""
    rt = get_runtime(runtime_config(context))
    sc = rt.scenario
    pid = int(context.node_config[keys.PARTITION_ID])  # type: ignore[arg-type]
    config = msg.content.config_records[keys.CONFIG]
    server_round = int(config.get(keys.SERVER_ROUND, 0))  # type: ignore[arg-type]
    plan = plan_faults(sc.faults, sc.seed, server_round, pid, rt.data.num_clients)
    if plan.crash:
        raise InjectedCrash(f"client {pid} crashed in round {server_round} (injected fault)")
    if plan.delay:
        time.sleep(plan.delay)
    incoming = rt.incoming_state(msg.content.array_records[keys.ARRAYS])
    rt.model.load_state_dict(incoming)
    x, y, _, _ = rt.client_tensors(pid)
    result = train(
        rt.model,
        x,
        y,
        sc.client,
        generator=client_generator(sc.seed, 5, server_round, pid),
        proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),  # type: ignore[arg-type]
        input_range=(0.0, 1.0) if rt.data.raw.kind == "image" else None,
        lr=learning_rate(sc.client, server_round, sc.rounds),
    )
    state = {k: v.detach().cpu() for k, v in rt.model.state_dict().items()}
    state = corrupt_state(state, incoming, plan, sc.faults)
    context.state[keys.METRICS] = MetricRecord({"last-round": server_round})
    reply = RecordDict(
        {
            keys.ARRAYS: ArrayRecord(state),
            keys.METRICS: MetricRecord(
                {
                    keys.NUM_EXAMPLES: result.num_examples,
                    keys.TRAIN_LOSS: result.mean_loss,
                    keys.PARTITION_ID: pid,
                }
            ),
        }
    )
    return Message(reply, reply_to=msg)


@client_app.evaluate()
def handle_evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this client's test split."""
    rt = get_runtime(runtime_config(context))
    sc = rt.scenario
    pid = int(context.node_config[keys.PARTITION_ID])  # type: ignore[arg-type]
    rt.model.load_state_dict(rt.incoming_state(msg.content.array_records[keys.ARRAYS]))
    _, _, x, y = rt.client_tensors(pid)
    raw = rt.data.raw
    res = evaluate(rt.model, x, y, rt.data.clients[pid].z_test, raw.num_groups, raw.num_classes)
    metrics: dict[str, int | float | list[int] | list[float]] = {
        keys.NUM_EXAMPLES: res.num_examples,
        keys.EVAL_LOSS: res.loss,
        keys.EVAL_ACC: res.accuracy,
        keys.PARTITION_ID: pid,
        keys.NUM_GROUPS: raw.num_groups,
        keys.NUM_CLASSES: raw.num_classes,
        keys.FAIR_COUNTS: res.counts.reshape(-1).tolist(),
    }
    if sc.client.robust_eval or sc.client.loss.adv_nu > 0:
        metrics[keys.ROBUST_ACC] = _robust_accuracy(rt, x, y)
    reply = RecordDict({keys.METRICS: MetricRecord(metrics)})
    return Message(reply, reply_to=msg)


def _robust_accuracy(rt: ClientRuntime, x: torch.Tensor, y: torch.Tensor) -> float:
    from fedsim.clients.attacks import robust_accuracy

    cfg = rt.scenario.client.loss
    clamp = (0.0, 1.0) if rt.data.raw.kind == "image" else None
    return float(
        robust_accuracy(
            rt.model,
            x,
            y,
            radius=cfg.adv_radius,
            steps=max(cfg.adv_steps, 10),
            step_size=cfg.adv_step_size,
            norm=cfg.adv_norm,
            clamp=clamp,
            generator=client_generator(rt.scenario.seed, 6),
        )
    )
