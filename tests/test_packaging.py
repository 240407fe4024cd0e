"""One import root: fedsim owns exactly one top-level name, installed or editable.

The source folders clients/, strategies/ and fairness/ install as fedsim.clients,
fedsim.strategies and fedsim.fairness (pyproject's package-dir); a user's project with
its own clients.py, strategies.py and fairness.py must not shadow them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

USER_MODULES = {
    "clients.py": "raise ImportError('the user project clients.py was imported')\n",
    "strategies.py": "raise ImportError('the user project strategies.py was imported')\n",
    "fairness.py": "raise ImportError('the user project fairness.py was imported')\n",
}
RUN_TWO_ROUNDS = (
    "import fedsim; "
    "r = fedsim.run('{scenario}', overrides={{'rounds': 2, 'fairness.enabled': False}}); "
    "import fedsim.clients.app, fedsim.strategies.fedld, fedsim.fairness.pid; "
    "print('final', r.summary['final']['eval-acc'], fedsim.clients.app.__name__)"
)


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A directory holding the user's own clients.py, strategies.py and fairness.py."""
    for name, text in USER_MODULES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_editable_install_runs_beside_user_modules_named_like_fedsim_folders(
    user_project: Path,
) -> None:
    code = RUN_TWO_ROUNDS.format(scenario=REPO / "scenarios" / "default.toml")
    proc = _python(code, user_project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final" in proc.stdout and "fedsim.clients.app" in proc.stdout


def test_wheel_install_has_one_top_level_name_and_runs(tmp_path: Path, user_project: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert [n for n in top if n != "bin"] == ["fedsim"]
    installed = target / "fedsim"
    for sub in ("clients", "strategies", "fairness", "data", "engine", "deploy"):
        assert (installed / sub / "__init__.py").is_file(), sub
    # The wheel's fedsim (not the checkout's) runs a scenario beside the user's modules.
    code = RUN_TWO_ROUNDS.format(scenario=REPO / "scenarios" / "default.toml")
    code += "; print('from', fedsim.__file__)"
    proc = _python(code, user_project, PYTHONPATH=str(target))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"from {installed}" in proc.stdout


def test_every_source_package_is_listed_for_installation() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    listed = set(config["packages"])
    found = set()
    for name, folder in mapping.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found == listed
