"""Train a round's train messages as one vectorised cohort (Flower glue, in process).

Each message is read and its injected faults played exactly as the ClientApp's train
handler does (:func:`fedsim.clients.app.prepare_train`); the clients that remain train
together with :func:`fedsim.clients.vectorized.train_cohort`, grouped by the global
weights and FedProx µ they received, and each gets the reply the ClientApp would send
(:func:`fedsim.clients.app.train_reply`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from flwr.app import Context, Message

from fedsim.clients import keys
from fedsim.clients.app import TrainTask, prepare_train, train_reply
from fedsim.clients.vectorized import train_cohort


def handle_train_cohort(batch: Sequence[tuple[Message, Context]]) -> list[Message | Exception]:
    """Replies to train messages, in order; a client that fails gives its exception.

    Parameters
    ----------
    batch
        ``(message, context)`` of every client, as the ClientApp would receive them.

    Returns
    -------
    list
        One reply per message, or the exception that client raised (an injected crash)
        for the engine to turn into an error reply.
    """
    out: list[Message | Exception | None] = [None] * len(batch)
    groups: dict[tuple[int, float], list[tuple[int, TrainTask]]] = {}
    for i, (msg, context) in enumerate(batch):
        try:
            task = prepare_train(msg, context)
        except Exception as exc:  # noqa: BLE001 - a failed client is a failed reply
            out[i] = exc
            continue
        record = msg.content.array_records[keys.ARRAYS]
        groups.setdefault((id(record), task.proximal_mu), []).append((i, task))
    for members in groups.values():
        tasks = [task for _, task in members]
        rt = tasks[0].runtime
        rt.load_incoming(tasks[0].record)
        splits = [rt.client_tensors(task.pid) for task in tasks]
        result = train_cohort(
            rt.model,
            [(split[0], split[1]) for split in splits],
            replace(rt.scenario.client, lr=tasks[0].learning_rate),  # this round's rate
            [task.generator for task in tasks],
            proximal_mu=tasks[0].proximal_mu,
            input_range=tasks[0].input_range,
        )
        for k, (i, task) in enumerate(members):
            trained = result.client_params(k)
            # Buffers (none in a vectorised model) keep the incoming values.
            state = {n: trained.get(n, v).detach().cpu().clone() for n, v in task.incoming.items()}
            out[i] = train_reply(task, state, result.results[k])
    return [r for r in out if r is not None]
