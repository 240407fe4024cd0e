"""Vectorised cohort training equals per-client sequential training, client by client."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fedsim
from fedsim.cli import main
from fedsim.clients.models import build_model
from fedsim.clients.training import client_generator, train
from fedsim.clients.vectorized import plugin_objective, train_cohort
from fedsim.config import ClientConfig, LossConfig

# Unequal clients with batch size 16: 0 rows, fewer rows than one batch (1, 5), a last
# partial batch (17, 40) and whole batches only (64).
SIZES = (5, 40, 0, 17, 64, 1)
LOSSES = {
    "ce": (LossConfig(), 0.0),
    "fedprox": (LossConfig(), 0.5),
    "margin": (LossConfig(margin_lambda=0.2), 0.0),
    "margin-sample": (LossConfig(margin_lambda=0.2, margin_mode="sample"), 0.0),
    "comp-sum-0.5": (LossConfig(name="comp-sum", tau=0.5), 0.0),
}


def _cohort(sizes, shape=(6,), classes=2, seed=0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    cohort = []
    for n in sizes:
        x = torch.rand(n, *shape, generator=g) * 2 - 1
        cohort.append((x, torch.randint(0, classes, (n,), generator=g)))
    return cohort


def _generators(k: int) -> list[torch.Generator]:
    return [client_generator(7, 5, 3, pid) for pid in range(k)]


def _assert_equals_sequential(model, cohort, cfg, mu=0.0, objective=None, **kwargs) -> None:
    start = copy.deepcopy(model.state_dict())
    result = train_cohort(model, cohort, cfg, _generators(len(cohort)), mu, **kwargs)
    for k, ((x, y), generator) in enumerate(zip(cohort, _generators(len(cohort)), strict=True)):
        reference = copy.deepcopy(model)
        reference.load_state_dict(start)
        expected = train(reference, x, y, cfg, generator, mu, objective=objective)
        got = result.client_params(k)
        for name, weight in reference.named_parameters():
            assert torch.allclose(got[name], weight, rtol=1e-5, atol=1e-5), (k, name)
        assert result.results[k].num_examples == expected.num_examples
        assert result.results[k].mean_loss == pytest.approx(expected.mean_loss, rel=1e-5, abs=1e-6)
    moved = [
        not torch.equal(result.client_params(k)[n], start[n])
        for k in range(len(cohort))
        for n in start
    ]
    assert any(moved)  # the cohort trained at all


@pytest.mark.parametrize("model_name", ["mlp", "logreg"])
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vectorized_cohort_equals_sequential_train_per_client(
    optimizer: str, loss_name: str, model_name: str
) -> None:
    loss, mu = LOSSES[loss_name]
    cfg = ClientConfig(
        epochs=3,
        batch_size=16,
        optimizer=optimizer,  # type: ignore[arg-type]
        lr=0.05,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        weight_decay=0.01,
        loss=loss,
    )
    model = build_model(model_name, (6,), 2, (8,), seed=1)
    _assert_equals_sequential(model, _cohort(SIZES), cfg, mu)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vectorized_cnn_equals_sequential_with_comp_sum_margin_and_fedprox(optimizer: str) -> None:
    # Adam at its usual lr = 1e-3: Adam divides by sqrt(v), so conv gradients that are
    # pure rounding noise (|g| ~ 1e-9, summed in another order by the batched conv)
    # move a weight by up to ~lr; at lr = 1e-3 that stays well inside 1e-5.
    lr = 0.05 if optimizer == "sgd" else 1e-3
    loss = LossConfig(name="comp-sum", tau=0.5, margin_lambda=0.1)
    cfg = ClientConfig(epochs=2, batch_size=8, optimizer=optimizer, lr=lr, loss=loss)  # type: ignore[arg-type]
    model = build_model("cnn", (1, 8, 8), 3, seed=0)
    _assert_equals_sequential(model, _cohort((3, 20, 9), (1, 8, 8), 3), cfg, mu=0.3)


def test_vectorized_path_leaves_the_global_model_unchanged() -> None:
    model = build_model("mlp", (6,), 2, (8,), seed=0)
    before = copy.deepcopy(model.state_dict())
    result = train_cohort(model, _cohort((10, 20)), ClientConfig(lr=0.5), _generators(2))
    assert result.vectorized and result.reason is None
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


def test_clients_keep_their_own_data_order() -> None:
    # Two clients with identical data but different generators end differently, as
    # they would sequentially; swapping their generators swaps their results.
    x, y = _cohort((40,))[0]
    model = build_model("mlp", (6,), 2, (8,), seed=0)
    cfg = ClientConfig(batch_size=8, lr=0.5)
    g = _generators(2)
    a = train_cohort(model, [(x, y), (x, y)], cfg, g).params
    b = train_cohort(model, [(x, y), (x, y)], cfg, _generators(2)[::-1]).params
    for name in a:
        assert not torch.allclose(a[name][0], a[name][1])
        assert torch.equal(a[name][0], b[name][1]) and torch.equal(a[name][1], b[name][0])


def test_adversarial_term_falls_back_to_sequential_and_says_why(caplog) -> None:
    cfg = ClientConfig(batch_size=8, lr=0.1, loss=LossConfig(adv_nu=0.5, adv_steps=2))
    model = build_model("mlp", (6,), 2, (8,), seed=0)
    cohort = _cohort((5, 12))
    with caplog.at_level(logging.INFO, logger="fedsim.clients.vectorized"):
        result = train_cohort(model, cohort, cfg, _generators(2), input_range=None)
    assert not result.vectorized and "adv_nu" in str(result.reason)
    assert "adv_nu" in caplog.text
    model = build_model("mlp", (6,), 2, (8,), seed=0)
    _assert_equals_sequential(model, cohort, cfg)


class _NormedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_batch_norm_model_falls_back_and_says_why(caplog) -> None:
    torch.manual_seed(0)
    model = _NormedNet()
    with caplog.at_level(logging.INFO, logger="fedsim.clients.vectorized"):
        result = train_cohort(model, _cohort((8, 12)), ClientConfig(batch_size=4), _generators(2))
    assert not result.vectorized
    assert "batch norm" in str(result.reason) and "batch norm" in caplog.text


def _row_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A vmap-safe plug-in: squared error against the one-hot target, per row."""
    one_hot = torch.nn.functional.one_hot(target, logits.shape[-1]).to(logits.dtype)
    return (logits.softmax(-1) - one_hot).square().sum(-1)


def _item_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Not vmap-safe: reads a tensor's value with ``.item()``."""
    scale = float(logits.detach().abs().max().item()) + 1.0
    return torch.nn.functional.cross_entropy(logits, target, reduction="none") / scale


def test_vmap_safe_plugin_loss_is_vectorized_and_equals_sequential() -> None:
    loss = LossConfig(margin_lambda=0.1)
    cfg = ClientConfig(batch_size=8, optimizer="adam", lr=0.01, epochs=2, loss=loss)
    model = build_model("mlp", (6,), 2, (8,), seed=0)
    cohort = _cohort((3, 19, 8))
    result = train_cohort(model, cohort, cfg, _generators(3), sample_loss=_row_loss)
    assert result.vectorized
    objective = plugin_objective(loss, _row_loss)
    _assert_equals_sequential(model, cohort, cfg, objective=objective, sample_loss=_row_loss)


def test_plugin_loss_that_is_not_vmap_safe_falls_back_and_says_why(caplog) -> None:
    cfg = ClientConfig(batch_size=8, lr=0.1)
    model = build_model("mlp", (6,), 2, (8,), seed=0)
    cohort = _cohort((5, 12))
    with caplog.at_level(logging.INFO, logger="fedsim.clients.vectorized"):
        result = train_cohort(model, cohort, cfg, _generators(2), sample_loss=_item_loss)
    assert not result.vectorized and "plug-in loss is not vmap-safe" in str(result.reason)
    assert "not vmap-safe" in caplog.text
    model = build_model("mlp", (6,), 2, (8,), seed=0)
    objective = plugin_objective(cfg.loss, _item_loss)
    _assert_equals_sequential(model, cohort, cfg, objective=objective, sample_loss=_item_loss)


# --------------------------------------------------------------------------- engine
REPO = Path(__file__).resolve().parents[2]


def test_vectorize_scenario_runs_like_the_sequential_local_engine(monkeypatch) -> None:
    import fedsim.clients.cohort as cohort_module

    cohorts: list[tuple[int, bool]] = []

    def spy(model, cohort, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = train_cohort(model, cohort, *args, **kwargs)
        cohorts.append((len(cohort), result.vectorized))
        return result

    monkeypatch.setattr(cohort_module, "train_cohort", spy)
    base = {
        "rounds": 2,
        "partition.num_clients": 5,
        "partition.method": "quantity",
        "fairness.enabled": False,
        "strategy.name": "fedprox",
        "strategy.options": {"proximal_mu": 0.5},
        "faults.crash_prob": 0.3,  # crashed clients are error replies on both paths
    }
    sequential = fedsim.run(REPO / "scenarios/default.toml", base)
    vectorized = fedsim.run(REPO / "scenarios/default.toml", {**base, "vectorize": True})
    assert vectorized.scenario.vectorize and not sequential.scenario.vectorize
    assert len(cohorts) == 2 and all(ok for _, ok in cohorts)  # one vmap cohort per round
    assert sum(n for n, _ in cohorts) < 2 * 5  # some clients crashed (error replies)
    for name in sequential.arrays:
        assert np.allclose(sequential.arrays[name], vectorized.arrays[name], atol=1e-5)
    seq_final, vec_final = sequential.summary["final"], vectorized.summary["final"]
    assert vec_final["eval-acc"] == pytest.approx(seq_final["eval-acc"], abs=1e-6)


def test_vectorize_on_another_engine_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    argv = ["run", str(REPO / "scenarios/default.toml"), "--vectorize", "--engine", "flower"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(out_dir), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and not out_dir.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: vectorize:")
