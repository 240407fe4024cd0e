"""Shared test set-up: real datasets come from FEDSIM_DATA_DIR (../shared/data in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

if not os.environ.get("FEDSIM_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["FEDSIM_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("FEDSIM_DATA_DIR", SHARED_DATA))
    assert path.is_dir(), f"test data folder missing: {path} (set FEDSIM_DATA_DIR)"
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every download attempt fail as it would offline."""
    import urllib.error
    import urllib.request

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


SMALL = {
    "rounds": 2,
    "partition.num_clients": 4,
    "data.num_samples": 800,
    "fairness.enabled": False,
}
