"""Information measures against closed forms, identities and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsim.errors import DataError
from fedsim.fairness.information import (
    conditional_entropy,
    conditional_mutual_information,
    entropy,
    mutual_information,
    normalize,
)


def _binary_entropy(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def test_entropy_uniform_and_deterministic() -> None:
    assert entropy(np.ones(8)) == pytest.approx(3.0, abs=1e-12)
    assert entropy(np.ones((2, 4))) == pytest.approx(3.0, abs=1e-12)
    assert entropy([0.0, 5.0, 0.0]) == 0.0
    assert entropy([0.25, 0.75]) == pytest.approx(_binary_entropy(0.25), abs=1e-12)


def test_base_argument() -> None:
    assert entropy(np.ones(8), base=math.e) == pytest.approx(math.log(8), abs=1e-12)
    assert entropy(np.ones(16), base=4) == pytest.approx(2.0, abs=1e-12)
    assert mutual_information(np.eye(4), base=4) == pytest.approx(1.0, abs=1e-12)
    assert conditional_mutual_information(_xor_table(), base=math.e) == pytest.approx(
        math.log(2), abs=1e-12
    )


@pytest.mark.parametrize("base", [0, 1, -2, math.inf])
def test_bad_base_raises(base: float) -> None:
    with pytest.raises(ValueError, match="base"):
        entropy([1, 1], base=base)


def test_mutual_information_closed_forms() -> None:
    assert mutual_information(np.eye(2)) == pytest.approx(1.0, abs=1e-12)
    assert mutual_information(np.eye(3) * 7) == pytest.approx(math.log2(3), abs=1e-12)
    independent = np.outer([0.2, 0.3, 0.5], [0.6, 0.4])
    assert mutual_information(independent) == pytest.approx(0.0, abs=1e-12)
    eps = 0.1  # binary symmetric channel with uniform input: 1 - h(eps)
    channel = 0.5 * np.array([[1 - eps, eps], [eps, 1 - eps]])
    assert mutual_information(channel) == pytest.approx(1 - _binary_entropy(eps), abs=1e-12)


def _xor_table() -> np.ndarray:
    """X, Z uniform and independent, Y = X xor Z; axes [x, y, z]."""
    table = np.zeros((2, 2, 2))
    for x in range(2):
        for z in range(2):
            table[x, x ^ z, z] = 1
    return table


def test_conditional_mutual_information_closed_forms() -> None:
    xor = _xor_table()
    assert mutual_information(xor.sum(axis=2)) == pytest.approx(0.0, abs=1e-12)
    assert conditional_mutual_information(xor) == pytest.approx(1.0, abs=1e-12)
    same = np.zeros((2, 2, 2))  # X = Y = Z
    same[0, 0, 0] = same[1, 1, 1] = 1
    assert conditional_mutual_information(same) == 0.0
    copy_indep = np.eye(2)[:, :, None] * np.array([0.3, 0.7])  # X = Y, Z independent
    assert conditional_mutual_information(copy_indep) == pytest.approx(1.0, abs=1e-12)


def test_conditional_entropy_closed_forms() -> None:
    assert conditional_entropy(np.eye(3)) == 0.0
    assert conditional_entropy(np.ones((4, 2))) == pytest.approx(2.0, abs=1e-12)


def test_counts_and_probabilities_agree() -> None:
    counts = np.random.default_rng(0).integers(0, 20, size=(3, 4, 2)).astype(float)
    probs = counts / counts.sum()
    assert conditional_mutual_information(counts) == conditional_mutual_information(probs)
    assert mutual_information(counts[:, :, 0]) == pytest.approx(
        mutual_information(probs[:, :, 0]), abs=1e-15
    )
    assert entropy(counts) == pytest.approx(entropy(probs), abs=1e-12)
    np.testing.assert_allclose(normalize(counts), probs)


def test_zero_cells_are_exact() -> None:
    table = np.array([[0.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
    value = mutual_information(table)
    assert np.isfinite(value)
    assert value == pytest.approx(mutual_information(table[1:]), abs=1e-15)


def test_tiny_marginals_do_not_underflow() -> None:
    # Found by hypothesis: p(x,z) p(y,z) underflowed to 0 and the sum became inf.
    table = np.array([[[1.0, 3.25e-292]]])
    assert conditional_mutual_information(table) == 0.0
    assert mutual_information(np.array([[1.0, 0.0], [0.0, 1e-300]])) == pytest.approx(
        0.0, abs=1e-12
    )
    assert mutual_information(np.array([[1e-300, 0.0], [0.0, 1e-300]])) == pytest.approx(1.0)


_tables = arrays(np.float64, st.tuples(*[st.integers(1, 4)] * 3), elements=st.floats(0, 10))


@settings(max_examples=60, deadline=None)
@given(_tables)
def test_chain_rule_identities(table: np.ndarray) -> None:
    if table.sum() <= 0:
        with pytest.raises(DataError):
            entropy(table)
        return
    h = entropy
    h_xz, h_yz, h_z = table.sum(axis=1), table.sum(axis=0), table.sum(axis=(0, 1))
    cmi = conditional_mutual_information(table)
    assert cmi >= 0
    assert cmi == pytest.approx(h(h_xz) + h(h_yz) - h(table) - h(h_z), abs=1e-9)
    xy = table.sum(axis=2)
    mi = mutual_information(xy)
    assert mi >= 0
    assert mi == pytest.approx(h(xy.sum(axis=1)) + h(xy.sum(axis=0)) - h(xy), abs=1e-9)
    assert conditional_entropy(xy) == pytest.approx(h(xy) - h(xy.sum(axis=0)), abs=1e-9)
    assert mi <= min(h(xy.sum(axis=1)), h(xy.sum(axis=0))) + 1e-9


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([[1.0, -1.0], [1.0, 1.0]], "negative"),
        ([[1.0, np.nan], [1.0, 1.0]], "NaN"),
        ([[1.0, np.inf], [1.0, 1.0]], "infinite"),
        (np.zeros((2, 2)), "sums to zero"),
        (np.zeros((0, 2)), "empty"),
        (np.ones(4), "2 axes"),
        (np.ones((2, 2, 2)), "2 axes"),
        ([["a", "b"], ["c", "d"]], "numeric"),
    ],
)
def test_bad_tables_raise_data_error(table: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        mutual_information(table)  # type: ignore[arg-type]


def test_conditional_mutual_information_needs_three_axes() -> None:
    with pytest.raises(DataError, match="3 axes"):
        conditional_mutual_information(np.ones((2, 2)))
