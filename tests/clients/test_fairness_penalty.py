"""Local fairness penalties: closed forms, finite gradients, weight 0, and their effect."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import fedsim
from fedsim.clients.fairness_penalty import (
    demographic_parity_gap,
    equalized_odds_gap,
    make_penalty,
    mutual_information_bits,
)
from fedsim.clients.models import build_model
from fedsim.clients.training import evaluate, train
from fedsim.config import ClientConfig, FairnessPenaltyConfig, load_scenario
from fedsim.errors import ConfigError, DataError
from fedsim.fairness.information import mutual_information
from fedsim.fairness.metrics import equalized_odds_difference, statistical_parity_difference

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Small batches on shared cores: one intra-op thread is ~10x faster (as fedsim runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _logits(p1: list[float]) -> torch.Tensor:
    """Two-class logits whose softmax puts probability ``p1`` on class 1."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def test_demographic_parity_gap_is_the_difference_of_group_mean_soft_predictions() -> None:
    logits = _logits([0.8, 0.6, 0.2, 0.3])
    z = torch.tensor([0, 0, 1, 1])
    assert float(demographic_parity_gap(logits, z)) == pytest.approx(0.7 - 0.25, abs=1e-12)


def test_demographic_parity_gap_takes_the_largest_pairwise_gap_over_three_groups() -> None:
    logits = _logits([0.9, 0.5, 0.4, 0.2])
    z = torch.tensor([0, 1, 1, 2])
    # group means of p1: 0.9, 0.45, 0.2 -> largest pairwise gap 0.7
    assert float(demographic_parity_gap(logits, z)) == pytest.approx(0.7, abs=1e-12)


def test_temperature_sharpens_the_relaxation() -> None:
    logits = _logits([0.8, 0.2])
    z = torch.tensor([0, 1])
    soft, sharp = demographic_parity_gap(logits, z, 1.0), demographic_parity_gap(logits, z, 0.05)
    assert float(soft) == pytest.approx(0.6, abs=1e-12)
    assert float(sharp) > 0.999  # close to the hard-prediction gap of 1


def test_equalized_odds_gap_is_the_largest_per_label_gap() -> None:
    logits = _logits([0.9, 0.5, 0.6, 0.5, 0.1])
    y = torch.tensor([1, 1, 0, 0, 0])
    z = torch.tensor([0, 1, 0, 1, 1])
    # y=1: |0.9 - 0.5| = 0.4; y=0: z0 mean 0.6, z1 mean 0.3 -> 0.3
    assert float(equalized_odds_gap(logits, y, z)) == pytest.approx(0.4, abs=1e-12)


def test_mutual_information_matches_the_closed_form_in_bits() -> None:
    logits = _logits([0.75, 0.75, 0.25, 0.25])
    z = torch.tensor([0, 0, 1, 1])
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # 1 - H(0.25)
    assert float(mutual_information_bits(logits, z)) == pytest.approx(1 - h, abs=1e-12)
    table = np.array([[[0.125, 0.375]], [[0.375, 0.125]]])  # [z, y, yhat] soft table
    assert float(mutual_information_bits(logits, z)) == pytest.approx(
        mutual_information(table.sum(1)), abs=1e-9
    )


@pytest.mark.parametrize("name", ["demographic-parity", "equalized-odds", "mutual-information"])
def test_a_batch_with_one_group_gives_zero_penalty_and_a_finite_zero_gradient(name: str) -> None:
    logits = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    penalty = make_penalty(FairnessPenaltyConfig(penalty=name, weight=2.0))
    assert penalty is not None
    value = penalty(logits, torch.tensor([0, 1, 0, 1, 0, 1]), torch.full((6,), 1))
    value.backward()
    assert float(value.detach()) == 0.0
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", ["demographic-parity", "equalized-odds", "mutual-information"])
@pytest.mark.parametrize("temperature", [1.0, 0.01])
def test_gradients_are_finite_even_for_saturated_logits(name: str, temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = (40 * torch.randn(32, 3, generator=g)).requires_grad_()
    y = torch.randint(0, 3, (32,), generator=g)
    z = torch.randint(0, 3, (32,), generator=g)
    penalty = make_penalty(FairnessPenaltyConfig(penalty=name, temperature=temperature))
    assert penalty is not None
    value = penalty(logits, y, z)
    value.backward()
    assert torch.isfinite(value) and logits.grad is not None
    assert torch.isfinite(logits.grad).all()


def test_penalty_none_or_weight_zero_builds_no_penalty() -> None:
    assert make_penalty(FairnessPenaltyConfig()) is None
    assert make_penalty(FairnessPenaltyConfig(penalty="demographic-parity", weight=0.0)) is None


def test_the_weight_scales_the_penalty() -> None:
    logits, z = _logits([0.8, 0.2]), torch.tensor([0, 1])
    y = torch.tensor([1, 0])
    penalty = make_penalty(FairnessPenaltyConfig(penalty="demographic-parity", weight=2.0))
    assert penalty is not None
    assert float(penalty(logits, y, z)) == pytest.approx(1.2, abs=1e-12)


def _biased_data(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A feature that *is* Z plus a noisy label signal; Z agrees with Y 90% of the time."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    z = torch.where(torch.rand(n, generator=g) < 0.9, y, 1 - y)
    signal = y.float() + 0.8 * torch.randn(n, generator=g)
    x = torch.stack([signal, z.float(), torch.randn(n, generator=g)], dim=1)
    return x, y, z


def _train_and_count(fairness: FairnessPenaltyConfig) -> np.ndarray:
    x, y, z = _biased_data()
    model = build_model("mlp", (3,), 2, (16,), 0)
    cfg = ClientConfig(epochs=15, lr=0.05, batch_size=64, optimizer="adam", fairness=fairness)
    train(model, x, y, cfg, torch.Generator().manual_seed(1), z=z)
    return evaluate(model, x, y, z.numpy(), 2, 2).counts


def test_weight_zero_leaves_training_unchanged_bit_for_bit() -> None:
    x, y, z = _biased_data()
    states = []
    for fairness in (
        FairnessPenaltyConfig(),
        FairnessPenaltyConfig(penalty="mutual-information", weight=0.0),
    ):
        model = build_model("mlp", (3,), 2, (16,), 0)
        cfg = ClientConfig(epochs=2, lr=0.05, batch_size=64, fairness=fairness)
        result = train(model, x, y, cfg, torch.Generator().manual_seed(1), z=z)
        states.append((result.mean_loss, [p.detach().clone() for p in model.parameters()]))
    assert states[0][0] == states[1][0]
    assert all(torch.equal(a, b) for a, b in zip(states[0][1], states[1][1], strict=True))


def test_a_penalty_without_z_is_a_data_error() -> None:
    x, y, _ = _biased_data()
    model = build_model("mlp", (3,), 2, (16,), 0)
    cfg = ClientConfig(fairness=FairnessPenaltyConfig(penalty="demographic-parity"))
    with pytest.raises(DataError, match="sensitive value z"):
        train(model, x, y, cfg, torch.Generator().manual_seed(1))


# Measured (seeds 0/1, weight 2): SPD 0.96 -> 0.05, EOD 0.89 -> 0.02, I(Z;Yhat) 0.86 -> 0.23
# bits; the asserted margins leave room for platform noise.
def test_demographic_parity_penalty_lowers_the_statistical_parity_difference() -> None:
    plain = statistical_parity_difference(_train_and_count(FairnessPenaltyConfig()))
    dp = FairnessPenaltyConfig(penalty="demographic-parity", weight=2.0)
    assert statistical_parity_difference(_train_and_count(dp)) < plain - 0.5


def test_equalized_odds_penalty_lowers_the_equalized_odds_difference() -> None:
    plain = equalized_odds_difference(_train_and_count(FairnessPenaltyConfig()))
    eo = FairnessPenaltyConfig(penalty="equalized-odds", weight=2.0)
    assert equalized_odds_difference(_train_and_count(eo)) < plain - 0.5


def test_mutual_information_penalty_lowers_the_disparity_in_bits() -> None:
    def bits(counts: np.ndarray) -> float:
        return mutual_information(counts.sum(1))

    plain = bits(_train_and_count(FairnessPenaltyConfig()))
    mi = FairnessPenaltyConfig(penalty="mutual-information", weight=2.0)
    assert bits(_train_and_count(mi)) < plain - 0.4


def test_dp_penalty_lowers_the_final_spd_of_a_federated_run_same_seed() -> None:
    """Through the ClientApp: z reaches training; the run's pooled SPD drops."""
    over = {
        "rounds": 3,
        "partition.num_clients": 4,
        "partition.method": "iid",
        "data.num_samples": 2000,
        "data.z_label_agreement": 0.95,
        "fairness.pid": False,
        "fairness.bounds": False,
    }
    default = REPO / "scenarios" / "default.toml"
    plain = fedsim.run(default, over).summary["final"]
    fair = fedsim.run(
        default,
        {**over, "client.fairness.penalty": "demographic-parity", "client.fairness.weight": 2.0},
    ).summary["final"]
    dpd = "demographic_parity_difference"
    assert fair[dpd] < plain[dpd] - 0.3  # measured: 0.54 -> 0.07


def test_scenario_rejects_unknown_penalty_and_negative_weight() -> None:
    default = REPO / "scenarios" / "default.toml"
    with pytest.raises(ConfigError, match="client.fairness.penalty"):
        load_scenario(default, {"client.fairness.penalty": "parity"})
    with pytest.raises(ConfigError, match="client.fairness.weight"):
        load_scenario(default, {"client.fairness.weight": -1.0})
    with pytest.raises(ConfigError, match="client.fairness.temperature"):
        load_scenario(default, {"client.fairness.temperature": 0.0})
