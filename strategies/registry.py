"""Strategies selectable by name in scenarios (``[strategy] name = ...``).

Flower's own message-API strategies and fedsim's register the same way: a name and
a class whose keyword arguments are the scenario's ``[strategy.options]``. Options are
checked against the constructor's signature, so a typo fails before the run starts.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedsim.clients import keys
from fedsim.config import StrategyConfig
from fedsim.errors import ConfigError
from fedsim.plugins import describe, is_reference, resolve
from fedsim.strategies.records import aggregate_scalar_metrics

# name -> "module:Class"; imported lazily so that listing strategies stays cheap.
REGISTRY: dict[str, str] = {
    "fedavg": "flwr.serverapp.strategy:FedAvg",
    "fedprox": "flwr.serverapp.strategy:FedProx",
    "fedadam": "flwr.serverapp.strategy:FedAdam",
    "fedyogi": "flwr.serverapp.strategy:FedYogi",
    "fedadagrad": "flwr.serverapp.strategy:FedAdagrad",
    "fedavgm": "flwr.serverapp.strategy:FedAvgM",
    "fedmedian": "flwr.serverapp.strategy:FedMedian",
    "fedtrimmedavg": "flwr.serverapp.strategy:FedTrimmedAvg",
    "krum": "flwr.serverapp.strategy:Krum",
    "multikrum": "flwr.serverapp.strategy:MultiKrum",
    "bulyan": "flwr.serverapp.strategy:Bulyan",
    "qfedavg": "flwr.serverapp.strategy:QFedAvg",
    "fedld": "fedsim.strategies.fedld:FedLD",
    "fairfed": "fedsim.strategies.fairfed:FairFed",
}

# Set by fedsim from the scenario, not by [strategy.options].
_MANAGED = {
    "fraction_train",
    "fraction_evaluate",
    "min_train_nodes",
    "min_evaluate_nodes",
    "min_available_nodes",
    "train_metrics_aggr_fn",
    "evaluate_metrics_aggr_fn",
    "weighted_by_key",
    "arrayrecord_key",
    "configrecord_key",
}
# Options fedsim fills from the scenario but a scenario may still set.
_DEFAULTED = {"client_learning_rate", "train_loss_key"}


def register(name: str, target: str) -> None:
    """Register a strategy class ``"module:Class"`` under ``name``."""
    REGISTRY[name] = target


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class of a registered name or a ``"package.module:Class"`` reference.

    Raises
    ------
    ConfigError
        For an unknown name, or a reference that is not a Flower message-API
        ``Strategy`` subclass.
    """
    if is_reference(name):
        cls = resolve(name, "strategy.name")
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ConfigError(
                f"strategy.name: {name} is {describe(cls)}, expected a subclass of Flower's "
                "flwr.serverapp.strategy.Strategy (e.g. of FedAvg)"
            )
        return cls
    if name not in REGISTRY:
        raise ConfigError(
            f"strategy.name: unknown strategy {name!r} (known: {', '.join(sorted(REGISTRY))})"
        )
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_strategy(cfg: StrategyConfig, num_nodes: int, client_lr: float | None = None) -> Strategy:
    """Instantiate the scenario's strategy.

    ``client_lr`` fills options that mirror the clients' learning rate (QFedAvg's
    ``client_learning_rate``) unless the scenario sets them.

    Raises
    ------
    ConfigError
        For an unknown strategy or option, or an option of the wrong type.
    """
    cls = strategy_class(cfg.name)
    params = _parameters(cls)
    options = dict(cfg.options)
    for key, value in options.items():
        if (key in _MANAGED and key not in _DEFAULTED) or key not in params:
            accepted = sorted(set(params) - _MANAGED)
            raise ConfigError(
                f"strategy.options.{key}: not an option of {cfg.name} "
                f"(accepted: {', '.join(accepted) or 'none'})"
            )
        _check_type(cfg.name, key, value, params[key])
    kwargs: dict[str, Any] = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1 if cfg.fraction_evaluate > 0 else 0,
        "min_available_nodes": num_nodes,
        "train_metrics_aggr_fn": aggregate_scalar_metrics,
        "evaluate_metrics_aggr_fn": aggregate_scalar_metrics,
    }
    kwargs["train_loss_key"] = keys.TRAIN_LOSS  # QFedAvg reads the clients' training loss
    if client_lr is not None:
        kwargs["client_learning_rate"] = client_lr
    kwargs = {k: v for k, v in kwargs.items() if k in params and k not in options}
    try:
        return cls(**kwargs, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"strategy.options: {cfg.name} rejected the options: {exc}") from None


def _parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    """Constructor parameters, following ``**kwargs`` up the class hierarchy."""
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                out.setdefault(name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return out


def _check_type(strategy: str, key: str, value: Any, param: inspect.Parameter) -> None:
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ConfigError(
            f"strategy.options.{key}: {strategy} expects {type(default).__name__} "
            f"(default {default!r}), got {type(value).__name__} {value!r}"
        )
