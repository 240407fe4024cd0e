"""Checkpoint integrity: every corrupt, edited or crafted checkpoint ends in one
``fedsim: error:`` line and exit code 2 before anything is written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedsim
from fedsim import checkpoint, results
from fedsim.cli import main
from fedsim.errors import CheckpointError
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {
    **SMALL,
    "rounds": 3,
    "strategy.name": "fedadam",
    "strategy.options": {"eta": 0.01},
    "fairness.enabled": True,
}
Tensors = dict[str, np.ndarray]


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FedAdam run with fairness accounting, stopped after its round-2 checkpoint."""
    out = tmp_path_factory.mktemp("ckpt") / "run"

    def stop_after_round_2(done: int, total: int, latest: object) -> None:
        if done == 2:
            raise _Stop

    with pytest.raises(_Stop):
        fedsim.run(REPO / "scenarios/default.toml", SETTINGS, out=out, progress=stop_after_round_2)
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def _rewrite(
    run_dir: Path,
    header_edit: Callable[[dict[str, Any]], None] | None = None,
    tensors_edit: Callable[[Tensors], None] | None = None,
) -> None:
    """Edit a checkpoint *and recompute its digest*, as a crafted file would."""
    from safetensors.numpy import save_file

    header, tensors = checkpoint.load(run_dir)
    if header_edit is not None:
        header_edit(header)
    if tensors_edit is not None:
        tensors_edit(tensors)
    header["sha256"] = checkpoint.digest(header, tensors)
    save_file(tensors, str(run_dir / checkpoint.CHECKPOINT), metadata={"fedsim": _dumps(header)})


def _dumps(header: dict[str, Any]) -> str:
    import json

    return json.dumps(header)


def _resume_cli(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    before = (run_dir / checkpoint.CHECKPOINT).read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["run", "--resume", str(run_dir), "-q"])
    err = capsys.readouterr().err
    assert (run_dir / checkpoint.CHECKPOINT).read_bytes() == before  # nothing written
    assert not (run_dir / results.SUMMARY).exists()
    return int(exc.value.code or 0), err


def _first(tensors: Tensors, prefix: str) -> str:
    return next(k for k in sorted(tensors) if k.startswith(prefix))


def _flip_last_byte(d: Path) -> None:
    path = d / checkpoint.CHECKPOINT
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01  # the last byte belongs to the tensor payload
    path.write_bytes(bytes(blob))


def _truncate(d: Path) -> None:
    path = d / checkpoint.CHECKPOINT
    path.write_bytes(path.read_bytes()[:-64])


def _edit_config(d: Path) -> None:
    path = d / results.CONFIG
    path.write_text(path.read_text().replace("rounds = 3", "rounds = 30"))


def _wrong_shape(d: Path) -> None:
    def edit(t: Tensors) -> None:
        key = _first(t, checkpoint.ARRAYS)
        t[key] = np.zeros(t[key].size + 1, dtype=t[key].dtype)

    _rewrite(d, tensors_edit=edit)


def _nan_array(d: Path) -> None:
    def edit(t: Tensors) -> None:
        key = _first(t, checkpoint.ARRAYS)
        t[key] = np.full_like(t[key], np.nan)

    _rewrite(d, tensors_edit=edit)


def _missing_array(d: Path) -> None:
    _rewrite(d, tensors_edit=lambda t: t.pop(_first(t, checkpoint.ARRAYS)))


def _round(value: Any) -> Callable[[Path], None]:
    return lambda d: _rewrite(d, header_edit=lambda h: h.update(round=value))


def _strategy_tensor(attribute: str) -> Callable[[Path], None]:
    """A tensor naming a strategy attribute that is not state (a method, config)."""
    return lambda d: _rewrite(
        d, tensors_edit=lambda t: t.update({f"strategy/{attribute}/w": np.zeros(1)})
    )


def _header_field(d: Path) -> None:
    # the old format restored any attribute a header's "strategy" entry named
    _rewrite(d, header_edit=lambda h: h.update(strategy={"configure_train": {"kind": "scalar"}}))


def _random_state(d: Path) -> None:
    _rewrite(d, header_edit=lambda h: h.update(random=[3, [1, 2, 3], None]))


def _nan_moment(d: Path) -> None:
    def edit(t: Tensors) -> None:
        key = _first(t, "strategy/m_t/")
        t[key] = np.full_like(t[key], np.nan)

    _rewrite(d, tensors_edit=edit)


def _negative_counts(d: Path) -> None:
    def edit(t: Tensors) -> None:
        key = _first(t, "fairness/counts/")
        t[key] = -t[key]

    _rewrite(d, tensors_edit=edit)


CORRUPTIONS = {
    "flipped-byte": (_flip_last_byte, "is corrupt"),
    "truncated": (_truncate, "is not a fedsim checkpoint"),
    "edited-config": (_edit_config, "was edited"),
    "wrong-shape": (_wrong_shape, "does not match the model's"),
    "nan-array": (_nan_array, "NaN"),
    "missing-array": (_missing_array, "missing"),
    "round-1e9": (_round(10**9), "not an integer in [0, 3]"),
    "round-negative": (_round(-5), "not an integer in [0, 3]"),
    "round-float": (_round(2.5), "not an integer in [0, 3]"),
    "strategy-method": (_strategy_tensor("configure_train"), "keeps no state named"),
    "strategy-config": (_strategy_tensor("eta"), "keeps no state named"),
    "header-field": (_header_field, "unknown checkpoint header fields"),
    "random-state": (_random_state, "random state"),
    "nan-moment": (_nan_moment, "NaN"),
    "negative-counts": (_negative_counts, "non-negative whole numbers"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_is_one_error_line_exit_2(
    name: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt, message = CORRUPTIONS[name]
    copy = _copy(run_dir, tmp_path)
    corrupt(copy)
    code, err = _resume_cli(copy, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fedsim: error: ")
    assert message in err


def test_corrupt_checkpoint_raises_checkpoint_error_in_python(
    run_dir: Path, tmp_path: Path
) -> None:
    copy = _copy(run_dir, tmp_path)
    _flip_last_byte(copy)
    with pytest.raises(CheckpointError, match="is corrupt"):
        fedsim.resume(copy)


def test_rewritten_intact_checkpoint_still_resumes_to_the_last_round(
    run_dir: Path, tmp_path: Path
) -> None:
    copy = _copy(run_dir, tmp_path)
    _rewrite(copy)  # the helper itself does not break a checkpoint
    result = fedsim.resume(copy)
    assert result.summary["rounds"] == SETTINGS["rounds"]
    header, _ = checkpoint.load(copy)
    assert header["round"] == SETTINGS["rounds"] and header["format"] == checkpoint.FORMAT


def test_cli_subprocess_flipped_byte_exits_2_with_one_line(run_dir: Path, tmp_path: Path) -> None:
    copy = _copy(run_dir, tmp_path)
    _flip_last_byte(copy)
    argv = [sys.executable, "-m", "fedsim.cli", "run", "--resume", str(copy), "-q"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fedsim: error: ")
    assert "is corrupt" in proc.stderr
