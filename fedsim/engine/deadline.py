"""Round deadline: a node that does not reply in time counts as a failed reply.

Flower's ``Strategy.start`` waits ``timeout`` seconds for the replies of each phase and
hands on whatever arrived; a node that died after pulling its message (SIGKILL, power
loss) sends no error reply, so it would simply vanish from the round. :class:`Deadline`
wraps the strategy stack (outside the reply screening) and turns each missing reply
into an error reply, which the screening counts as ``train-failed-replies`` /
``eval-failed-replies``; it also keeps which node failed in which round and why
(:attr:`Deadline.failed`, for the run's summary).

A dead node also drops out of ``grid.get_node_ids()`` once the SuperLink's heartbeat
patience runs out, and Flower's node sampling then waits for it forever (fedsim's
strategies ask for every node). The grid handed to the inner strategy therefore keeps
listing every node seen in this run: messages to a node that is gone come back at once
as Flower's "node unavailable" error replies, and the run finishes with the survivors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord
from flwr.serverapp import Grid

from fedsim.clients import keys
from fedsim.strategies.records import records_of
from fedsim.strategies.wrapper import StrategyWrapper

log = logging.getLogger(__name__)

NO_REPLY = 110  # error code of a synthesised reply (Flower's own codes are below 100)


@dataclass(frozen=True)
class FailedReply:
    """A node whose reply failed: none within the round timeout, or an error reply."""

    server_round: int
    phase: str  # "train" or "evaluate"
    node_id: int
    partition_id: int | None  # from the node's earlier replies; None if it never replied
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.server_round,
            "phase": self.phase,
            "node_id": self.node_id,
            "partition_id": self.partition_id,
            "reason": self.reason,
        }


class Deadline(StrategyWrapper):
    """Count replies that did not arrive within ``timeout`` seconds as failed.

    Parameters
    ----------
    inner
        The strategy stack (its reply screening counts the synthesised error replies).
    timeout
        The round timeout given to ``Strategy.start``, for the log and error text.
    """

    def __init__(self, inner: Any, timeout: float) -> None:
        super().__init__(inner)
        self.timeout = timeout
        self.failed: list[FailedReply] = []
        self._sent: list[Message] = []
        self._partitions: dict[int, int] = {}
        self._seen: set[int] = set()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = list(
            self.inner.configure_train(server_round, arrays, config, self._grid(grid))
        )
        return self._sent

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        grid = self._grid(grid)
        self._sent = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        return self._sent

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(
            server_round, self._complete(server_round, "train", replies)
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(
            server_round, self._complete(server_round, "evaluate", replies)
        )

    def _fail(self, failed: FailedReply) -> None:
        self.failed.append(failed)
        log.warning(
            "round %d: node %d (partition %s) failed its %s reply: %s; counted as a failed reply",
            failed.server_round,
            failed.node_id,
            failed.partition_id,
            failed.phase,
            failed.reason,
        )

    def _grid(self, grid: Grid) -> Grid:
        return _RememberingGrid(grid, self._seen)

    def _complete(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        """``replies`` plus an error reply for every message sent that got none."""
        replies = list(replies)
        # The node a reply answers for is the one its message went to: an error reply
        # made by the SuperLink ("node unavailable") has the SuperLink as its source.
        destination = {sent.metadata.message_id: sent.metadata.dst_node_id for sent in self._sent}

        def node_of(msg: Message) -> int:
            return destination.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)

        answered = {node_of(msg) for msg in replies}
        for msg in replies:
            node = node_of(msg)
            if msg.has_error():
                reason = str(msg.error.reason or f"error code {msg.error.code}")
                self._fail(
                    FailedReply(server_round, phase, node, self._partitions.get(node), reason)
                )
            elif len(found := records_of(msg.content, MetricRecord)) == 1:
                metrics = found[0]
                partition = metrics.get(keys.PARTITION_ID)
                if isinstance(partition, int | float):
                    self._partitions[node] = int(partition)
        for sent in self._sent:
            node = sent.metadata.dst_node_id
            if node in answered:
                continue
            reason = f"no reply within the round timeout ({self.timeout:g} s)"
            self._fail(FailedReply(server_round, phase, node, self._partitions.get(node), reason))
            replies.append(Message(Error(code=NO_REPLY, reason=reason), reply_to=sent))
        self._sent = []
        return replies


class _RememberingGrid(Grid):
    """A Grid that keeps listing every node it has listed once (see the module notes)."""

    def __init__(self, grid: Grid, seen: set[int]) -> None:
        self._grid = grid
        self._seen = seen

    def get_node_ids(self) -> Iterable[int]:
        self._seen.update(self._grid.get_node_ids())
        return sorted(self._seen)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    # Grid's abstract methods: delegated.
    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)
