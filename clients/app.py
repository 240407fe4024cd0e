"""fedsim's Flower ClientApp: local training and evaluation on one client's split.

The same ``client_app`` runs in fedsim's local and Ray engines, in Flower's simulation
engine and on real SuperNodes. It reads the scenario from ``context.run_config``
(``scenario``: a path or TOML text; ``data-dir``) and its partition from
``context.node_config`` (``partition-id``). Data, model and tensors are cached per
process, so a worker serving many simulated clients loads the data once and reuses
one model instance (:mod:`fedsim.runtime` holds that cache).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeVar

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.clients import keys
from fedsim.clients.attacks import robust_accuracy
from fedsim.clients.faults import FaultPlan, InjectedCrash, corrupt_state, plan_faults
from fedsim.clients.training import (
    TrainResult,
    client_generator,
    evaluate,
    learning_rate,
    train,
)
from fedsim.engine._flower_compat import array_record
from fedsim.runtime import ClientRuntime, get_runtime
from fedsim.seeds import Stream

client_app = ClientApp()


def runtime_config(context: Context) -> dict:
    """The run config; a node's own ``data-dir`` (node config) takes precedence.

    On real SuperNodes each machine keeps the data where it likes
    (``fedsim deploy supernode --data-dir``).
    """
    node_dir = context.node_config.get("data-dir")
    return {**context.run_config, "data-dir": node_dir} if node_dir else dict(context.run_config)


R = TypeVar("R", ArrayRecord, ConfigRecord, MetricRecord)


def content_record(content: RecordDict, key: str, kind: type[R]) -> R:
    """``content[key]``, which must be a ``kind`` record (``KeyError`` otherwise).

    What ``content.array_records[key]`` (etc.) returns, without building Flower's
    synchronised per-type view of the whole RecordDict on every access.
    """
    record = content[key]
    if not isinstance(record, kind):
        raise KeyError(key)
    return record


@client_app.train()
def handle_train(msg: Message, context: Context) -> Message:
    """Train the received global model on this client's training split."""
    task = prepare_train(msg, context)
    rt = task.runtime
    rt.load_incoming(task.record)
    x, y, _, _ = rt.client_tensors(task.pid)
    result = train(
        rt.model,
        x,
        y,
        rt.scenario.client,
        generator=task.generator,
        proximal_mu=task.proximal_mu,
        input_range=task.input_range,
        z=task.sensitive,
        lr=task.learning_rate,
    )
    # A copy: the model is the next client's once this returns.
    state = {k: v.detach().to("cpu", copy=True) for k, v in rt.model.state_dict().items()}
    return train_reply(task, state, result)


@dataclass(frozen=True)
class TrainTask:
    """What one train message asks of one client (see :func:`prepare_train`)."""

    msg: Message
    context: Context
    runtime: ClientRuntime
    pid: int
    server_round: int
    plan: FaultPlan

    @property
    def record(self) -> ArrayRecord:
        """The global weights this message carries."""
        return content_record(self.msg.content, keys.ARRAYS, ArrayRecord)

    @property
    def incoming(self) -> dict[str, torch.Tensor]:
        """The global weights as a state dict (decoded once per record and process)."""
        return self.runtime.incoming_state(self.record)

    @property
    def generator(self) -> torch.Generator:
        """A fresh generator of this client's local training in this round."""
        return client_generator(
            self.runtime.scenario.seed, Stream.TRAIN, self.server_round, self.pid
        )

    @property
    def proximal_mu(self) -> float:
        config = content_record(self.msg.content, keys.CONFIG, ConfigRecord)
        return float(config.get(keys.PROXIMAL_MU, 0.0))  # type: ignore[arg-type]

    @property
    def learning_rate(self) -> float:
        """This round's learning rate (``client.lr_schedule``)."""
        sc = self.runtime.scenario
        return learning_rate(sc.client, self.server_round, sc.rounds)

    @property
    def sensitive(self) -> torch.Tensor | None:
        """The sensitive value of every training row, when a fairness penalty needs it."""
        if self.runtime.scenario.client.fairness.penalty == "none":
            return None
        z = self.runtime.data.clients[self.pid].z_train
        return torch.as_tensor(z).to(self.runtime.device)

    @property
    def input_range(self) -> tuple[float, float] | None:
        return (0.0, 1.0) if self.runtime.data.raw.kind == "image" else None


def prepare_train(msg: Message, context: Context) -> TrainTask:
    """Read a train message and play its injected faults (a crash raises, a delay sleeps)."""
    rt = get_runtime(runtime_config(context))
    sc = rt.scenario
    pid = int(context.node_config[keys.PARTITION_ID])  # type: ignore[arg-type]
    config = content_record(msg.content, keys.CONFIG, ConfigRecord)
    server_round = int(config.get(keys.SERVER_ROUND, 0))  # type: ignore[arg-type]
    plan = plan_faults(sc.faults, sc.seed, server_round, pid, rt.data.num_clients)
    if plan.crash:
        raise InjectedCrash(f"client {pid} crashed in round {server_round} (injected fault)")
    if plan.delay:
        time.sleep(plan.delay)
    return TrainTask(msg, context, rt, pid, server_round, plan)


def train_reply(task: TrainTask, state: dict[str, torch.Tensor], result: TrainResult) -> Message:
    """The reply to a train message: trained weights (faults applied) and metrics."""
    state = corrupt_state(state, task.incoming, task.plan, task.runtime.scenario.faults)
    task.context.state[keys.METRICS] = MetricRecord({"last-round": task.server_round})
    reply = RecordDict(
        {
            keys.ARRAYS: array_record({k: v.numpy() for k, v in state.items()}),
            keys.METRICS: MetricRecord(
                {
                    keys.NUM_EXAMPLES: result.num_examples,
                    keys.TRAIN_LOSS: result.mean_loss,
                    keys.PARTITION_ID: task.pid,
                }
            ),
        }
    )
    return Message(reply, reply_to=task.msg)


@client_app.evaluate()
def handle_evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this client's test split."""
    rt = get_runtime(runtime_config(context))
    sc = rt.scenario
    pid = int(context.node_config[keys.PARTITION_ID])  # type: ignore[arg-type]
    rt.load_incoming(content_record(msg.content, keys.ARRAYS, ArrayRecord))
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
            generator=client_generator(rt.scenario.seed, Stream.ROBUST_EVAL),
        )
    )
