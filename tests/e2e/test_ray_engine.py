"""The Ray engine against the local engine, with failing clients, dying actors and a
``ray start --head`` cluster on loopback (the multi-machine recipe on one machine).

Ray starts once for the module (about 10–15 s on two loaded cores); every run then
starts its own actor pool.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

import fedsim
from fedsim.clients import keys
from fedsim.config import RayConfig
from fedsim.engine._flower_compat import set_message_id
from fedsim.engine.core import initial_arrays
from fedsim.engine.grid import InProcessGrid, make_contexts, task_identity
from fedsim.engine.ray import (
    ActorPool,
    ClientWorker,
    pool_size,
    ray_session,
    rebuild_message,
    worker_factory,
)
from fedsim.errors import FedsimError
from fedsim.runner import RunResult, resolve
from fedsim.runtime import get_runtime

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "default.toml"
SMALL = {"rounds": 3, "partition.num_clients": 6, "fairness.enabled": False}
FAULTY = {**SMALL, "faults.crash_prob": 0.5}


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One private local Ray instance for the module (the engine reuses it)."""
    with ray_session(""):
        yield


@pytest.fixture(scope="module")
def local_small() -> RunResult:
    return fedsim.run(SCENARIO, SMALL, engine="local")


def assert_same_run(ray_run: RunResult, local_run: RunResult) -> None:
    assert ray_run.summary["engine"] == "ray"
    assert ray_run.arrays.keys() == local_run.arrays.keys()
    for name, value in local_run.arrays.items():
        np.testing.assert_allclose(ray_run.arrays[name], value, rtol=0, atol=1e-6)
    assert ray_run.summary["final"]["eval-acc"] == local_run.summary["final"]["eval-acc"]


# ---------------------------------------------------------------------- pool sizing


@pytest.mark.parametrize(
    ("cfg", "available", "expected"),
    [
        (RayConfig(), {"CPU": 2.0}, 2),
        (RayConfig(num_cpus=0.1), {"CPU": 0.3}, 3),  # no float floor surprise
        (RayConfig(num_cpus=0.5), {"CPU": 64.0}, 6),  # capped at the clients
        (RayConfig(num_gpus=0.25), {"CPU": 16.0, "GPU": 1.0}, 4),  # 4 actors share a GPU
        (RayConfig(num_actors=3), {}, 3),
        (RayConfig(num_actors=50), {"CPU": 1.0}, 6),
    ],
)
def test_pool_size_from_resources(cfg: RayConfig, available: dict, expected: int) -> None:
    assert pool_size(cfg, 6, available) == expected


def test_pool_size_says_what_does_not_fit() -> None:
    with pytest.raises(FedsimError, match="num_gpus=0.5.*0 GPUs available"):
        pool_size(RayConfig(num_gpus=0.5), 6, {"CPU": 8.0})


def test_worker_rebuilds_messages_and_keeps_contexts() -> None:
    """The actor's logic in process: messages rebuilt exactly (a contract on Flower's
    Message API), replies in order, Contexts kept across calls."""
    sc = resolve(SCENARIO, SMALL)
    run_config = {"scenario": sc.to_toml(), "data-dir": ""}
    contexts = make_contexts(1, sc.partition.num_clients, run_config)
    worker = ClientWorker(run_config)
    worker.adopt({n: contexts[n] for n in (1001, 1003)})
    content = RecordDict(
        {
            keys.ARRAYS: initial_arrays(sc, get_runtime(run_config).data),
            keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 4}),
        }
    )
    with task_identity(1):
        msgs = [Message(content, n, "train", group_id="4") for n in (1003, 1001)]
    for i, msg in enumerate(msgs):
        set_message_id(msg, f"m{i}")
    assert all(rebuild_message(m.metadata, content).metadata == m.metadata for m in msgs)
    replies = worker.handle([(m.metadata, 0) for m in msgs], content)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0", "m1"]
    assert [r.metadata.src_node_id for r in replies] == [1003, 1001]
    assert worker.contexts[1001].state[keys.METRICS]["last-round"] == 4


def test_a_vectorising_worker_trains_its_clients_as_one_cohort(monkeypatch) -> None:
    """In process: each actor's train messages of a round form one vmap cohort, and the
    replies equal those of the per-client worker (allclose 1e-5)."""
    import fedsim.clients.cohort as cohort_module
    from fedsim.clients.vectorized import train_cohort

    sizes: list[tuple[int, bool]] = []

    def spy(model, cohort, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = train_cohort(model, cohort, *args, **kwargs)
        sizes.append((len(cohort), result.vectorized))
        return result

    monkeypatch.setattr(cohort_module, "train_cohort", spy)
    replies = {}
    for vectorize in (False, True):
        sc = resolve(SCENARIO, {**SMALL, "vectorize": vectorize}, engine="ray")
        run_config = {"scenario": sc.to_toml(), "data-dir": ""}
        contexts = make_contexts(1, sc.partition.num_clients, run_config)
        worker = ClientWorker(run_config)
        worker.adopt({n: contexts[n] for n in (1000, 1002, 1004)})
        content = RecordDict(
            {
                keys.ARRAYS: initial_arrays(sc, get_runtime(run_config).data),
                keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 2}),
            }
        )
        with task_identity(1):
            msgs = [Message(content, n, "train", group_id="2") for n in (1004, 1000, 1002)]
        for i, msg in enumerate(msgs):
            set_message_id(msg, f"m{i}")
        replies[vectorize] = worker.handle([(m.metadata, 0) for m in msgs], content)
    assert sizes == [(3, True)]  # only the vectorising worker, one cohort of its 3 clients
    for seq, vec in zip(replies[False], replies[True], strict=True):
        assert vec.metadata.reply_to_message_id == seq.metadata.reply_to_message_id
        seq_arrays, vec_arrays = seq.content[keys.ARRAYS], vec.content[keys.ARRAYS]
        for name, array in seq_arrays.items():
            np.testing.assert_allclose(vec_arrays[name].numpy(), array.numpy(), atol=1e-5)


# ---------------------------------------------------------------------- equivalence


@pytest.mark.e2e
def test_ray_engine_matches_local(ray_local: None, local_small: RunResult) -> None:
    assert_same_run(fedsim.run(SCENARIO, SMALL, engine="ray"), local_small)


@pytest.mark.e2e
def test_ray_vectorised_cohorts_match_local_sequential(
    ray_local: None, local_small: RunResult
) -> None:
    overrides = {**SMALL, "vectorize": True, "ray.num_actors": 2}  # cohorts of 3 per actor
    ray_run = fedsim.run(SCENARIO, overrides, engine="ray")
    assert ray_run.scenario.vectorize and ray_run.summary["engine"] == "ray"
    for name, value in local_small.arrays.items():
        np.testing.assert_allclose(ray_run.arrays[name], value, rtol=0, atol=1e-5)
    assert ray_run.summary["final"]["eval-acc"] == pytest.approx(
        local_small.summary["final"]["eval-acc"], abs=1e-6
    )


@pytest.mark.e2e
def test_crashing_clients_become_failed_replies(ray_local: None) -> None:
    local = fedsim.run(SCENARIO, FAULTY, engine="local").server_metrics()
    ray_run = fedsim.run(SCENARIO, FAULTY, engine="ray")
    failed = ray_run.server_metrics()["train-failed-replies"]
    assert list(failed.index) == [1, 2, 3]  # every round completed
    assert (failed > 0).any()
    assert failed.tolist() == local["train-failed-replies"].tolist()
    assert ray_run.summary["final"]["eval-acc"] == local["eval-acc"].iloc[-1]


# ---------------------------------------------------------------------- dying actors


def _round(grid: InProcessGrid, content: RecordDict, kind: str) -> dict[int, Message]:
    with task_identity(1):
        msgs = [Message(content, n, kind, group_id="1") for n in grid.get_node_ids()]
        return {r.metadata.src_node_id: r for r in grid.send_and_receive(msgs)}


@pytest.mark.e2e
def test_dead_actor_costs_only_its_messages(ray_local: None) -> None:
    import ray

    sc = resolve(
        SCENARIO,
        {
            **SMALL,
            "partition.num_clients": 4,
            "faults.straggler_prob": 1.0,
            "faults.straggler_delay": 1.0,
        },
    )
    run_config = {"scenario": sc.to_toml(), "data-dir": ""}
    content = RecordDict(
        {
            keys.ARRAYS: initial_arrays(sc, get_runtime(run_config).data),
            keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 1}),
        }
    )
    contexts = make_contexts(1, 4, run_config)
    with ActorPool(worker_factory(sc.ray, run_config), contexts, 2) as pool:
        grid = InProcessGrid(contexts, pool.handle)
        doomed = pool.slots[0].actor
        assert pool.slots[0].nodes == [1000, 1002]

        # Killed while training (each client sleeps 1 s first): its two replies fail.
        threading.Timer(0.5, ray.kill, (doomed,)).start()
        replies = _round(grid, content, "train")
        assert {n for n, r in replies.items() if r.has_error()} == {1000, 1002}
        assert "ActorDiedError" in replies[1000].error.reason
        assert pool.slots[0].actor is not doomed  # replaced...
        assert not any(r.has_error() for r in _round(grid, content, "evaluate").values())

        # ...unless no replacement can start: then its nodes move to the survivor.
        pool.start_actor = worker_factory(RayConfig(num_cpus=512), run_config)
        pool.ready_timeout = 2.0
        ray.kill(pool.slots[0].actor)
        replies = _round(grid, content, "evaluate")
        assert {n for n, r in replies.items() if r.has_error()} == {1000, 1002}
        assert len(pool.slots) == 1 and set(pool.owner.values()) == {0}
        assert not any(r.has_error() for r in _round(grid, content, "evaluate").values())


@pytest.mark.e2e
def test_actors_that_cannot_start_are_a_user_error(ray_local: None) -> None:
    sc = resolve(SCENARIO, SMALL)
    run_config = {"scenario": sc.to_toml(), "data-dir": ""}
    contexts = make_contexts(1, 6, run_config)
    too_big = worker_factory(RayConfig(num_cpus=512), run_config)
    with pytest.raises(FedsimError, match="none of 2 actors started.*GetTimeoutError"):
        ActorPool(too_big, contexts, 2, ready_timeout=1.0)


# ---------------------------------------------------------------------- a real cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ray_head() -> Iterator[str]:
    """``ray start --head --block`` on loopback; stopped by signalling that process.

    Not ``ray stop --force``: it kills every Ray process of the machine by name,
    including other test sessions'. ``--block`` ties the node's processes to the one
    we started, and its process group is ours to kill if it does not stop.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()  # the module's private instance; the engine must attach anew
    port, client_port, agent_port = _free_port(), _free_port(), _free_port()
    temp = Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))  # socket paths stay short
    ray_cli = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray_cli,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        f"--temp-dir={temp}",
    ]
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed:\n{(temp / 'head.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.e2e
def test_attaches_to_a_running_cluster(ray_head: str, local_small: RunResult) -> None:
    import ray

    result = fedsim.run(SCENARIO, {**SMALL, "ray.address": ray_head}, engine="ray")
    assert not ray.is_initialized()  # the engine disconnected; the cluster lives on
    assert _listening(int(ray_head.rpartition(":")[2]))
    assert_same_run(result, local_small)


def test_unreachable_cluster_is_a_user_error() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()  # else the engine would keep using that connection
    with pytest.raises(FedsimError, match="cannot attach to a Ray cluster"):
        with ray_session(f"127.0.0.1:{_free_port()}"):
            pass
