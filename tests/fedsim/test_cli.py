"""The CLI: user errors are one line on stderr with exit code 2, and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.cli import main

REPO = Path(__file__).resolve().parents[2]


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("rounds = 'x'\n", "rounds: expected an integer"),
        ("[client]\nlr = -3\n", "client.lr: expected a value > 0.0"),
        ("colour = 'red'\n", "colour: unknown key"),
        ("rounds = [\n", "invalid TOML"),
        ("[strategy]\nname = 'fedfoo'\n", "unknown strategy 'fedfoo'"),
        (
            "[strategy]\nname = 'fedprox'\noptions = {mu = 1}\n",
            "strategy.options.mu: not an option",
        ),
        ("[strategy]\nname = 'fedprox'\noptions = {proximal_mu = 'x'}\n", "expects float"),
        ("[data]\ndataset = 'adult'\nsensitive = 'height'\n", "no sensitive attribute 'height'"),
    ],
)
def test_bad_scenarios_give_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str
) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(content)
    out_dir = tmp_path / "out"
    code, _, err = _run_main(["run", str(scenario), "--out", str(out_dir), "-q"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: ")
    assert fragment in lines[0]
    assert not out_dir.exists()


def test_bad_set_and_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_main(["run", "scenarios/default.toml", "--set", "rounds", "-q"], capsys)
    assert code == 2 and "key.path=value" in err
    code, _, err = _run_main(["run", "scenarios/default.toml", "--engine", "spark", "-q"], capsys)
    assert code == 2 and "--engine" in err
    code, _, err = _run_main(["run", "--bogus"], capsys)
    assert code == 2 and err.startswith("fedsim: error: ") and len(err.strip().splitlines()) == 1


def test_missing_data_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_network: None
) -> None:
    out_dir = tmp_path / "out"
    argv = [
        "run",
        str(REPO / "scenarios/adult.toml"),
        "--data-dir",
        str(tmp_path),
        "--out",
        str(out_dir),
        "-q",
    ]
    code, _, err = _run_main(argv, capsys)
    assert code == 2 and "adult/adult.data" in err and "download" in err
    assert not out_dir.exists()


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_main(["list"], capsys)
    assert code == 0
    for word in ("adult", "fashion-mnist", "dirichlet-label", "fedavg", "fedld", "cnn"):
        assert word in out


def test_installed_entry_point_reports_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\x00\x01binary\xff")
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("fedsim: error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_pid_command_on_a_users_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "xor.csv"  # Z independent of S, Yhat = Z xor S: purely masked disparity
    table.write_text("z,yhat,s,count\n0,0,0,25\n1,1,0,25\n0,1,1,25\n1,0,1,25\n")
    code, out, _ = _run_main(["pid", str(table)], capsys)
    assert code == 0
    values = {
        line.split()[0]: line.split()[-2 if "bits" in line else -1] for line in out.splitlines()
    }
    assert float(values["masked"]) == pytest.approx(1.0, abs=1e-6)
    assert float(values["unique"]) == pytest.approx(0.0, abs=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("z,yhat,s,count\n0,0,0,-3\n")
    code, _, err = _run_main(["pid", str(bad)], capsys)
    assert code == 2 and err.startswith("fedsim: error:") and "negative" in err


def test_sweep_prints_a_table_and_writes_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "runs.csv"
    argv = [
        "sweep",
        str(REPO / "scenarios/default.toml"),
        "--grid",
        "client.lr=0.01,0.1",
        "--seeds",
        "2",
        "--set",
        "rounds=1",
        "--set",
        "partition.num_clients=3",
        "--set",
        "fairness.enabled=false",
        "--out",
        str(csv),
    ]
    code, out, _ = _run_main(argv, capsys)
    assert code == 0
    import pandas as pd

    runs = pd.read_csv(csv)
    assert len(runs) == 4 and set(runs["client.lr"]) == {0.01, 0.1}
    mean = runs[runs["client.lr"] == 0.1]["eval-acc"].mean()
    row = next(line for line in out.splitlines() if line.startswith("| 0.1 "))
    assert f"{mean:.4f}" in row
    code, _, err = _run_main(["sweep", "scenarios/default.toml", "--grid", "lr"], capsys)
    assert code == 2 and "--grid expects" in err
