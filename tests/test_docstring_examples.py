"""The ``Examples`` sections of public docstrings run as doctests."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import fedsim
import fedsim.seeds

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [fedsim, fedsim.seeds], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the examples name scenarios/default.toml
    result = doctest.testmod(module, raise_on_error=False, verbose=False)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
