"""Round deadline: a node that dies mid-run counts as failed replies, the run finishes.

A node "dies" in round 2 of 3: from then on the grid gets no reply from it (as when a
SuperNode is SIGKILLed after pulling its message) and, like Flower's SuperLink once the
heartbeat patience is over, stops listing it. Before the deadline wrapper, the run
waited in Flower's node sampling for the missing node forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Error, Message

from fedsim.clients.app import client_app, get_runtime
from fedsim.engine._flower_compat import set_message_id, set_source_node
from fedsim.engine.core import execute
from fedsim.engine.grid import InProcessGrid, local_handler, make_contexts, task_identity
from fedsim.runner import resolve

DEFAULT = Path(__file__).resolve().parents[2] / "scenarios" / "default.toml"
DEAD = 1001  # node of partition 1 (make_contexts: 1000 + partition)


class DyingGrid(InProcessGrid):
    """Node ``DEAD`` replies until round ``dies_in`` starts, then never again."""

    def __init__(self, *args: object, dies_in: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.dies_in = dies_in
        self.round = 0

    def get_node_ids(self) -> Iterable[int]:
        nodes = list(super().get_node_ids())
        return [n for n in nodes if n != DEAD] if self.round > self.dies_in else nodes

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        if batch and batch[0].metadata.message_type.startswith("train"):
            self.round += 1  # one train batch per round
        dead = self.round >= self.dies_in
        alive = [m for m in batch if not (dead and m.metadata.dst_node_id == DEAD)]
        ids = list(super().push_messages(alive))
        for msg in batch:
            if msg not in alive:  # pushed, never answered
                set_message_id(msg, f"lost-{msg.metadata.dst_node_id}")
        return ids + [m.metadata.message_id for m in batch if m not in alive]


@pytest.mark.timeout(120)
def test_dead_node_counts_as_failed_replies_and_the_run_finishes() -> None:
    scenario = resolve(
        DEFAULT,
        {"rounds": 3, "partition.num_clients": 2, "fairness.enabled": False, "round_timeout": 5},
    )
    run_config = {"scenario": scenario.to_toml(), "data-dir": ""}
    data = get_runtime(run_config).data
    contexts = make_contexts(1, 2, run_config)
    grid = DyingGrid(contexts, local_handler(client_app, contexts), run_id=1, dies_in=2)
    with task_identity(1):
        execution = execute(scenario, data, grid)

    failed = [(f.server_round, f.phase, f.node_id, f.partition_id) for f in execution.failed]
    expected = [(r, phase, DEAD, 1) for r in (2, 3) for phase in ("train", "evaluate")]
    assert failed == expected
    server = {(r, m): v for r, c, m, v in execution.recorder.rows if c == "server"}
    assert [server[(r, "train-failed-replies")] for r in (1, 2, 3)] == [0, 1, 1]
    assert [server[(r, "eval-failed-replies")] for r in (1, 2, 3)] == [0, 1, 1]
    assert [server[(r, "train-usable-replies")] for r in (1, 2, 3)] == [2, 1, 1]
    assert execution.failed[0].to_dict()["reason"].startswith("no reply within")


@pytest.mark.timeout(120)
def test_server_app_results_hold_frontier_and_failed_nodes(tmp_path: Path) -> None:
    """The ServerApp's results folder: frontier.* (fairness.bounds) and who failed when."""
    from fedsim import results
    from fedsim.engine.core import RunRecorder, build_stack
    from fedsim.flower_app import write_results

    scenario = resolve(
        DEFAULT, {"rounds": 2, "partition.num_clients": 2, "fairness.bounds_grid": 2}
    )
    assert scenario.fairness.enabled and scenario.fairness.bounds
    run_config = {"scenario": scenario.to_toml(), "data-dir": ""}
    data = get_runtime(run_config).data
    contexts = make_contexts(1, 2, run_config)
    grid = DyingGrid(contexts, local_handler(client_app, contexts), run_id=1, dies_in=2)
    recorder = RunRecorder()
    stack = build_stack(scenario, data, recorder)
    with task_identity(1):
        execution = execute(scenario, data, grid, recorder=recorder, stack=stack)
    write_results(tmp_path, scenario, execution, 1.0, stack[0].inner, run_config)

    assert (tmp_path / "frontier.csv").is_file() and (tmp_path / "frontier.json").is_file()
    summary = results.read_summary(tmp_path)
    assert [(f["round"], f["phase"], f["partition_id"]) for f in summary["failed_nodes"]] == [
        (2, "train", 1),
        (2, "evaluate", 1),
    ]
    assert summary["failed_replies_total"] == 2


SUPERLINK = 1  # the source of the error replies Flower's SuperLink makes itself


class UnavailableGrid(DyingGrid):
    """From round ``dies_in`` on, the SuperLink answers for node ``DEAD`` at once with a
    "node unavailable" error reply whose source is the SuperLink, as Flower 1.42 does."""

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        ids = list(super().push_messages(batch))
        for msg in batch:
            if msg.metadata.message_id.startswith("lost-"):
                error = Message(Error(code=1, reason="Node Unavailable"), reply_to=msg)
                set_source_node(error, SUPERLINK)
                self._replies[msg.metadata.message_id] = error
        return ids


@pytest.mark.timeout(120)
def test_superlink_error_reply_counts_once_for_the_node_it_was_sent_to() -> None:
    scenario = resolve(
        DEFAULT,
        {"rounds": 3, "partition.num_clients": 2, "fairness.enabled": False, "round_timeout": 60},
    )
    run_config = {"scenario": scenario.to_toml(), "data-dir": ""}
    data = get_runtime(run_config).data
    contexts = make_contexts(1, 2, run_config)
    grid = UnavailableGrid(contexts, local_handler(client_app, contexts), run_id=1, dies_in=2)
    with task_identity(1):
        execution = execute(scenario, data, grid)

    failed = [(f.server_round, f.phase, f.node_id, f.partition_id) for f in execution.failed]
    assert failed == [(r, phase, DEAD, 1) for r in (2, 3) for phase in ("train", "evaluate")]
    assert all(f.reason == "Node Unavailable" for f in execution.failed)  # no timeout waited
    server = {(r, m): v for r, c, m, v in execution.recorder.rows if c == "server"}
    assert [server[(r, "train-failed-replies")] for r in (1, 2, 3)] == [0, 1, 1]
