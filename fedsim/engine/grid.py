"""An in-process Flower ``Grid``: messages go straight to the ClientApp, no polling.

Flower's strategies run their round loop (``Strategy.start``) over any ``Grid``.
:class:`InProcessGrid` delivers each message by calling a handler synchronously and
returns the replies at once. A handler that raises becomes an error reply, exactly
as Flower's runtimes report a failed ClientApp, so the strategy sees it and the run
goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsim.config import Scenario
from fedsim.engine._flower_compat import (
    SUPERLINK_NODE_ID,
    Run,
    empty_run,
    set_message_id,
    task_identity,
)

log = logging.getLogger(__name__)

# Re-exported: the engines build messages inside task_identity(); the ServerApp's node id.
__all__ = [
    "SUPERLINK_NODE_ID",
    "InProcessGrid",
    "call_client",
    "cohort_handler",
    "error_reply",
    "local_handler",
    "make_contexts",
    "task_identity",
]

CLIENT_ERROR_CODE = 1  # flwr's ErrorCode.CLIENT_APP_RAISED_EXCEPTION

Handler = Callable[[list[Message]], list[Message]]


def error_reply(msg: Message, exc: BaseException) -> Message:
    """The reply Flower's runtimes send when a ClientApp raises."""
    reason = f"{type(exc).__name__}: {exc}"
    return Message(Error(code=CLIENT_ERROR_CODE, reason=reason), reply_to=msg)


def make_contexts(run_id: int, num_nodes: int, run_config: dict) -> dict[int, Context]:
    """One persistent Context per simulated node; node ids are ``1000 + partition``."""
    return {
        1000 + pid: Context(
            run_id=run_id,
            node_id=1000 + pid,
            node_config={"partition-id": pid, "num-partitions": num_nodes},
            state=RecordDict(),
            run_config=dict(run_config),
        )
        for pid in range(num_nodes)
    }


def call_client(
    app: Callable[[Message, Context], Message], msg: Message, context: Context
) -> Message:
    """Run the ClientApp on one message; an exception becomes an error reply."""
    try:
        return app(msg, context)
    except Exception as exc:  # noqa: BLE001 - any client failure is a failed reply
        log.info("client on node %d failed: %s", msg.metadata.dst_node_id, exc)
        return error_reply(msg, exc)


class InProcessGrid(Grid):
    """A Grid whose messages are handled by ``handler`` in this process.

    Parameters
    ----------
    node_ids
        The simulated nodes.
    handler
        Takes the round's messages (ids set) and returns one reply per message.
    run_id
        The run id stamped on messages.
    """

    def __init__(self, node_ids: Iterable[int], handler: Handler, run_id: int = 1) -> None:
        self._node_ids = list(node_ids)
        self._handler = handler
        self._run = empty_run(run_id)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        for msg in batch:
            set_message_id(msg, uuid4().hex)
        for reply in self._handler(batch):
            self._replies[reply.metadata.reply_to_message_id] = reply
        return [m.metadata.message_id for m in batch]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))


def local_handler(
    app: Callable[[Message, Context], Message], contexts: dict[int, Context]
) -> Handler:
    """Handle messages one after another in this process."""

    def handle(batch: list[Message]) -> list[Message]:
        return [call_client(app, m, contexts[m.metadata.dst_node_id]) for m in batch]

    return handle


def cohort_handler(handler: Handler, contexts: dict[int, Context], scenario: Scenario) -> Handler:
    """Train a batch of train messages as one vectorised cohort; the rest via ``handler``.

    Used by the local engine (all of a round's clients) and by each Ray actor (the
    clients it serves). Settings the cohort path does not implement leave ``handler``
    as it is, with a warning.
    """
    # Imported here: torch.func and the cohort code load only for vectorised runs.
    from fedsim.clients.cohort import handle_train_cohort
    from fedsim.clients.vectorized import unsupported_settings  # torch.func: start-up

    reason = unsupported_settings(scenario.client)
    if reason is not None:
        log.warning("vectorize: training each client on its own: %s", reason)
        return handler

    def handle(batch: list[Message]) -> list[Message]:
        if not batch or any(m.metadata.message_type != MessageType.TRAIN for m in batch):
            return handler(batch)
        pairs = [(m, contexts[m.metadata.dst_node_id]) for m in batch]
        replies = handle_train_cohort(pairs)
        return [
            r if isinstance(r, Message) else error_reply(m, r)
            for m, r in zip(batch, replies, strict=True)
        ]

    return handle
