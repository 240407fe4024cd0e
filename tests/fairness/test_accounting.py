"""fedsim.fairness.accounting: pooled count tables, batched client metrics, input checks.

The oracles that go through evaluate replies (per-sample mutual information, PID
identities and canonical cases) are in ``tests/strategies/test_fairness_accounting.py``;
here the pure functions are checked on count tables directly.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import fedsim.fairness.accounting as accounting
from fedsim.errors import DataError, SolverError
from fedsim.fairness.accounting import client_fairness, pool_counts, round_fairness
from fedsim.fairness.information import mutual_information
from fedsim.fairness.metrics import (
    group_accuracy,
    table_metrics,
)

SCALARS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
)


@pytest.mark.parametrize(("groups", "classes"), [(2, 2), (3, 2), (4, 3), (1, 3)])
def test_batched_client_metrics_equal_the_one_table_metrics(groups: int, classes: int) -> None:
    # The wrapper batches per-client metrics over clients; fairness.metrics and
    # fairness.information own the definitions, one table at a time.
    rng = np.random.default_rng(groups * 10 + classes)
    counts = rng.integers(0, 6, size=(30, groups, classes, classes)) * (
        rng.random((30, groups, classes, classes)) < 0.6
    )
    counts[rng.random(30) < 0.3, -1] = 0  # clients missing the last group
    counts[counts.sum(axis=(1, 2, 3)) == 0, 0, 0, 0] = 1
    for table, row in zip(counts, client_fairness(counts), strict=True):
        named = table_metrics(table)
        if (table.sum(axis=(1, 2)) > 0).sum() < 2:  # one group: n/a, not a perfect 0
            assert all(math.isnan(row[k]) for k in ("disparity", *SCALARS))
            named = {k: v for k, v in named.items() if k not in SCALARS}
        else:
            disparity = mutual_information(table.sum(axis=1))
            assert row["disparity"] == pytest.approx(disparity, abs=1e-12)
        assert {k: v for k, v in row.items() if k != "disparity" and not math.isnan(v)} == (
            pytest.approx(named, abs=1e-12)
        )
        assert set(group_accuracy(table)) == {
            int(k.rsplit("-", 1)[1]) for k in row if k.startswith("accuracy-")
        }


def test_pool_counts_stacks_and_rejects_bad_tables() -> None:
    a, b = np.arange(8).reshape(2, 2, 2), np.ones((2, 2, 2))
    pooled = pool_counts([a, b])
    assert pooled.dtype == np.int64 and pooled.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(pooled[0], a)
    with pytest.raises(DataError, match="no client count table"):
        pool_counts([])
    with pytest.raises(DataError, match="one 3-D shape"):
        pool_counts([a, np.ones((3, 2, 2))])
    with pytest.raises(DataError, match="one 3-D shape"):
        pool_counts([np.ones((2, 2))])


def test_round_fairness_rejects_non_4d_counts() -> None:
    with pytest.raises(DataError, match="4-D"):
        round_fairness(np.ones((2, 2, 2)))


def test_round_fairness_pid_off_and_solver_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = np.array(
        [[[[30, 5], [8, 40]], [[12, 9], [3, 20]]], [[[4, 9], [2, 6]], [[20, 1], [5, 30]]]]
    )
    joint = counts.sum(axis=2).transpose(1, 2, 0)
    skipped = round_fairness(counts, pid=False)
    assert skipped.pid_status == "skipped" and not skipped.pid_solved
    assert skipped.global_disparity == pytest.approx(mutual_information(joint.sum(axis=2)))
    assert "unique" not in skipped.metrics(with_pid=False)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise SolverError("infeasible")

    monkeypatch.setattr(accounting, "decompose", fail)
    failed = round_fairness(counts)
    assert failed.pid_status.startswith("failed") and math.isnan(failed.metrics()["unique"])
    assert failed.metrics()["pid-solved"] == 0.0
    assert failed.global_disparity == skipped.global_disparity


def test_accounting_does_not_import_flower() -> None:
    """The maths stays importable without Flower (house rule: glue at the edge)."""
    code = (
        "import sys, fedsim.fairness.accounting; "
        "print(sorted(m for m in sys.modules if m.startswith(('flwr', 'ray'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
