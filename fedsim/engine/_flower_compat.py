"""The one seam to Flower 1.42's private parts: task identity, message ids, array bytes.

Flower's public API (``flwr.app``, ``flwr.serverapp``, ``flwr.clientapp``) does not
cover what fedsim's own engines must do in place of Flower's runtime:

* **Task identity.** Building a :class:`flwr.app.Message` reads the process's
  ``TaskIdentity`` (``flwr.supercore``), which Flower's runtimes set before running an
  app. :func:`task_identity` sets it for a block and restores the previous one
  (including "unset", which only the private ``_run_id`` etc. can express).
* **Message ids.** A Grid stamps each pushed message with an id; ``Metadata`` exposes
  ``message_id`` read-only, backed by ``__dict__["_message_id"]``
  (:func:`set_message_id`).
* **Empty run.** A Grid holds a ``Run`` (``flwr.supercore.run``): :func:`empty_run`.
* **Array bytes.** ``Array.data`` holds ``.npy`` bytes (``stype`` of ``numpy.ndarray``);
  :func:`array_view` reads them zero-copy instead of ``Array.numpy()``'s copy.

Nothing else in fedsim touches these (``tests/test_static.py`` checks), and
``tests/fedsim/test_flower_compat.py`` fails loudly when a Flower release moves them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from flwr.app import Array, Message
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from numpy.typing import NDArray

SUPERLINK_NODE_ID = 1  # the ServerApp's node id in Flower's runtimes


@contextlib.contextmanager
def task_identity(
    run_id: int, node_id: int = SUPERLINK_NODE_ID, task_id: int = 1
) -> Iterator[None]:
    """Set the process's Flower task identity (needed to build a ``Message``).

    Flower's ServerApp runtime sets it before running a strategy; fedsim's engines do
    the same here and restore the previous identity afterwards.
    """
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def set_message_id(msg: Message, message_id: str) -> None:
    """Stamp ``msg`` with ``message_id``, as Flower's Grid does when it pushes a message."""
    msg.metadata.__dict__["_message_id"] = message_id


def empty_run(run_id: int) -> Run:
    """An empty Flower ``Run`` with id ``run_id`` (what a Grid holds before ``set_run``)."""
    return Run.create_empty(run_id)


_NPY_STYPE = Array(np.zeros(0)).stype


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Parse a ``.npy`` header once per distinct header (clients share them per key)."""
    stream = io.BytesIO(header)
    version = np.lib.format.read_magic(stream)
    read = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }[version]
    shape, fortran_order, dtype = read(stream)
    return tuple(shape), bool(fortran_order), dtype


def array_view(array: Array) -> NDArray[Any]:
    """Read-only zero-copy view of ``array`` when it holds ``.npy`` bytes, else a copy."""
    data = array.data
    if array.stype == _NPY_STYPE and isinstance(data, bytes) and data[:6] == b"\x93NUMPY":
        # .npy: magic (6), version (2), header length (2 bytes in v1, 4 in v2), header
        length_bytes = 2 if data[6] == 1 else 4
        start = 8 + length_bytes
        offset = start + int.from_bytes(data[8:start], "little")
        try:
            shape, fortran_order, dtype = _npy_header(data[:offset])
        except (KeyError, ValueError, TypeError):
            return array.numpy()
        if not dtype.hasobject:
            view = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
            return view.reshape(shape, order="F" if fortran_order else "C")
    return array.numpy()
