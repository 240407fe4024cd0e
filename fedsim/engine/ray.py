"""Ray engine: Flower's strategy round loop, the ClientApp run by a pool of Ray actors.

Design
------
* **Pool.** ``num_actors`` actors (``ray.num_actors``, or as many as the cluster's
  available CPUs — and GPUs when ``ray.num_gpus`` > 0 — fit at ``ray.num_cpus`` /
  ``ray.num_gpus`` each, capped at the number of clients). Each actor is one process
  with one ClientApp runtime (data and one model instance, built once by
  :func:`fedsim.runtime.get_runtime`) and runs its simulated clients one after another.
  A fractional ``ray.num_gpus`` packs several actors onto one GPU.
* **Pinning.** Node ``k`` (in node-id order, i.e. partition id ``k``) belongs to actor
  ``k mod num_actors`` for the whole run. Its :class:`~flwr.app.Context` lives in that
  actor and persists across rounds without ever travelling; the actor also caches
  only its own clients' tensors. This is cheaper than shipping Contexts to and from
  the driver every call (their state can be as large as a model), at the price of a
  static balance: exact with full participation, ±sampling noise otherwise.
* **Object store.** Per round and phase the driver ``ray.put``\\ s each distinct
  message content once (Flower's strategies send one shared ``RecordDict``) and makes
  one call per actor carrying the small metadata of its messages; Ray resolves the
  content reference in the actor, so the global model is serialised once, not once per
  client. The actor rebuilds each ``Message`` from (metadata, content) and replies
  with ``Message(content, reply_to=msg)`` as the ClientApp does.
* **Failures.** A client that raises becomes an error reply inside the actor
  (:func:`fedsim.engine.grid.call_client`). An actor that dies turns every message it
  held into an error reply; it is then replaced by a fresh actor (its clients' Context
  state restarts empty), or, when no replacement starts within
  :data:`READY_TIMEOUT_S`, dropped and its clients re-pinned to the survivors.
* **Determinism.** The ClientApp seeds each client's training from (seed, round,
  partition) and replies are returned in message order, so which actor serves which
  client does not change the result: the local and Ray engines agree.

``ray.address`` (or ``RAY_ADDRESS``) attaches to a running cluster; every node of that
cluster needs fedsim installed in the same Python environment (``pip install``) and the
data where ``FEDSIM_DATA_DIR`` (passed on to the cluster's workers when set) or the
run's ``data-dir`` points. Without an address a private local Ray instance is started
with the machine's CPUs and shut down at the end. A process already connected to Ray
(``ray.is_initialized()``) keeps its connection, and the engine never closes it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import socket
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.app import Metadata as MessageMetadata
from ray.exceptions import GetTimeoutError, OutOfMemoryError, RayActorError

from fedsim.clients.app import client_app
from fedsim.config import RayConfig, Scenario
from fedsim.engine._flower_compat import set_message_id
from fedsim.engine.core import Execution, RoundHook, RunRecorder, execute, flower_log_level
from fedsim.engine.grid import (
    InProcessGrid,
    cohort_handler,
    error_reply,
    local_handler,
    make_contexts,
    task_identity,
)
from fedsim.errors import FedsimError
from fedsim.runtime import get_runtime

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0  # actor start-up: process, imports and the client data
ActorLost = (RayActorError, OutOfMemoryError)  # the actor's process is gone


def run_ray(
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
    """Run the scenario with the clients spread over a pool of Ray actors.

    Parameters are those of :func:`fedsim.engine.local.run_local`.

    Raises
    ------
    FedsimError
        If the Ray cluster cannot be reached or no actor can be started on it.
    """
    runtime = get_runtime(run_config)  # the driver needs the data for the strategy
    contexts = make_contexts(run_id, runtime.data.num_clients, run_config)
    # Flower samples nodes with Python's global `random`, which a resumed run has just
    # restored from its checkpoint; starting Ray draws from it too, so it is put back
    # once the actors are up (else a resumed Ray run samples other nodes).
    sampling_state = random.getstate()
    with ray_session(scenario.ray.address):
        size = pool_size(scenario.ray, len(contexts), ray.available_resources())
        with ActorPool(worker_factory(scenario.ray, run_config), contexts, size) as pool:
            random.setstate(sampling_state)
            grid = InProcessGrid(contexts, pool.handle, run_id=run_id)
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


@contextlib.contextmanager
def ray_session(address: str = "") -> Iterator[None]:
    """Connect to Ray for the duration of the block.

    ``address`` (else ``RAY_ADDRESS``) attaches to that cluster; neither starts a
    private local instance with the machine's CPUs. Only a connection made here is
    closed at the end; an existing one is reused as it is.
    """
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    try:
        _connect(address)
    except ConnectionError as exc:
        raise FedsimError(
            f"ray.address: cannot attach to a Ray cluster at {address!r} ({exc}); start one "
            "with `ray start --head` or fix the address (--ray-address, RAY_ADDRESS)"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _connect(address: str) -> None:
    if address:
        _probe(address)
    with warnings.catch_warnings():
        # Ray's tip about a future default; today's (actors without GPUs see none) is
        # the one fedsim wants.
        warnings.filterwarnings("ignore", "Tip: In future versions of Ray", FutureWarning)
        if address:
            # Workers of a cluster started elsewhere do not inherit this environment.
            # (Only there: a runtime_env makes every actor start a fresh process.)
            data_dir = os.environ.get("FEDSIM_DATA_DIR", "")
            env = {"env_vars": {"FEDSIM_DATA_DIR": data_dir}} if data_dir else None
            ray.init(address=address, runtime_env=env, logging_level=logging.WARNING)
        else:  # "local": never attach by accident to a `ray start` cluster on this machine
            ray.init(
                address="local",
                num_cpus=machine_cpus(),
                include_dashboard=False,
                logging_level=logging.WARNING,
            )


def _probe(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://…": left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc}") from None


def machine_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pool_size(cfg: RayConfig, num_clients: int, available: Mapping[str, float]) -> int:
    """How many actors to start: ``cfg.num_actors`` or what the resources fit.

    Raises
    ------
    FedsimError
        If not even one actor of ``cfg.num_cpus`` CPUs (and ``cfg.num_gpus`` GPUs) fits.
    """
    cpus, gpus = float(available.get("CPU", 0.0)), float(available.get("GPU", 0.0))
    size = math.floor(cpus / cfg.num_cpus + 1e-9)  # 0.3 / 0.1 must give 3
    if cfg.num_gpus > 0:
        size = min(size, math.floor(gpus / cfg.num_gpus + 1e-9))
    if cfg.num_actors:
        wanted = min(cfg.num_actors, num_clients)
        if wanted > size:  # an autoscaling cluster may still grow to fit them
            log.warning(
                "ray.num_actors=%d but %d fit now; the rest wait up to %g s to start",
                wanted,
                size,
                READY_TIMEOUT_S,
            )
        return wanted
    if size < 1:
        raise FedsimError(
            f"ray: one actor needs num_cpus={cfg.num_cpus} and num_gpus={cfg.num_gpus}, but "
            f"the cluster has {cpus:g} CPUs and {gpus:g} GPUs available; lower ray.num_cpus "
            "or ray.num_gpus, or add nodes"
        )
    return min(size, num_clients)


class ClientWorker:
    """One actor's state: the ClientApp runtime and the Contexts of its pinned nodes.

    A plain class so that it also runs in process; :func:`worker_factory` makes the Ray
    actor from it.
    """

    def __init__(self, run_config: dict) -> None:
        # data and model now, in parallel with the other actors
        scenario = get_runtime(run_config).scenario
        self.contexts: dict[int, Context] = {}
        self._handle = local_handler(client_app, self.contexts)
        if scenario.vectorize:  # this actor's clients of a round train as one cohort
            self._handle = cohort_handler(self._handle, self.contexts, scenario)

    def ready(self) -> int:
        return os.getpid()

    def adopt(self, contexts: dict[int, Context]) -> None:
        """Take over these nodes, with their Contexts."""
        self.contexts.update(contexts)

    def handle(
        self, metas: list[tuple[MessageMetadata, int]], *contents: RecordDict
    ) -> list[Message]:
        """Run the ClientApp on each ``(metadata, content index)``; replies in order."""
        with flower_log_level():
            return self._handle([rebuild_message(meta, contents[i]) for meta, i in metas])


def rebuild_message(meta: MessageMetadata, content: RecordDict) -> Message:
    """The message with ``meta`` and ``content`` again, through Flower's public constructor."""
    with task_identity(meta.run_id, meta.src_node_id, meta.src_task_id or 0):
        msg = Message(
            content,
            meta.dst_node_id,
            meta.message_type,
            ttl=meta.ttl,
            group_id=meta.group_id,
            dst_task_id=meta.dst_task_id,
        )
    set_message_id(msg, meta.message_id)  # as the Grid sets it
    msg.metadata.created_at, msg.metadata.src_task_id = meta.created_at, meta.src_task_id
    return msg


def worker_factory(cfg: RayConfig, run_config: dict) -> Callable[[], Any]:
    """A function that starts one :class:`ClientWorker` actor with the configured resources."""
    actor_class = ray.remote(ClientWorker).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
    return lambda: actor_class.remote(run_config)


def gist(exc: BaseException) -> str:
    """One line for a Ray error: its type and its last line (the root cause's)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


@dataclass
class _Slot:
    actor: Any  # ray.actor.ActorHandle of a ClientWorker
    nodes: list[int] = field(default_factory=list)


class ActorPool:
    """Actors with nodes pinned to them; :meth:`handle` is an InProcessGrid handler.

    Parameters
    ----------
    start_actor
        Starts one ClientWorker actor and returns its handle.
    contexts
        Every node's initial Context (the driver's copy; it is never mutated).
    size
        How many actors to start.
    ready_timeout
        Seconds an actor may take to start before it is given up.
    """

    def __init__(
        self,
        start_actor: Callable[[], Any],
        contexts: Mapping[int, Context],
        size: int,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.start_actor, self.ready_timeout = start_actor, ready_timeout
        self.initial = dict(contexts)
        actors = self._wait_ready([start_actor() for _ in range(size)])
        if not actors:
            raise FedsimError(
                f"ray: none of {size} actors started ({self._last_failure}); every cluster "
                "node needs fedsim installed (pip install) and its data (FEDSIM_DATA_DIR)"
            )
        self.slots = [_Slot(a) for a in actors]
        self.owner: dict[int, int] = {}
        self._pin(sorted(self.initial), range(len(self.slots)))
        log.info("Ray engine: %d actors for %d clients", len(self.slots), len(self.initial))

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)

    def handle(self, batch: list[Message]) -> list[Message]:
        """Run a round's messages on their nodes' actors; one reply per message, in order."""
        refs: dict[int, ray.ObjectRef] = {}  # id(content) -> its one copy in the object store
        work: dict[int, list[int]] = {}  # slot -> batch positions
        for pos, msg in enumerate(batch):
            if id(msg.content) not in refs:
                refs[id(msg.content)] = ray.put(msg.content)
            work.setdefault(self.owner[msg.metadata.dst_node_id], []).append(pos)
        calls = {s: self._submit(s, [batch[p] for p in ps], refs) for s, ps in work.items()}
        replies: list[Message | None] = [None] * len(batch)
        lost = []
        for s, call in calls.items():
            try:
                out = ray.get(call)
            except ActorLost as exc:
                log.warning("Ray actor %d died; %d messages failed: %s", s, len(work[s]), gist(exc))
                out = [error_reply(batch[p], exc) for p in work[s]]
                lost.append(s)
            for p, reply in zip(work[s], out, strict=True):
                replies[p] = reply
        for s in sorted(lost, reverse=True):
            self._replace(s)
        return replies  # type: ignore[return-value]

    def _submit(self, s: int, msgs: list[Message], refs: dict[int, ray.ObjectRef]) -> Any:
        keys = list(dict.fromkeys(id(m.content) for m in msgs))  # this actor's contents
        metas = [(m.metadata, keys.index(id(m.content))) for m in msgs]
        return self.slots[s].actor.handle.remote(metas, *(refs[k] for k in keys))

    def _pin(self, nodes: list[int], slots: range | list[int]) -> None:
        """Give ``nodes`` round-robin to ``slots``, with fresh Contexts."""
        slots = list(slots)
        given: dict[int, dict[int, Context]] = {s: {} for s in slots}
        for k, node in enumerate(nodes):
            self.owner[node] = slots[k % len(slots)]
            given[self.owner[node]][node] = self.initial[node]
        for s, contexts in given.items():
            self.slots[s].nodes.extend(contexts)
            self.slots[s].actor.adopt.remote(contexts)  # runs before any later call

    def _replace(self, s: int) -> None:
        """Restart slot ``s``'s actor; failing that, move its nodes to the other actors."""
        old = self.slots[s]
        with contextlib.suppress(Exception):
            ray.kill(old.actor, no_restart=True)
        fresh = self._wait_ready([self.start_actor()])
        nodes, old.nodes = old.nodes, []
        if fresh:
            log.warning("Ray actor %d replaced; its clients' Context state restarts empty", s)
            old.actor = fresh[0]
            self._pin(nodes, [s])
            return
        self.slots.pop(s)
        if not self.slots:
            raise FedsimError(f"ray: every actor died and none restarts ({self._last_failure})")
        log.warning("Ray actor %d dropped; %d actors remain", s, len(self.slots))
        self.owner = {n: o - (o > s) for n, o in self.owner.items() if o != s}
        self._pin(nodes, range(len(self.slots)))

    _last_failure = "no failure"

    def _wait_ready(self, actors: list[Any]) -> list[Any]:
        """The actors that start within the timeout; the others are killed."""
        calls = [a.ready.remote() for a in actors]
        ray.wait(calls, num_returns=len(calls), timeout=self.ready_timeout)
        ready = []
        for actor, call in zip(actors, calls, strict=True):
            try:
                ray.get(call, timeout=0)
                ready.append(actor)
            except (GetTimeoutError, *ActorLost) as exc:
                self._last_failure = gist(exc)
                log.warning("Ray actor did not start: %s", self._last_failure)
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        return ready
