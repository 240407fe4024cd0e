"""The one reply check shared by the screening wrapper and FedLD (pure: no Flower)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.strategies.screening_rules import MALFORMED, NONFINITE, is_finite, reply_problem

SENT = {"w": (2, 3), "b": (2,)}


def _arrays(**changes: np.ndarray) -> dict[str, np.ndarray]:
    return {"w": np.ones((2, 3), np.float32), "b": np.zeros(2, np.float32), **changes}


def test_a_reply_matching_the_sent_model_passes() -> None:
    assert reply_problem(1, [{"n": 4}], _arrays(), SENT, weight_key="n") is None


@pytest.mark.parametrize(
    ("num_array_records", "metrics"), [(0, [{"n": 1}]), (2, [{"n": 1}]), (1, []), (1, [{}, {}])]
)
def test_a_train_reply_needs_one_array_record_and_one_metric_record(
    num_array_records: int, metrics: list[dict[str, int]]
) -> None:
    problem = reply_problem(num_array_records, metrics, _arrays(), SENT)
    assert problem is not None and problem.kind == MALFORMED
    assert "exactly one ArrayRecord and one MetricRecord" in problem.reason


def test_an_evaluate_reply_is_checked_for_its_metric_record_only() -> None:
    assert reply_problem(0, [{"acc": 0.5}], None, None) is None
    problem = reply_problem(0, [], None, None)
    assert problem is not None and problem.kind == MALFORMED


@pytest.mark.parametrize("weight", [None, True, "3", 0, -1.0, float("nan"), float("inf")])
def test_the_weight_metric_must_be_a_positive_finite_number(weight: object) -> None:
    metrics = [{} if weight is None else {"n": weight}]
    problem = reply_problem(1, metrics, _arrays(), SENT, weight_key="n")
    assert problem is not None and problem.kind == MALFORMED and "'n'" in problem.reason
    assert reply_problem(1, metrics, _arrays(), SENT) is None  # no weight asked for


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"w": np.ones((2, 3))}, "missing ['b']"),
        (_arrays(c=np.ones(1)), "extra ['c']"),
        (_arrays(w=np.ones((3, 2))), "'w' has shape (3, 2), expected (2, 3)"),
    ],
)
def test_keys_and_shapes_must_match_the_sent_model(arrays: dict, words: str) -> None:
    problem = reply_problem(1, [{"n": 1}], arrays, SENT)
    assert problem is not None and problem.kind == MALFORMED and words in problem.reason


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_their_own_kind(bad: float) -> None:
    w = np.ones((2, 3), np.float32)
    w[1, 2] = bad
    problem = reply_problem(1, [{"n": 1}], _arrays(w=w), SENT)
    assert problem is not None and problem.kind == NONFINITE and "'w'" in problem.reason


def test_a_wrong_shape_counts_before_non_finite_values_of_another_key() -> None:
    w = np.full((2, 3), np.nan, np.float32)  # first key: NaN; second key: wrong shape
    problem = reply_problem(1, [{"n": 1}], _arrays(w=w, b=np.zeros(3)), SENT)
    assert problem is not None and problem.kind == MALFORMED and "'b'" in problem.reason


def test_integer_arrays_are_always_finite() -> None:
    assert is_finite(np.array([1, 2], np.int64))
    assert not is_finite(np.array([1.0, np.nan]))
