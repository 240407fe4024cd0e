"""Plug-ins by reference: one resolver for every name a scenario may take.

Wherever a scenario takes a name (``model.name``, ``data.dataset``,
``partition.method``, ``client.loss.name``, ``client.optimizer``, ``strategy.name``) it
also takes a reference ``"package.module:attr"`` to the user's own code. Every engine
resolves the reference the same way, by importing the module in its own process (the
local engine, each Ray actor, Flower's ClientApp and ServerApp processes, a real
SuperNode), so a plug-in behaves the same everywhere: the module must be importable
there (installed, or on ``PYTHONPATH``).

From Python, objects may be passed instead (``fedsim.run(sc, model=make_net)``).
An object that can be imported by its own ``__module__`` and ``__qualname__`` becomes
that reference; any other object (a lambda, a function defined in ``__main__`` or
inside another function) is kept in this process under an ``object:`` reference,
which only the local engine can use.

This module is base layer: it imports nothing of fedsim but the errors.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedsim.errors import ConfigError

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")
#: Prefix of references to objects held in this process (Python API only).
OBJECT_PREFIX = "object:"
_objects: dict[str, Any] = {}


def is_reference(name: str) -> bool:
    """Whether a scenario name is a plug-in reference rather than a built-in name."""
    return ":" in name


def is_valid_reference(name: str) -> bool:
    """Whether ``name`` has the form of a reference (``"pkg.mod:attr"`` or ``object:``)."""
    return bool(_REFERENCE.match(name)) or name.startswith(OBJECT_PREFIX)


def resolve(reference: str, key: str) -> Any:
    """Import the object a ``"package.module:attr"`` reference names.

    Parameters
    ----------
    reference
        ``"package.module:attr"`` (``attr`` may be dotted: ``"pkg.mod:Class.method"``),
        or an ``object:`` reference made by :func:`reference_for` in this process.
    key
        The scenario key that holds the reference, for error messages.

    Returns
    -------
    Any
        The object.

    Raises
    ------
    ConfigError
        If the reference is malformed, its module cannot be imported or lacks the
        attribute.
    """
    if reference.startswith(OBJECT_PREFIX):
        if reference not in _objects:
            raise ConfigError(
                f"{key}: {reference!r} was a Python object passed to fedsim.run in another "
                "process; pass the object again, or use a module reference "
                "'package.module:attr'"
            )
        return _objects[reference]
    if not _REFERENCE.match(reference):
        raise ConfigError(
            f"{key}: {reference!r} is not a plug-in reference (expected 'package.module:attr',"
            " e.g. 'mypkg.models:make_net')"
        )
    module_name, _, attr = reference.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{key}: cannot import module {module_name!r} of {reference!r} ({exc}); it must "
            "be importable in every process that runs fedsim (install it, or add its folder "
            "to PYTHONPATH)"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{key}: module {module_name!r} has no attribute {attr!r} (from {reference!r})"
            ) from None
    return obj


def resolve_callable(reference: str, key: str) -> Callable[..., Any]:
    """:func:`resolve`, checking that the result can be called."""
    obj = resolve(reference, key)
    if not callable(obj):
        raise ConfigError(
            f"{key}: {reference!r} is a {type(obj).__name__}, expected a callable "
            "(a function or a class)"
        )
    return obj  # type: ignore[no-any-return]


def reference_for(obj: Any, key: str) -> str:
    """The reference a scenario stores for an object passed from Python.

    An object importable as ``module:qualname`` (and that import gives the same object)
    is stored as that reference, usable on every engine. Anything else is kept in this
    process under an ``object:`` reference.
    """
    if isinstance(obj, str):
        return obj
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module and qualname and module != "__main__" and "<" not in qualname:
        ref = f"{module}:{qualname}"
        try:
            if resolve(ref, key) is obj:
                return ref
        except ConfigError:
            pass
    ref = f"{OBJECT_PREFIX}{key}.{id(obj):x}"
    _objects[ref] = obj
    return ref


def require_importable(reference: str, key: str, engine: str) -> None:
    """Refuse in-process objects on engines that run clients in other processes."""
    if reference.startswith(OBJECT_PREFIX):
        raise ConfigError(
            f"{key}: the object passed from Python cannot be imported by the {engine} "
            "engine's other processes; define it in a module and pass "
            "'package.module:attr' (or use engine = 'local')"
        )


#: Python API keyword -> the scenario key its object or reference goes to.
API_KEYS = {
    "model": "model.name",
    "dataset": "data.dataset",
    "partitioner": "partition.method",
    "loss": "client.loss.name",
    "optimizer": "client.optimizer",
    "strategy": "strategy.name",
}


#: What a plug-in by reference is called with and must return, per scenario key.
SIGNATURES = {
    "model.name": "make_net(input_shape, num_classes, **[model.options]) -> torch.nn.Module",
    "data.dataset": 'load(**[data.options]) -> {"x", "y", "sensitive"?, "group_names"?, '
    '"class_names"?, "attributes"?}',
    "partition.method": "fn(labels, sensitive, num_clients, rng, **[partition.options]) "
    "-> one index array per client",
    "client.loss.name": "fn(logits, target, **[client.loss.options]) -> scalar tensor",
    "client.optimizer": "a torch.optim class, e.g. 'torch.optim:AdamW', "
    "with [client.optimizer_options]",
    "strategy.name": "a Flower message-API Strategy subclass; [strategy.options] are "
    "its keyword arguments",
}


def api_overrides(parts: dict[str, Any]) -> dict[str, str]:
    """Scenario overrides for plug-ins passed to ``fedsim.run`` as objects or references."""
    return {API_KEYS[k]: reference_for(v, API_KEYS[k]) for k, v in parts.items() if v is not None}


def add_import_folder(folder: str | os.PathLike[str], *, last: bool = False) -> None:
    """Make modules in ``folder`` importable, here and in child processes.

    The folder (made absolute) goes on ``sys.path`` and on ``PYTHONPATH``, which the
    Ray workers and Flower processes the engines start inherit, so a plug-in reference
    ``"mymodule:attr"`` to ``folder/mymodule.py`` resolves in every engine.

    Parameters
    ----------
    folder
        The folder that holds the plug-in modules.
    last
        Put the folder after the entries already there instead of first, so that its
        modules never shadow a module found elsewhere in this process. (Child
        processes still search ``PYTHONPATH`` before site-packages: a module in the
        folder must not be named like an installed package.)
    """
    path = str(Path(folder).resolve())
    if path not in sys.path:
        sys.path.insert(len(sys.path) if last else 0, path)
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if path not in entries:
        entries = [*entries, path] if last else [path, *entries]
        os.environ["PYTHONPATH"] = os.pathsep.join(entries)


def add_working_directory() -> None:
    """Make modules in the current directory importable, here and in child processes.

    ``python -m``/``-c`` put the current directory on ``sys.path``; a console script
    such as ``fedsim`` does not. The CLI calls this so that ``model.name =
    "mymodels:make_net"`` finds ``./mymodels.py`` in this process and, through
    ``PYTHONPATH``, in the Ray workers and Flower processes the engines start.
    """
    add_import_folder(os.getcwd())


def add_plugin_folders(args: Sequence[str]) -> None:
    """The CLI's import path: the current directory, then every scenario file's folder.

    ``fedsim run examples/custom_model.toml`` run from anywhere finds
    ``examples/custom_model.py`` for ``model.name = "custom_model:make_net"``. The
    current directory comes first (as before); the folder of each existing ``.toml``
    file among ``args`` is added last, so a module beside a scenario never shadows
    one found in the current directory or installed.

    Parameters
    ----------
    args
        The command-line arguments (``sys.argv[1:]``).
    """
    add_working_directory()
    for arg in args:
        path = Path(arg)
        if path.suffix == ".toml" and path.is_file():
            add_import_folder(path.parent, last=True)


def describe(obj: Any) -> str:
    """A short description of a value for error messages."""
    text = repr(obj)
    return f"{type(obj).__name__} {text[:57] + '...' if len(text) > 60 else text}"
