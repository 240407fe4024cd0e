"""A run's data and model, loaded once per process: the cache every engine reads.

The ClientApp (:mod:`fedsim.clients.app`), the engines (to size the federation and
build the strategy), the runner (user errors surface before anything is written) and
the bounds all call :func:`get_runtime` with a run config (``scenario``: a path or TOML
text; ``data-dir``). A process serves one scenario at a time; the cache keeps a couple.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from fedsim.clients.models import scenario_model
from fedsim.clients.training import check_loss, check_optimizer
from fedsim.config import Scenario, load_scenario, loads_scenario
from fedsim.data import FederatedData, build_federated


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
    _targets: dict[str, torch.Tensor] | None = None  # model tensors matching _last_state

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
            self._targets = None
        return self._last_state

    def load_incoming(self, record: ArrayRecord) -> dict[str, torch.Tensor]:
        """Load a message's global weights into :attr:`model`; returns them as a state dict.

        The first client of a record goes through ``load_state_dict`` (its key and shape
        checks, its errors); every later client of the same record copies the tensors
        straight into the model's parameters and buffers under ``no_grad``, which is what
        ``load_state_dict`` does once its checks pass, without their per-call cost.
        """
        state = self.incoming_state(record)
        if self._targets is None:
            self.model.load_state_dict(state)
            self._targets = self.model.state_dict(keep_vars=True)
            return state
        with torch.no_grad():
            for name, target in self._targets.items():
                target.copy_(state[name])
        return state

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
_fast_keys: dict[tuple[str, str], tuple[str, str]] = {}


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
    # Every message of a run passes the same strings: a dict hit costs no hashing of the
    # scenario text (str caches its hash); a new text is hashed to key the cache.
    fast = _fast_keys.get((source, data_dir))
    if fast is not None and fast in _runtimes:
        return _runtimes[fast]
    key = (hashlib.sha256(source.encode()).hexdigest(), data_dir)
    with _lock:
        _fast_keys[(source, data_dir)] = key
        while len(_fast_keys) > 4 * _MAX_RUNTIMES:
            del _fast_keys[next(iter(_fast_keys))]
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
            model = scenario_model(scenario, data.raw.input_shape, data.raw.num_classes)
            model = model.to(device)
            check_loss(scenario.client.loss, data.raw.num_classes)  # plug-ins fail here,
            check_optimizer(scenario.client)  # before any training
            _runtimes[key] = ClientRuntime(scenario, data, model, device)
            while len(_runtimes) > _MAX_RUNTIMES:
                del _runtimes[next(iter(_runtimes))]  # the oldest (insertion order)
        return _runtimes[key]
