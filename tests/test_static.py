"""House rules that tools check: ruff lint and format, mypy on the packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ["fedsim", "strategies", "clients", "fairness"]
#: Checked by ruff too (not by mypy, which checks the installed packages).
LINTED = [*FOLDERS, "tests", "bench", "examples"]
#: Top-level source folders and the fedsim subpackage each installs as.
SUBPACKAGES = {
    "clients": "fedsim.clients",
    "strategies": "fedsim.strategies",
    "fairness": "fedsim.fairness",
}


def _run(*cmd: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint_is_clean() -> None:
    proc = _run("ruff", "check", *LINTED)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_ruff_format_is_clean() -> None:
    proc = _run("ruff", "format", "--check", *LINTED)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_is_clean_on_the_packages(tmp_path: Path) -> None:
    # mypy cannot follow setuptools' package-dir mapping, so it checks a staged tree
    # shaped as installed: fedsim/ with clients/, strategies/, fairness/ inside.
    staged = tmp_path / "fedsim"
    staged.mkdir()
    for entry in (REPO / "fedsim").iterdir():
        (staged / entry.name).symlink_to(entry)
    for folder in SUBPACKAGES:
        (staged / folder).symlink_to(REPO / folder)
    proc = _run("mypy", "-p", "fedsim", "--config-file", str(REPO / "pyproject.toml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Success" in proc.stdout


def test_no_deprecated_flower_surfaces() -> None:
    # Spelled in pieces so that this file does not match its own search.
    banned = tuple(
        "".join(parts)
        for parts in (
            ("from flwr.", "server.strategy"),
            ("from flwr.", "common"),
            ("NumPy", "Client"),
            ("start_", "simulation"),
        )
    )
    offenders = [
        f"{path.relative_to(REPO)}: {word}"
        for pkg in FOLDERS
        for path in (REPO / pkg).rglob("*.py")
        for word in banned
        if word in path.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders


#: The one module allowed to touch Flower's private parts, and its contract test.
FLOWER_SEAM = {"fedsim/engine/_flower_compat.py", "tests/fedsim/test_flower_compat.py"}


def _private_flower_access(path: Path) -> list[str]:
    """``Name._attr`` on names imported from flwr, ``__dict__[`` and ``flwr.supercore``."""
    text = path.read_text(encoding="utf-8")
    # Spelled in pieces so that this file does not match its own search.
    found = [word for word in ("flwr." + "supercore", "__dict__" + "[") if word in text]
    tree = ast.parse(text)
    flower_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "flwr":
            flower_names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            flower_names.update(
                alias.asname or alias.name.split(".")[0]
                for alias in node.names
                if alias.name.split(".")[0] == "flwr"
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in flower_names
        ):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return found


def test_private_flower_parts_only_in_the_compat_module() -> None:
    offenders = [
        f"{path.relative_to(REPO)}: {', '.join(found)}"
        for folder in (*LINTED,)
        for path in (REPO / folder).rglob("*.py")
        if str(path.relative_to(REPO)) not in FLOWER_SEAM
        and path != Path(__file__).resolve()
        and (found := _private_flower_access(path))
    ]
    assert not offenders, offenders


def test_the_private_access_check_finds_what_it_bans(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from flwr.app import Message\n"
        "import flwr\n"
        "Message._secret = 1\n"
        "flwr._internal\n"
        "self._fine = 2\n"
    )
    assert _private_flower_access(sample) == ["Message._secret (line 3)", "flwr._internal (line 4)"]
    sample.write_text(
        "from flwr." + "supercore.run import Run\nm.metadata." + "__dict__" + "['x']\n"
    )
    assert len(_private_flower_access(sample)) == 2
