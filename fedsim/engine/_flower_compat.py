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
* **Arrays serialised on demand.** :func:`array_record` builds an ``ArrayRecord`` of
  :class:`NumpyArray`\ s: Flower ``Array``\ s that hold the numpy array and write its
  ``.npy`` bytes only when ``data`` is read (a message that leaves the process through
  Flower's transport, which deflates it under the class name ``Array``). In process,
  ``numpy()`` and :func:`array_view` skip the bytes altogether; pickled (a Ray reply) it
  travels as the numpy array and is a :class:`NumpyArray` again on the other side.

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
from flwr.app import Array, ArrayRecord, Message
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


def set_source_node(msg: Message, node_id: int) -> None:
    """Make ``node_id`` the source of ``msg``, as for the error replies Flower's
    SuperLink writes itself ("node unavailable": source = the SuperLink)."""
    msg.metadata.__dict__["_src_node_id"] = node_id


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


class NumpyArray(Array):
    """A Flower ``Array`` holding a numpy array; its ``.npy`` bytes are written on demand.

    Everything Flower reads (``dtype``, ``shape``, ``stype``, ``data``, ``numpy()``,
    equality, ``object_id``, ``deflate``) is what ``Array(values)`` gives; only *when*
    the bytes are written differs. Setting ``data`` turns it into a bytes-backed array.
    The array is kept, not copied: the caller must not modify it afterwards.
    """

    def __init__(self, values: NDArray[Any]) -> None:  # pylint: disable=super-init-not-called
        # Array.__init__ would serialise; its fields are set as its own constructor does.
        self.__dict__.update(dtype=str(values.dtype), shape=tuple(values.shape), stype=_NPY_STYPE)
        self.__dict__["_values"] = values
        self.__dict__["_npy"] = None

    @property  # type: ignore[override]
    def data(self) -> bytes:
        if self.__dict__["_npy"] is None:
            buffer = io.BytesIO()
            np.save(buffer, self.__dict__["_values"], allow_pickle=False)
            self.__dict__["_npy"] = buffer.getvalue()
        return self.__dict__["_npy"]  # type: ignore[no-any-return]

    @data.setter
    def data(self, value: bytes) -> None:  # Flower's inflate and user code may set it
        self.__dict__["_values"], self.__dict__["_npy"] = None, value

    def numpy(self) -> NDArray[Any]:
        """A fresh writable copy, as ``Array.numpy()`` returns (no bytes involved)."""
        values = self.__dict__["_values"]
        return super().numpy() if values is None else values.copy(order="K")

    def view(self) -> NDArray[Any] | None:
        """The held array, read-only (``None`` once ``data`` was replaced)."""
        values = self.__dict__["_values"]
        if values is None:
            return None
        out: NDArray[Any] = values.view()
        out.flags.writeable = False
        return out

    def __eq__(self, other: object) -> bool:
        # The dataclass __eq__ of Array compares only objects of the very same class.
        if not isinstance(other, Array):
            return NotImplemented
        fields = ("dtype", "shape", "stype")
        return all(getattr(self, f) == getattr(other, f) for f in fields) and (
            self.data == other.data
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as Array

    def __reduce__(self) -> tuple[Any, ...]:
        values = self.__dict__["_values"]
        if values is None:
            return (Array, (self.dtype, tuple(self.shape), self.stype, self.data))
        return (_unpickle_numpy_array, (values,))


# Flower's transport names a deflated object by its class's qualified name and inflates
# it by that name: a NumpyArray leaves the process as, and arrives as, a plain Array.
NumpyArray.__qualname__ = Array.__qualname__


def _unpickle_numpy_array(values: NDArray[Any]) -> NumpyArray:
    # pickle finds classes by qualified name, which NumpyArray shares with Array
    return NumpyArray(values)


def array_record(values: dict[str, NDArray[Any]]) -> ArrayRecord:
    """An ``ArrayRecord`` of :class:`NumpyArray` (bytes written only if ever read).

    Parameters
    ----------
    values
        Name → numpy array, in record order. The arrays are kept, not copied.

    Returns
    -------
    ArrayRecord
        Equal (``==``, same bytes) to ``ArrayRecord`` built from the same arrays.
    """
    record = ArrayRecord()
    for key, value in values.items():
        record[key] = NumpyArray(np.asarray(value))
    return record


def array_view(array: Array) -> NDArray[Any]:
    """Read-only zero-copy view of ``array`` when it holds ``.npy`` bytes, else a copy."""
    if isinstance(array, NumpyArray):
        held = array.view()
        if held is not None:
            return held
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
