"""House rules that tools check: ruff lint on everything, mypy on the four packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["fedsim", "strategies", "clients", "fairness"]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint_is_clean() -> None:
    proc = _run("ruff", "check", *PACKAGES, "tests", "bench")
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_is_clean_on_the_packages() -> None:
    proc = _run("mypy", *PACKAGES)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_no_deprecated_flower_surfaces() -> None:
    # Spelled in pieces so that this file does not match its own search.
    banned = tuple(
        "".join(parts)
        for parts in (("from flwr.", "server.strategy"), ("from flwr.", "common"),
                      ("NumPy", "Client"), ("start_", "simulation"))
    )  # fmt: skip
    offenders = [
        f"{path.relative_to(REPO)}: {word}"
        for pkg in PACKAGES
        for path in (REPO / pkg).rglob("*.py")
        for word in banned
        if word in path.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders
