"""Local engine: Flower's strategy round loop, the ClientApp called in this process."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord

from fedsim.clients.app import client_app
from fedsim.config import Scenario
from fedsim.engine.core import Execution, RoundHook, RunRecorder, execute
from fedsim.engine.grid import (
    InProcessGrid,
    cohort_handler,
    local_handler,
    make_contexts,
    task_identity,
)
from fedsim.runtime import get_runtime


def run_local(
    scenario: Scenario,
    run_config: dict,
    *,
    run_id: int = 1,
    on_round: RoundHook | None = None,
    start_round: int = 0,
    arrays: ArrayRecord | None = None,
    recorder: RunRecorder | None = None,
    stack: tuple[Any, Any] | None = None,
) -> Execution:
    """Run the scenario with every client handled in this process.

    The data and the one model instance are built once (shared with the ClientApp's
    per-process cache); each simulated node keeps its own persistent ``Context``.
    """
    runtime = get_runtime(run_config)
    contexts = make_contexts(run_id, runtime.data.num_clients, run_config)
    handler = local_handler(client_app, contexts)
    if scenario.vectorize:
        handler = cohort_handler(handler, contexts, scenario)
    grid = InProcessGrid(contexts, handler, run_id=run_id)
    with task_identity(run_id):
        return execute(
            scenario,
            runtime.data,
            grid,
            on_round=on_round,
            start_round=start_round,
            arrays=arrays,
            recorder=recorder,
            stack=stack,
        )
