"""The state of Flower's built-in strategies, which cannot implement ``state()`` themselves.

:data:`FLOWER_STATE` names, for each Flower 1.42 strategy class, the attributes it keeps
from one round to the next (read from ``flwr/serverapp/strategy/*.py``); everything
else on those objects is configuration rebuilt from the scenario. :func:`stateful`
returns an object following :class:`fedsim.state.Stateful` for any strategy: the
strategy itself when it has ``state()``/``load_state()`` (fedsim's own, plug-ins),
else an adapter that reads and writes exactly the table's attributes, with their
names, shapes and dtypes checked against the model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi, QFedAvg
from numpy.typing import NDArray

from fedsim.errors import CheckpointError
from fedsim.state import Stateful, check_array, check_arrays

log = logging.getLogger(__name__)

# How an attribute holds one array per model parameter.
Kind = Literal["dict", "record", "list"]

_FEDOPT: dict[str, Kind] = {"current_arrays": "dict", "m_t": "dict", "v_t": "dict"}
FLOWER_STATE: dict[type, dict[str, Kind]] = {
    # Flower's FedOpt family: server-optimiser moments and the arrays sent.
    FedAdam: _FEDOPT,
    FedYogi: _FEDOPT,
    FedAdagrad: _FEDOPT,
    FedAvgM: {"current_arrays": "record", "momentum_vector": "list"},
    QFedAvg: {"current_arrays": "record"},
    # FedAvg, FedProx, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan: nothing
    # survives a round but configuration.
    FedAvg: {},
}
_WARNED: set[type] = set()


def stateful(strategy: Any, reference: Mapping[str, NDArray[Any]]) -> Stateful:
    """The state of ``strategy`` as a :class:`Stateful`.

    Parameters
    ----------
    strategy
        A Flower strategy, fedsim's or a plug-in.
    reference
        The model's arrays (names, shapes, dtypes) that restored arrays must fit.
    """
    if isinstance(strategy, Stateful):
        return strategy
    for klass in type(strategy).__mro__:
        if klass in FLOWER_STATE:
            return AttributeState(strategy, FLOWER_STATE[klass], reference)
    if type(strategy) not in _WARNED:
        _WARNED.add(type(strategy))
        log.warning(
            "%s has no state()/load_state(); a resumed run restarts its internal state",
            type(strategy).__name__,
        )
    return AttributeState(strategy, {}, reference)


class AttributeState:
    """Named attributes of an object, one array per model parameter each.

    State keys are ``<attribute>/<parameter name>`` (``dict`` and ``record``
    attributes) or ``<attribute>/<index>`` (``list``); an attribute that is None
    has no keys.
    """

    def __init__(
        self, target: Any, spec: Mapping[str, Kind], reference: Mapping[str, NDArray[Any]]
    ) -> None:
        self.target, self.spec, self.reference = target, dict(spec), dict(reference)

    def state(self) -> dict[str, NDArray[Any]]:
        out: dict[str, NDArray[Any]] = {}
        for name, kind in self.spec.items():
            value = getattr(self.target, name, None)
            if value is None:
                continue
            if kind == "list":
                items = {str(i): v for i, v in enumerate(value)}
            elif kind == "record":
                items = {k: a.numpy() for k, a in value.items()}
            else:
                items = dict(value)
            out.update({f"{name}/{k}": np.array(v, copy=True) for k, v in items.items()})
        return out

    def load_state(self, state: Mapping[str, NDArray[Any]]) -> None:
        """Set exactly the table's attributes; nothing is set unless all of it checks out.

        Raises
        ------
        CheckpointError
            For a name the table does not list, or arrays that do not fit the model.
        """
        owner = type(self.target).__name__
        groups: dict[str, dict[str, NDArray[Any]]] = {}
        for key, value in state.items():
            name, _, item = key.partition("/")
            if name not in self.spec:
                raise CheckpointError(
                    f"strategy state {key!r}: {owner} keeps no state named {name!r} "
                    f"(its state: {', '.join(self.spec) or 'none'})"
                )
            groups.setdefault(name, {})[item] = value
        values = {name: self._build(owner, name, groups.get(name)) for name in self.spec}
        for name, value in values.items():
            setattr(self.target, name, value)

    def _build(self, owner: str, name: str, items: dict[str, NDArray[Any]] | None) -> Any:
        if not items:
            return None
        label = f"strategy state {owner}.{name}"
        kind = self.spec[name]
        if kind == "list":
            refs = list(self.reference.values())
            if sorted(items) != sorted(str(i) for i in range(len(refs))):
                raise CheckpointError(f"{label}: expected items 0..{len(refs) - 1}")
            return [check_array(f"{label}[{i}]", items[str(i)], r) for i, r in enumerate(refs)]
        arrays = check_arrays(label, items, self.reference)
        if kind == "record":
            return ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return arrays
