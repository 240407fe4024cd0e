"""Contract test of fedsim's one seam to Flower's private parts (default suite, not e2e).

Each test exercises what :mod:`fedsim.engine._flower_compat` relies on in the pinned
Flower line; a Flower release that moves a private part fails here, by name.
"""

from __future__ import annotations

import flwr
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsim.engine import _flower_compat as compat


def test_flower_is_the_pinned_line() -> None:
    # The seam is written against 1.42; pyproject pins flwr>=1.42,<1.43.
    assert flwr.__version__.startswith("1.42."), flwr.__version__


def test_task_identity_sets_and_restores_the_private_fields() -> None:
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    with compat.task_identity(run_id=7, node_id=3, task_id=5):
        assert (TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id) == (7, 3, 5)
        with compat.task_identity(run_id=9):
            assert TaskIdentity.run_id == 9
            assert TaskIdentity.node_id == compat.SUPERLINK_NODE_ID
        assert TaskIdentity.run_id == 7
    assert (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id) == saved


def test_an_unset_identity_comes_back_unset() -> None:
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity._run_id = None
    try:
        with compat.task_identity(run_id=2):
            pass
        with pytest.raises(RuntimeError):
            _ = TaskIdentity.run_id
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def test_a_message_built_under_an_identity_takes_a_message_id_and_a_reply() -> None:
    with compat.task_identity(run_id=4):
        msg = Message(RecordDict(), 1001, "train")
        assert msg.metadata.run_id == 4
        compat.set_message_id(msg, "m-1")
        assert msg.metadata.message_id == "m-1"
        reply = Message(RecordDict(), reply_to=msg)
    assert reply.metadata.reply_to_message_id == "m-1"


def test_message_ids_are_read_only_in_the_public_api() -> None:
    # The reason for set_message_id: if Flower makes the id settable, use that instead.
    with compat.task_identity(run_id=4):
        msg = Message(RecordDict(), 1001, "train")
    with pytest.raises(AttributeError):
        msg.metadata.message_id = "x"  # type: ignore[misc]


def test_a_replys_source_node_can_be_set_as_the_superlink_does_and_not_publicly() -> None:
    with compat.task_identity(run_id=4):
        msg = Message(RecordDict(), 1001, "train")
        compat.set_message_id(msg, "m-2")
        reply = Message(RecordDict(), reply_to=msg)
    assert reply.metadata.src_node_id == 1001  # a reply comes from where its message went
    compat.set_source_node(reply, 1)
    assert reply.metadata.src_node_id == 1 and reply.metadata.reply_to_message_id == "m-2"
    with pytest.raises(AttributeError):
        reply.metadata.src_node_id = 5  # type: ignore[misc]


def test_an_empty_run_has_the_given_id() -> None:
    assert compat.empty_run(12).run_id == 12


@pytest.mark.parametrize(
    "value",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array(3, dtype=np.int64),
        np.zeros((0, 4), dtype=np.float16),
    ],
    ids=["c-order", "fortran", "scalar", "empty"],
)
def test_array_bytes_are_npy_and_read_without_a_copy(value: np.ndarray) -> None:
    array = Array(value)
    assert array.stype == "numpy.ndarray"
    assert isinstance(array.data, bytes) and array.data[:6] == b"\x93NUMPY"
    view = compat.array_view(array)
    np.testing.assert_array_equal(view, value)
    assert view.dtype == value.dtype and view.shape == value.shape
    assert not view.flags.writeable  # a view on the record's bytes, not a copy
    record = ArrayRecord({"w": Array(value)})
    np.testing.assert_array_equal(compat.array_view(record["w"]), record["w"].numpy())


# ------------------------------------------------- numpy-backed arrays (bytes on demand)


def _values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "f": np.asfortranarray(rng.standard_normal((2, 3))),
        "n": np.array(7, dtype=np.int64),
    }


def test_a_numpy_array_is_what_array_of_the_same_values_is() -> None:
    for value in _values().values():
        lazy, plain = compat.NumpyArray(value), Array(value)
        assert (lazy.dtype, lazy.shape, lazy.stype) == (plain.dtype, plain.shape, plain.stype)
        assert lazy.data == plain.data  # the same .npy bytes, written on demand
        assert lazy == plain and plain == lazy
        assert lazy.object_id == plain.object_id
        np.testing.assert_array_equal(lazy.numpy(), plain.numpy())
        assert lazy.numpy().flags.f_contiguous == plain.numpy().flags.f_contiguous
    assert compat.array_record(_values()) == ArrayRecord(
        {k: Array(v) for k, v in _values().items()}
    )


def test_a_numpy_array_leaves_through_flower_transport_as_a_plain_array() -> None:
    value = _values()["w"]
    lazy = compat.NumpyArray(value)
    assert lazy.deflate() == Array(value).deflate()  # deflated under the name "Array"
    back = Array.inflate(lazy.deflate(), children=lazy.children)
    assert type(back) is Array
    np.testing.assert_array_equal(back.numpy(), value)


def test_numpy_gives_a_fresh_copy_and_array_view_a_read_only_alias() -> None:
    value = _values()["w"]
    lazy = compat.NumpyArray(value)
    out = lazy.numpy()
    out[0, 0] += 1.0  # writable, and not the held array (as Array.numpy())
    assert value[0, 0] != out[0, 0]
    view = compat.array_view(lazy)
    assert np.shares_memory(view, value) and not view.flags.writeable
    assert "_npy" in lazy.__dict__ and lazy.__dict__["_npy"] is None  # never serialised


def test_a_pickled_numpy_array_travels_as_its_values() -> None:
    import pickle

    value = _values()["w"]
    back = pickle.loads(pickle.dumps(compat.NumpyArray(value)))
    assert isinstance(back, compat.NumpyArray) and back.__dict__["_npy"] is None
    assert back == Array(value)
    record = pickle.loads(pickle.dumps(compat.array_record(_values())))
    assert all(isinstance(a, compat.NumpyArray) for a in record.values())


def test_setting_data_makes_a_numpy_array_bytes_backed() -> None:
    lazy = compat.NumpyArray(_values()["w"])
    other = np.ones((2, 2), dtype=np.float32)
    lazy.data = Array(other).data
    lazy.shape = (2, 2)
    np.testing.assert_array_equal(lazy.numpy(), other)
    np.testing.assert_array_equal(compat.array_view(lazy), other)
