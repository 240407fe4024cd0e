"""The per-process runtime: global weights decoded once, loaded without per-call checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from fedsim.runtime import get_runtime

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "default.toml"


def _runtime():  # type: ignore[no-untyped-def]
    return get_runtime({"scenario": str(SCENARIO), "data-dir": ""})


def _record(seed: int) -> ArrayRecord:
    rt = _runtime()
    g = torch.Generator().manual_seed(seed)
    return ArrayRecord(
        {k: torch.randn(v.shape, generator=g) for k, v in rt.model.state_dict().items()}
    )


def test_every_client_of_a_record_starts_from_its_weights() -> None:
    rt = _runtime()
    record = _record(1)
    expected = {k: a.numpy() for k, a in record.items()}
    for _ in range(3):  # first client: load_state_dict; later ones: the direct copy
        rt.load_incoming(record)
        for name, tensor in rt.model.state_dict().items():
            np.testing.assert_array_equal(tensor.numpy(), expected[name])
        with torch.no_grad():  # the client trains: the model moves away
            for p in rt.model.parameters():
                p.add_(1.0)
    other = _record(2)  # the next round's record replaces the first
    rt.load_incoming(other)
    for name, tensor in rt.model.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), other[name].numpy())


def test_a_record_that_does_not_fit_the_model_fails_as_load_state_dict() -> None:
    rt = _runtime()
    state = {k: v.clone() for k, v in rt.model.state_dict().items()}
    bad = {**state, next(iter(state)): torch.zeros(1)}
    record = ArrayRecord(bad)
    with pytest.raises(RuntimeError, match="size mismatch"):
        rt.load_incoming(record)
    with pytest.raises(RuntimeError, match="size mismatch"):  # the same record: checked again
        rt.load_incoming(record)
