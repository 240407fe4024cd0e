"""The block barrier method for many clients against the cone solver, and at K = 3000."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import fedsim.fairness.pid as pid
from fedsim.errors import SolverError
from fedsim.fairness.information import conditional_mutual_information, mutual_information
from fedsim.fairness.pid import BLOCK_BARRIER, LARGE_K_CLIENTS, PIDResult, decompose
from fedsim.fairness.pid_tables import pid_from_csv

ORACLE_TOL = 1e-6  # bits: block barrier vs Clarabel
GAP_TOL = 1e-8  # bits: the certified gap the barrier must reach


def _biased_table(num_clients: int, num_yhat: int, rng: np.random.Generator) -> np.ndarray:
    """P(z, yhat, s) with random client sizes, group mixes and per-client bias."""
    p_s = rng.dirichlet(np.ones(num_clients))
    p_z1 = rng.beta(2.0, 2.0, size=num_clients)
    p_z_s = np.stack([1 - p_z1, p_z1])
    logits = rng.normal(size=(2, num_yhat, num_clients))
    logits[1, -1] += rng.uniform(0.2, 1.5, size=num_clients)  # z = 1 favours the last ŷ
    p_y_zs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return p_z_s[:, None, :] * p_y_zs * p_s


def _tables(num_clients: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    zero_cells = rng.random((2, 2, num_clients)) * (rng.random((2, 2, num_clients)) > 0.3)
    zero_cells[:, :, 0] = 1.0  # every z and ŷ value keeps some mass
    return {
        "binary": _biased_table(num_clients, 2, rng),
        "3-valued yhat": _biased_table(num_clients, 3, rng),
        "skewed": rng.dirichlet(np.full(4 * num_clients, 0.2)).reshape(2, 2, num_clients),
        "zero cells": zero_cells,
        "3 z values": rng.random((3, 2, num_clients)),
    }


def _cone(table: np.ndarray) -> PIDResult | None:
    """The cone oracle: Clarabel, else SCS; None when neither reaches 'optimal'."""
    for solver in ("CLARABEL", "SCS"):
        try:
            return decompose(table, shortcuts=False, solver=solver)
        except SolverError:
            continue
    return None


@pytest.mark.parametrize("num_clients", [2, 5, 20, 100])
def test_block_barrier_matches_cone_solver(num_clients: int) -> None:
    compared = 0
    for seed in range(2):
        for name, table in _tables(num_clients, seed).items():
            barrier = decompose(table, shortcuts=False, solver=BLOCK_BARRIER)
            assert (barrier.solver, barrier.status) == (BLOCK_BARRIER, "optimal"), name
            assert barrier.gap is not None and 0.0 <= barrier.gap <= GAP_TOL, name
            cone = _cone(table)
            if cone is None:  # cold cone solves can stop at 'optimal_inaccurate'
                continue
            compared += 1
            assert barrier.unique == pytest.approx(cone.unique, abs=ORACLE_TOL), (name, seed)
    assert compared >= 8  # of 10 tables: the oracle checks nearly all of them


def test_default_solvers_fall_back_to_the_barrier_where_the_cone_stops_short() -> None:
    # A skewed 100-client table on which both cone solvers end 'optimal_inaccurate' cold.
    table = _tables(100, 1)["skewed"]
    assert _cone(table) is None
    result = decompose(table, shortcuts=False)
    assert (result.solver, result.status) == (BLOCK_BARRIER, "optimal")
    assert result.gap is not None and result.gap <= GAP_TOL


def test_certified_gap_brackets_the_cone_optimum() -> None:
    table = _tables(20, 7)["binary"]
    cone = decompose(table, shortcuts=False, solver="CLARABEL")
    barrier = pid.unique_information(table / table.sum(), gap_tol=1e-4)
    upper, lower = barrier.unique_nats, barrier.unique_nats - barrier.gap_nats
    assert 1e-6 < barrier.gap_nats <= 1e-4  # stopped early, so the bracket is wide
    assert lower - 1e-9 <= cone.unique * math.log(2) <= upper + 1e-9


def test_closed_forms_hold_on_the_barrier_path() -> None:
    cases = {  # table: (unique, redundant, masked) in bits
        "copy Z": (np.eye(2)[:, :, None] * np.ones(2), (1.0, 0.0, 0.0)),
        "copy S": (np.eye(2)[:, None, :] * np.eye(2)[None, :, :], (0.0, 1.0, 0.0)),
    }
    for name, (table, terms) in cases.items():
        result = decompose(table, shortcuts=False, solver=BLOCK_BARRIER)
        got = (result.unique, result.redundant, result.masked)
        assert got == pytest.approx(terms, abs=1e-7), name


@pytest.mark.parametrize("num_clients", [LARGE_K_CLIENTS - 1, LARGE_K_CLIENTS])
def test_path_is_chosen_by_number_of_clients(num_clients: int) -> None:
    table = _tables(num_clients, 0)["binary"]
    result = decompose(table)
    expected = BLOCK_BARRIER if num_clients >= LARGE_K_CLIENTS else "CLARABEL"
    assert result.solver == expected
    assert (result.gap is None) == (expected == "CLARABEL")


def _check_identities(table: np.ndarray, result: PIDResult) -> None:
    p = table / table.sum()
    assert result.global_disparity == pytest.approx(mutual_information(p.sum(axis=2)), abs=1e-12)
    assert result.local_disparity == pytest.approx(conditional_mutual_information(p), abs=1e-12)
    assert result.unique + result.redundant == pytest.approx(result.global_disparity, abs=1e-12)
    assert result.unique + result.masked == pytest.approx(result.local_disparity, abs=1e-12)
    assert min(result.unique, result.redundant, result.masked) >= 0.0
    assert result.redundant <= mutual_information(p.sum(axis=1)) + 1e-9


@pytest.mark.parametrize(("num_clients", "kind"), [(3000, "binary"), (1000, "3-valued yhat")])
def test_identities_at_thousands_of_clients(num_clients: int, kind: str) -> None:
    table = _tables(num_clients, 3)[kind]
    result = decompose(table)
    assert result.solver == BLOCK_BARRIER and result.gap is not None and result.gap <= GAP_TOL
    _check_identities(table, result)


def test_copy_prediction_at_thousands_of_clients() -> None:
    # Ŷ = Z in every client: P(z,ŷ) forces Q = P, so Uni = I(Z;Ŷ|S) = H(Z|S) and
    # Red = I(Z;S), Syn = 0. Most cells are structurally zero, and the answer is
    # neither the barrier's starting point's value nor zero.
    rng = np.random.default_rng(4)
    table = np.eye(2)[:, :, None] * rng.dirichlet(np.ones(2 * 3000)).reshape(2, 1, 3000)
    result = decompose(table, shortcuts=False)
    assert result.solver == BLOCK_BARRIER
    assert 0.1 < result.unique == pytest.approx(result.local_disparity, abs=1e-7)
    assert result.redundant == pytest.approx(mutual_information(table.sum(axis=1)), abs=1e-7)
    assert result.masked == pytest.approx(0.0, abs=1e-7)


def test_csv_with_3000_clients_uses_the_barrier(tmp_path: pytest.TempPathFactory) -> None:
    table = np.round(1000 * _tables(3000, 5)["binary"] * 3000)
    z, yhat, s = np.indices(table.shape).reshape(3, -1)
    path = tmp_path / "counts.csv"  # type: ignore[operator]
    pd.DataFrame({"z": z, "yhat": yhat, "s": s, "count": table.ravel()}).to_csv(path, index=False)
    result = pid_from_csv(path)
    assert result.solver == BLOCK_BARRIER
    _check_identities(table, result)


def test_peak_memory_at_3000_clients_is_bounded() -> None:
    # The cone program needed about 3.8 GB here (its compiled parameter tensor
    # grows as K^2); the barrier path keeps to O(K). Own process, so that the
    # peak (ru_maxrss) is this decomposition's and not the test session's.
    script = textwrap.dedent(
        """
        import resource
        import numpy as np
        from fedsim.fairness.pid import decompose
        rng = np.random.default_rng(0)
        table = rng.random((2, 2, 3000)) * rng.random((1, 1, 3000))
        print(decompose(table).solver)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert out[0] == BLOCK_BARRIER
    assert int(out[1]) * 1024 < 1.5 * 2**30  # ru_maxrss is in KiB on Linux
