"""Scenario files: parsed once into frozen, validated dataclasses.

A scenario is a TOML file. Every table maps onto one dataclass below; unknown keys,
wrong types and out-of-range values raise :class:`~fedsim.errors.ConfigError` naming
the key path, what was expected and what was given. ``--set key.path=value``
overrides are applied to the raw table before validation, so they are checked the
same way.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import tomli_w

from fedsim.errors import ConfigError
from fedsim.plugins import is_valid_reference

#: Deepest nesting accepted in a free-form table (deeper input is refused, not recursed).
MAX_DEPTH = 32
Engine = Literal["local", "ray", "flower"]
#: The engines, each ``fedsim/engine/<name>.py`` with ``run_<name>`` (the runner finds
#: them by that name; the CLI lists and checks them from here).
ENGINES: tuple[str, ...] = get_args(Engine)
Device = Literal["cpu", "cuda", "auto"]


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


def _named(*builtins: str) -> dict:
    """A name field: one of ``builtins`` or a plug-in reference ``"package.module:attr"``."""
    return {"names": builtins}


def _options() -> Any:
    """An options table passed as keyword arguments to a plug-in (or built-in)."""
    return field(default_factory=lambda: types.MappingProxyType({}))


# Built-in names of every pluggable part (the registries own the implementations; the
# tests check that these lists and the registries agree).
DATASETS = ("synthetic", "adult", "compas", "bank", "retinamnist", "fashion-mnist", "digits")
TABULAR_FILES = ("csv", "parquet")
PARTITIONERS = (
    "iid", "dirichlet-label", "dirichlet-sensitive", "pathological", "quantity",
    "shard", "linear", "square", "exponential", "natural",
)  # fmt: skip
MODELS = ("logreg", "mlp", "cnn")
LOSSES = ("ce", "comp-sum", "sum-exp", "gce", "mae")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, which sensitive attribute and how it is split per client."""

    dataset: str = field(default="synthetic", metadata=_named(*DATASETS, *TABULAR_FILES))
    # empty: the dataset's default sensitive attribute; csv/parquet: a column name
    sensitive: str = ""
    # csv / parquet datasets: the file, its label column and columns to leave out
    path: str = ""
    label: str = ""
    drop: tuple[str, ...] = ()
    # keyword arguments of a plug-in loader ("package.module:load")
    options: Mapping[str, Any] = _options()
    test_fraction: float = field(default=0.2, metadata=_range(0.0, 0.9, lo_open=True))
    label_noise: float = field(default=0.0, metadata=_range(0.0, 1.0))
    max_samples: int = field(default=0, metadata=_range(0))  # 0: all rows
    # synthetic-only knobs
    num_samples: int = field(default=4000, metadata=_range(10, 10_000_000))
    num_features: int = field(default=20, metadata=_range(1, 100_000))
    z_label_agreement: float = field(default=0.85, metadata=_range(0.0, 1.0))
    class_separation: float = field(default=1.0, metadata=_range(0.0, 100.0))


@dataclass(frozen=True)
class PartitionConfig:
    """How the pooled data is spread over clients."""

    method: str = field(default="iid", metadata=_named(*PARTITIONERS))
    num_clients: int = field(default=10, metadata=_range(1, 100_000))
    alpha: float = field(default=0.5, metadata=_range(0.0, 1e6, lo_open=True))
    classes_per_client: int = field(default=2, metadata=_range(1, 10_000))
    min_partition_size: int = field(default=10, metadata=_range(0))
    shards_per_client: int = field(default=2, metadata=_range(1, 100_000))  # shard
    by: str = ""  # natural: the column whose values are the clients
    # keyword arguments of a plug-in partitioner ("package.module:fn")
    options: Mapping[str, Any] = _options()


@dataclass(frozen=True)
class ModelConfig:
    """The model every client trains."""

    name: str = field(default="mlp", metadata=_named(*MODELS))
    hidden: tuple[int, ...] = (64,)
    # keyword arguments of a plug-in model factory ("package.module:make_net")
    options: Mapping[str, Any] = _options()


@dataclass(frozen=True)
class LossConfig:
    """The local objective (see :mod:`fedsim.clients.losses`)."""

    name: str = field(default="ce", metadata=_named(*LOSSES))
    tau: float = field(default=1.0, metadata=_range(0.0, 100.0))
    q: float = field(default=0.7, metadata=_range(0.0, 1.0, lo_open=True))
    margin_lambda: float = field(default=0.0, metadata=_range(0.0, 1e6))
    margin_mode: Literal["batch", "sample"] = "batch"
    adv_nu: float = field(default=0.0, metadata=_range(0.0, 1e6))
    adv_radius: float = field(default=0.1, metadata=_range(0.0, 1e6))
    adv_steps: int = field(default=3, metadata=_range(1, 1000))
    adv_step_size: float = field(default=0.05, metadata=_range(0.0, 1e6, lo_open=True))
    adv_norm: Literal["linf", "l2"] = "linf"
    # keyword arguments of a plug-in loss ("package.module:fn")
    options: Mapping[str, Any] = _options()


@dataclass(frozen=True)
class FairnessPenaltyConfig:
    """A local fairness penalty added to the client objective (see
    :mod:`fedsim.clients.fairness_penalty`): ``weight × penalty`` on soft predictions
    ``softmax(logits / temperature)``."""

    penalty: Literal["none", "demographic-parity", "equalized-odds", "mutual-information"] = "none"
    weight: float = field(default=1.0, metadata=_range(0.0, 1e6))
    temperature: float = field(default=1.0, metadata=_range(0.0, 1e3, lo_open=True))


@dataclass(frozen=True)
class ClientConfig:
    """Local training on each client."""

    epochs: int = field(default=1, metadata=_range(1, 10_000))
    batch_size: int = field(default=32, metadata=_range(1, 10_000_000))
    optimizer: str = field(default="sgd", metadata=_named(*OPTIMIZERS))
    # keyword arguments of a torch.optim class given by reference ("torch.optim:AdamW")
    optimizer_options: Mapping[str, Any] = _options()
    lr: float = field(default=0.1, metadata=_range(0.0, 1e3, lo_open=True))
    # learning rate across rounds: lr · schedule(round)
    lr_schedule: Literal["constant", "step", "exponential", "cosine"] = "constant"
    lr_decay: float = field(default=0.5, metadata=_range(0.0, 1.0, lo_open=True))
    lr_step_rounds: int = field(default=10, metadata=_range(1, 1_000_000))
    momentum: float = field(default=0.0, metadata=_range(0.0, 1.0))
    weight_decay: float = field(default=0.0, metadata=_range(0.0, 10.0))
    robust_eval: bool = False  # report PGD robust accuracy even without an adversarial loss
    loss: LossConfig = LossConfig()
    fairness: FairnessPenaltyConfig = FairnessPenaltyConfig()


@dataclass(frozen=True)
class StrategyConfig:
    """The server strategy: a Flower strategy name plus its options."""

    name: str = "fedavg"
    fraction_train: float = field(default=1.0, metadata=_range(0.0, 1.0, lo_open=True))
    fraction_evaluate: float = field(default=1.0, metadata=_range(0.0, 1.0))
    options: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))


@dataclass(frozen=True)
class FairnessConfig:
    """Per-round fairness accounting (PID of global and local disparity)."""

    enabled: bool = True
    pid: bool = True
    bounds: bool = True  # store the AGLFOP frontier with every accounted run
    bounds_grid: int = field(default=6, metadata=_range(2, 100))
    # Bootstrap resamples behind each client's confidence intervals (0: none). The cost
    # grows with clients x resamples: 200 takes ~65 ms a round at 60 clients.
    client_bootstrap: int = field(default=200, metadata=_range(0, 100_000))


@dataclass(frozen=True)
class FaultsConfig:
    """Injected client faults, for robustness studies."""

    crash_prob: float = field(default=0.0, metadata=_range(0.0, 1.0))
    nan_prob: float = field(default=0.0, metadata=_range(0.0, 1.0))
    shape_prob: float = field(default=0.0, metadata=_range(0.0, 1.0))
    straggler_prob: float = field(default=0.0, metadata=_range(0.0, 1.0))
    straggler_delay: float = field(default=0.0, metadata=_range(0.0, 3600.0))
    byzantine_fraction: float = field(default=0.0, metadata=_range(0.0, 1.0))
    byzantine_mode: Literal["sign-flip", "scale"] = "sign-flip"
    byzantine_scale: float = field(default=10.0, metadata=_range(-1e6, 1e6))


SINKS = ("jsonl", "tensorboard", "mlflow")


@dataclass(frozen=True)
class OutputConfig:
    """Where per-round metrics go besides the run folder's own files (live metrics.csv)."""

    # jsonl: metrics.jsonl (every row, clients too); tensorboard: event files in
    # tensorboard/ (extra fedsim[tensorboard]); mlflow: one MLflow run (extra fedsim[mlflow])
    sinks: tuple[str, ...] = field(default=(), metadata=_named(*SINKS))
    tensorboard_clients: bool = False  # also one scalar per client and metric
    # empty: $MLFLOW_TRACKING_URI, else an SQLite store in the run folder (mlflow.db)
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "fedsim"


@dataclass(frozen=True)
class EvaluationConfig:
    """Server-side evaluation on one global test set, beside the clients' own tests."""

    # Hold out a split of the pooled data (before partitioning) and evaluate the global
    # model on it every round: global-acc, global-loss and its fairness metrics.
    global_test: bool = False
    global_fraction: float = field(default=0.1, metadata=_range(0.0, 0.9, lo_open=True))
    # The held-out rows depend on this seed only, so every strategy and every scenario
    # seed is evaluated on the same rows of a dataset.
    holdout_seed: int = field(default=0, metadata=_range(0, 2**32 - 1))


@dataclass(frozen=True)
class RayConfig:
    """Resources of the Ray engine."""

    address: str = ""  # empty: RAY_ADDRESS or a local Ray instance
    num_cpus: float = field(default=1.0, metadata=_range(0.0, 1024.0, lo_open=True))
    num_gpus: float = field(default=0.0, metadata=_range(0.0, 64.0))
    num_actors: int = field(default=0, metadata=_range(0, 100_000))  # 0: from resources


@dataclass(frozen=True)
class Scenario:
    """A fully resolved simulation scenario."""

    name: str = "scenario"
    seed: int = field(default=0, metadata=_range(0, 2**32 - 1))
    rounds: int = field(default=10, metadata=_range(1, 1_000_000))
    engine: Engine = "local"
    device: Device = "cpu"
    # Intra-op threads of each training process (0: PyTorch's default). One thread is
    # fastest for small per-client batches and avoids oversubscribing shared cores.
    threads: int = field(default=1, metadata=_range(0, 1024))
    # Seconds the server waits for the replies of one phase (train or evaluate) of a
    # round; a node that has not replied by then counts as a failed reply (Flower: 3600).
    round_timeout: float = field(default=3600.0, metadata=_range(0.0, 7 * 86400, lo_open=True))
    # Train each round's clients as one batched computation (torch.func.vmap); local
    # engine, and per actor on the Ray engine. See fedsim.clients.vectorized.
    vectorize: bool = False
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    strategy: StrategyConfig = StrategyConfig()
    fairness: FairnessConfig = FairnessConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    output: OutputConfig = OutputConfig()
    faults: FaultsConfig = FaultsConfig()
    ray: RayConfig = RayConfig()

    def __post_init__(self) -> None:
        if self.vectorize and self.engine not in ("local", "ray"):
            raise ConfigError(
                f"vectorize: cohorts are vectorised by the local and Ray engines only, got "
                f'engine {self.engine!r}; set engine = "local" or "ray", or vectorize = false'
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the scenario as plain TOML-serialisable tables."""
        return _to_plain(self)

    def to_toml(self) -> str:
        """Return the resolved scenario as TOML text (loads back to an equal scenario)."""
        return tomli_w.dumps(self.to_dict())


# --------------------------------------------------------------------------- parsing


def load_scenario(
    source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> Scenario:
    """Load, override and validate a scenario.

    Parameters
    ----------
    source
        A path to a TOML file, or an already parsed mapping.
    overrides
        ``{"key.path": value}``; a string value is parsed as a TOML value when it is
        one (``"0.5"`` → 0.5, ``"[32, 32]"`` → list), else kept as a string.

    Returns
    -------
    Scenario
        The frozen, validated scenario.

    Raises
    ------
    ConfigError
        If the file is missing or not valid TOML, or any key is unknown, of the wrong
        type or out of range.
    """
    raw = dict(source) if isinstance(source, Mapping) else read_toml(Path(source))
    for key, value in (overrides or {}).items():
        _set_path(raw, key, parse_value(value) if isinstance(value, str) else value)
    return build(Scenario, raw, "")


def loads_scenario(text: str) -> Scenario:
    """Parse a scenario from TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError("scenario is nested too deeply") from None
    return build(Scenario, raw, "")


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"scenario file not found: {path}")
    try:
        table = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    if not table:
        raise ConfigError(f"{path}: the scenario file is empty (see scenarios/default.toml)")
    return table


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value, falling back to the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"value nested too deeply: {text[:40]}...") from None


def parse_assignment(item: str) -> tuple[str, Any]:
    """Split ``key.path=value`` from the command line."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key.path=value, got {item!r}")
    return key.strip(), parse_value(value.strip())


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {'.'.join(parts[: i + 1])} is not a table")
        node = child
    node[parts[-1]] = value


def build(cls: type, raw: Any, path: str) -> Any:
    """Build dataclass ``cls`` from a raw TOML table, validating every field."""
    where = path or "scenario"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(path, unknown[0])}: unknown key (expected one of: {', '.join(fields)})"
        )
    hints = typing.get_type_hints(cls)
    values = {
        name: _convert(hints[name], raw[name], _join(path, name), fields[name])
        for name in fields
        if name in raw
    }
    return cls(**values)


def _convert(tp: Any, value: Any, path: str, fld: dataclasses.Field) -> Any:
    origin = get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            opts = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{path}: expected one of {opts}, got {_describe(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
        return _check_range(value, path, fld)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value}")
        return _check_range(float(value), path, fld)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
        names = fld.metadata.get("names")
        if names is not None and value not in names and not is_valid_reference(value):
            raise ConfigError(
                f"{path}: expected one of {', '.join(names)} or a plug-in reference "
                f"'package.module:attr', got {_describe(value)}"
            )
        return value
    if origin is tuple and get_args(tp)[0] is str:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: expected a list of strings, got {_describe(value)}")
        names = fld.metadata.get("names")
        if names is not None and (bad := [v for v in value if v not in names]):
            raise ConfigError(f"{path}: expected names from {', '.join(names)}, got {bad[0]!r}")
        return tuple(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1_000_000 for v in value
        ):
            raise ConfigError(
                f"{path}: expected a list of positive integers, got {_describe(value)}"
            )
        return tuple(value)
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, got {_describe(value)}")
        _check_finite(value, path, 0)
        return types.MappingProxyType(dict(value))
    raise TypeError(f"unsupported field type {tp!r} at {path}")  # programming error


def _check_finite(value: Any, path: str, depth: int) -> None:
    """Every number in a free-form table (strategy options) is finite; depth is bounded."""
    if depth > MAX_DEPTH:
        where = path.split("[")[0]
        raise ConfigError(f"{where}: nested too deeply (over {MAX_DEPTH} levels)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, _join(path, str(key)), depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]", depth + 1)


def _check_range(value: float, path: str, fld: dataclasses.Field) -> Any:
    lo, hi, lo_open = fld.metadata.get("lo"), fld.metadata.get("hi"), fld.metadata.get("lo_open")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        bound = f"> {lo}" if lo_open else f">= {lo}"
        raise ConfigError(f"{path}: expected a value {bound}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(f"{path}: expected a value <= {hi}, got {value}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return list(obj)
    return obj
