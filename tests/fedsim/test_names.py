"""Built-in names have one owner, ``fedsim.config``; the runner, CLI and losses use its lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim import runner
from fedsim.cli import main
from fedsim.clients.losses import LOSS_NAMES, loss_by_name
from fedsim.config import ENGINES, LOSSES
from fedsim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_name_finds_its_run_function(name: str) -> None:
    run = runner._engine(name)
    assert callable(run) and run.__name__ == f"run_{name}"
    assert run.__module__ == f"fedsim.engine.{name}"


def test_an_unknown_engine_error_lists_the_engines() -> None:
    with pytest.raises(ConfigError, match=", ".join(ENGINES)):
        runner._engine("spark")


def test_the_cli_rejects_an_unknown_engine_naming_every_engine(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", str(REPO / "scenarios" / "default.toml"), "--engine", "spark"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err == f"fedsim: error: --engine: expected {', '.join(ENGINES)}, got 'spark'\n"


def test_the_cli_lists_the_configs_losses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["list"])
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("losses (client.loss.name):"))
    assert line.startswith("losses (client.loss.name): " + ", ".join(LOSSES) + ";")


@pytest.mark.parametrize("name", LOSSES)
def test_every_configured_loss_name_builds_a_loss(name: str) -> None:
    assert name in LOSS_NAMES
    loss = loss_by_name(name, tau=0.5, q=0.5)
    value = loss(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    assert torch.isfinite(value).all()
