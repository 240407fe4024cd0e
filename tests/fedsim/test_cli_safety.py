"""The CLI refuses unsafe or impossible runs with one line before writing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fedsim import results
from fedsim.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = str(REPO / "scenarios/default.toml")
TINY = ["--set", "rounds=1", "--set", "partition.num_clients=2", "--set", "fairness.enabled=false"]


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: "), err
    return lines[0]


def test_no_arguments_prints_usage_not_an_empty_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_main([], capsys)
    assert code == 0 and "Usage" in out + err and "fedsim: error" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import fedsim

    code, out, _ = _run_main(["--version"], capsys)
    assert code == 0 and out.strip() == f"fedsim {fedsim.__version__}"


def test_did_you_mean_is_printed_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_main(["rn"], capsys)
    line = _one_error_line(err)
    assert code == 2 and line.count("Did you mean") == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run"], "missing SCENARIO"),
        (["run", DEFAULT, "--resume", "runs/x"], "--resume continues the scenario saved"),
        (["run", "--resume", "runs/x", "--out", "y"], "drop --out"),
    ],
)
def test_run_argument_mistakes(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run_main(argv, capsys)
    assert code == 2 and fragment in _one_error_line(err)


@pytest.mark.parametrize("target", ["/dev/null", "/proc/fedsim", "file", "file/below"])
def test_unusable_out_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    (tmp_path / "file").write_text("keep me")
    out = target if target.startswith("/") else str(tmp_path / target)
    code, _, err = _run_main(["run", DEFAULT, "--out", out, "-q", *TINY], capsys)
    assert code == 2 and "--out" in _one_error_line(err)
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("strategy.options={eta=nan}", "strategy.options.eta: expected a finite number"),
        ("strategy.options={q=nan}", "strategy.options.q: expected a finite number"),
        ("strategy.options={server_momentum=inf}", "server_momentum: expected a finite"),
        ("model.hidden=[1000000,1000000]", "model.hidden=[1000000, 1000000]"),
    ],
)
def test_impossible_settings_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, fragment: str
) -> None:
    argv = ["run", DEFAULT, "--out", str(tmp_path / "o"), "-q", "--set", setting]
    code, _, err = _run_main(argv, capsys)
    assert code == 2 and fragment in _one_error_line(err)
    assert not (tmp_path / "o").exists()


def test_dataset_larger_than_memory_names_the_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", DEFAULT, "--out", str(tmp_path / "o"), "-q"]
    argv += ["--set", "data.num_samples=10000000", "--set", "data.num_features=100000"]
    code, _, err = _run_main(argv, capsys)
    line = _one_error_line(err)
    assert code == 2 and "data.num_samples" in line and "available" in line


def test_cuda_without_cuda_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["run", DEFAULT, "--out", str(tmp_path / "o"), "-q", "--set", "device='cuda'"]
    code, _, err = _run_main(argv, capsys)
    assert code == 2 and "CUDA is not available" in _one_error_line(err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["file", "set"])
def test_deeply_nested_toml_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    deep = "[" * 500 + "]" * 500
    if where == "file":
        scenario = tmp_path / "deep.toml"
        scenario.write_text(f"[strategy]\noptions = {{a = {deep}}}\n")
        argv = ["run", str(scenario)]
    else:
        argv = ["run", DEFAULT, "--set", f"strategy.options={{a={deep}}}"]
    code, _, err = _run_main([*argv, "--out", str(tmp_path / "o"), "-q"], capsys)
    assert code == 2 and "nested too deeply" in _one_error_line(err)


def test_reused_out_is_refused_and_overwrite_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _run_main(["run", DEFAULT, "--out", str(out), "-q", *TINY], capsys)[0] == 0
    (out / "report.html").write_text("stale report of the first run")
    code, _, err = _run_main(["run", DEFAULT, "--out", str(out), "-q", *TINY], capsys)
    assert code == 2 and "not empty" in _one_error_line(err)
    assert (out / "report.html").exists()
    argv = ["run", DEFAULT, "--out", str(out), "-q", "--overwrite", *TINY, "--set", "seed=1"]
    assert _run_main(argv, capsys)[0] == 0
    assert not (out / "report.html").exists()
    assert json.loads((out / results.SUMMARY).read_text())["seed"] == 1
    code, _, err = _run_main(["run", str(out / results.CONFIG), "-q"], capsys)
    assert code == 2 and "--resume" in _one_error_line(err)


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    argv = ["run", DEFAULT, "--out", str(tmp_path), "-q", "--overwrite", *TINY]
    code, _, err = _run_main(argv, capsys)
    assert code == 2 and "refusing to delete" in _one_error_line(err)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_without_a_terminal_each_round_is_one_plain_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", DEFAULT, "--out", str(tmp_path / "o"), *TINY, "--set", "rounds=3"]
    code, _, err = _run_main(argv, capsys)  # capsys: stderr is not a TTY
    lines = err.strip().splitlines()
    assert code == 0 and [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(line.startswith("round ") and "eval-acc 0." in line for line in lines)
    live = pd.read_csv(tmp_path / "o" / results.LIVE_METRICS)
    assert sorted(set(live["round"])) == [1, 2, 3]
    final = live[(live["round"] == 3) & (live.metric == "eval-acc")].value.item()
    summary = json.loads((tmp_path / "o" / results.SUMMARY).read_text())
    assert final == pytest.approx(summary["final"]["eval-acc"])


def test_failed_replies_total_counts_nonfinite_and_malformed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", DEFAULT, "--out", str(tmp_path / "o"), "-q", *TINY]
    argv += ["--set", "rounds=2", "--set", "partition.num_clients=4"]
    argv += ["--set", "faults.nan_prob=0.5", "--set", "faults.shape_prob=0.3"]
    assert _run_main(argv, capsys)[0] == 0
    frame = results.read_metrics(tmp_path / "o")
    server = frame[frame.client == "server"]
    counted = server[server.metric.str.contains(r"-(?:failed|nonfinite|malformed)-replies$")]
    assert set(counted.metric) >= {"train-nonfinite-replies", "train-malformed-replies"}
    expected = int(counted.value.sum())
    assert expected > int(server[server.metric == "train-failed-replies"].value.sum())
    summary = json.loads((tmp_path / "o" / results.SUMMARY).read_text())
    assert summary["failed_replies_total"] == expected


@pytest.mark.parametrize("target", ["folder", "file/runs.csv", "/proc/runs.csv"])
def test_sweep_out_is_checked_before_the_first_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    out = target if target.startswith("/") else str(tmp_path / target)
    argv = ["sweep", DEFAULT, "-g", "client.lr=0.1", "--seeds", "1", "--out", out]
    code, _, err = _run_main(argv, capsys)
    assert code == 2 and "--out" in _one_error_line(err)


def test_verbose_logs_at_info(tmp_path: Path) -> None:
    import subprocess
    import sys

    argv = [sys.executable, "-m", "fedsim.cli", "run", DEFAULT, "--out", str(tmp_path / "o")]
    argv += ["-q", *TINY, "--set", "faults.crash_prob=1.0"]  # every client fails: logged
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    loud = subprocess.run(
        [*argv, "--verbose", "--overwrite"], capture_output=True, text=True, timeout=120
    )
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "INFO fedsim" not in quiet.stderr
    assert "INFO fedsim.strategies.screening: round screening dropped" in loud.stderr
