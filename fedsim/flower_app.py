"""fedsim as a Flower App: the ServerApp and ClientApp that ``flwr run .`` starts.

``pyproject.toml`` points Flower at ``server_app`` and ``client_app`` below. The
ServerApp runs the very round loop of fedsim's own engines
(:func:`fedsim.engine.core.execute`) over the Grid that Flower's runtime hands it,
so a scenario moves between fedsim's engines, Flower's simulation runtime and real
SuperNodes unchanged.

Run config keys (``[tool.flwr.app.config]``):

``scenario``
    A scenario file (relative to the project) or the scenario's TOML text.
``data-dir``
    Dataset folder; empty: ``FEDSIM_DATA_DIR`` or the user cache.
``out-dir``
    When not empty, a results folder (as ``fedsim run --out`` writes) is written
    there at the end of the run. Give an absolute path: Flower starts the ServerApp
    in a working directory of its own.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim import results
from fedsim.clients.app import client_app
from fedsim.config import Scenario
from fedsim.engine.core import Execution, execute
from fedsim.errors import FedsimError
from fedsim.runtime import get_runtime, scenario_from_run_config
from fedsim.server_files import ARRAY_KEYS, ERROR, OUT_DIR, write_error
from fedsim.summary import make_summary

log = logging.getLogger(__name__)

server_app = ServerApp()

# ARRAY_KEYS, ERROR and OUT_DIR are owned by fedsim.server_files; re-exported for callers
# that still import them from here (fedsim.deploy.steps).
__all__ = ["ARRAY_KEYS", "ERROR", "OUT_DIR", "client_app", "server_app", "write_results"]


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the scenario named by the run config over Flower's Grid.

    A user error (:class:`~fedsim.errors.FedsimError`: bad scenario, missing data) is
    also written to ``out-dir`` as ``error.json`` (its class name and message) before
    it propagates, so that the process that started Flower can report it as such.
    """
    run_config = dict(context.run_config)
    out_dir = str(run_config.get(OUT_DIR, "") or "")
    try:
        scenario = replace(scenario_from_run_config(run_config), engine="flower")
        runtime = get_runtime(run_config)  # data metadata: node count, model shapes
        _check_federation_size(grid, runtime.data.num_clients)
        t0 = time.perf_counter()
        execution = execute(scenario, runtime.data, grid)
    except FedsimError as exc:
        if out_dir:
            write_error(Path(out_dir), exc)
        raise
    if out_dir:
        write_results(Path(out_dir), scenario, execution, time.perf_counter() - t0)
        log.info("results written to %s", out_dir)


def _check_federation_size(grid: Grid, num_clients: int) -> None:
    # A federation of the wrong size is no error on a real deployment (nodes come and
    # go), but in a simulation it either stalls the run or fails the extra nodes.
    num_nodes = len(list(grid.get_node_ids()))
    if num_nodes != num_clients:
        log.warning(
            "the scenario has %d clients (partitions) but %d nodes are connected: "
            "strategies wait for all %d, and nodes with partition-id >= %d fail; in "
            "Flower's simulation set the size with `flwr run . --federation-config "
            "num-supernodes=%d`",
            num_clients,
            num_nodes,
            num_clients,
            num_clients,
            num_clients,
        )


def write_results(out_dir: Path, scenario: Scenario, execution: Execution, wall: float) -> None:
    """Write a results folder for a run that :func:`execute` completed.

    Parameters
    ----------
    out_dir
        The results folder (created if missing).
    scenario
        The scenario that ran.
    execution
        What :func:`~fedsim.engine.core.execute` returned.
    wall
        Seconds the run took, for the summary.
    """
    arrays = {k: v.numpy() for k, v in execution.arrays.items()}
    frame = results.metrics_frame(execution.recorder.rows)
    summary = make_summary(scenario, frame, wall, execution.wall_time, execution.round_times)
    keys = json.dumps(list(arrays)).encode("utf-8")
    results.write_run(
        out_dir, scenario.to_toml(), frame, arrays, summary, extra_files={ARRAY_KEYS: keys}
    )
