"""Every benchmark script the README names exists and parses its arguments.

Benchmarks take minutes and print timings, so the suite does not run them (timings
belong in bench/, not in asserts); this keeps a documented ``python bench/X.py`` from
pointing at a script that is gone or broken on import.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAMED = sorted(set(re.findall(r"bench/[a-z_]+\.py", (REPO / "README.md").read_text("utf-8"))))


def test_the_readme_names_benchmark_scripts() -> None:
    assert len(NAMED) >= 5


@pytest.mark.parametrize("script", NAMED)
def test_named_benchmark_script_imports_and_shows_its_usage(script: str) -> None:
    assert (REPO / script).is_file(), f"README names {script}, which does not exist"
    proc = subprocess.run(
        [sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
