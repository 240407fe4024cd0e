"""The ``Examples`` sections of public docstrings run as doctests."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import fedsim
import fedsim.clients.losses
import fedsim.fairness.aglfop
import fedsim.fairness.pid
import fedsim.seeds
import fedsim.strategies.principal
import fedsim.strategies.screening_rules

REPO = Path(__file__).resolve().parents[1]


MODULES = [
    fedsim,
    fedsim.seeds,
    fedsim.fairness.pid,
    fedsim.fairness.aglfop,
    fedsim.strategies.principal,
    fedsim.strategies.screening_rules,
    fedsim.clients.losses,
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the examples name scenarios/default.toml
    result = doctest.testmod(module, raise_on_error=False, verbose=False)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
