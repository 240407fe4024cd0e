"""The researcher's own parts by reference (and as Python objects), on the local engine.

Each plug-in kind is checked against an oracle: a plug-in that re-implements a
built-in must give the built-in's result, and what the plug-in returns must show up in
the run (shapes, sizes, names). Bad plug-ins end in one ``fedsim: error:`` line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fedsim
from fedsim.config import load_scenario
from fedsim.data import build_federated
from fedsim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
SMALL = {
    "rounds": 2,
    "partition.num_clients": 3,
    "data.num_samples": 600,
    "fairness.enabled": False,
}

PLUGIN = textwrap.dedent(
    '''
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F
    from flwr.serverapp.strategy import FedAvg

    def make_net(input_shape, num_classes, width=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.Tanh(),
                             nn.Linear(width, num_classes))

    def wrong_shape(input_shape, num_classes):
        return nn.Linear(input_shape[0], num_classes + 1)

    def not_a_module(input_shape, num_classes):
        return "a string"

    def load(n=300, features=5, seed=0):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        x = rng.standard_normal((n, features)) + y[:, None]
        z = (rng.random(n) < 0.5).astype(int)
        return {"x": x.astype(np.float32), "y": y, "sensitive": z,
                "group_names": ["young", "old"], "class_names": ["a", "b", "c"],
                "attributes": {"site": np.array(["s%d" % (i % 3) for i in range(n)])}}

    def load_bad_y():
        return {"x": np.zeros((10, 2)), "y": np.zeros(9, int)}

    def first_rows(labels, sensitive, num_clients, rng, size=50):
        return [np.arange(i * size, (i + 1) * size) for i in range(num_clients)]

    def too_few(labels, sensitive, num_clients, rng):
        return [np.arange(len(labels))]

    def my_ce(logits, target, scale=1.0):
        return scale * F.cross_entropy(logits, target)

    def not_scalar(logits, target):
        return F.cross_entropy(logits, target, reduction="none")

    class Tagged(FedAvg):
        """FedAvg with an extra option (checked against the signature)."""

        def __init__(self, tag: str = "x", **kwargs):
            super().__init__(**kwargs)
            self.tag = tag

    class NotAStrategy:
        pass
    '''
)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user module ``userparts`` importable here and in child processes."""
    (tmp_path / "userparts.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    sys.modules.pop("userparts", None)
    return "userparts"


def test_model_reference_builds_the_users_module_with_its_options(plugin: str) -> None:
    over = {**SMALL, "model.name": f"{plugin}:make_net", "model.options": {"width": 5}}
    result = fedsim.run(DEFAULT, over)
    assert result.arrays["1.weight"].shape == (5, 20)  # Linear(20 features -> width 5)
    assert result.arrays["3.weight"].shape == (2, 5)
    assert np.isfinite(result.summary["final"]["eval-acc"])


def test_dataset_reference_feeds_every_row_names_and_shapes(plugin: str) -> None:
    over = {**SMALL, "data.dataset": f"{plugin}:load", "data.options": {"n": 240}}
    sc = load_scenario(DEFAULT, over)
    fed = build_federated(sc.data, sc.partition, sc.seed)
    assert fed.raw.group_names == ("young", "old") and fed.raw.class_names == ("a", "b", "c")
    assert sum(len(c.y_train) + len(c.y_test) for c in fed.clients) == 240
    result = fedsim.run(DEFAULT, over)
    assert result.arrays["3.weight"].shape[0] == 3  # three classes from the loader


def test_natural_partition_by_a_loader_attribute_gives_one_client_per_value(
    plugin: str,
) -> None:
    over = {
        **SMALL,
        "data.dataset": f"{plugin}:load",
        "partition.method": "natural",
        "partition.by": "site",
    }
    sc = load_scenario(DEFAULT, over)
    fed = build_federated(sc.data, sc.partition, sc.seed)
    assert [len(c.y_train) + len(c.y_test) for c in fed.clients] == [100, 100, 100]
    with pytest.raises(ConfigError, match="partition.num_clients = 3"):
        sc = load_scenario(DEFAULT, {**over, "partition.num_clients": 4})
        build_federated(sc.data, sc.partition, sc.seed)


def test_partitioner_reference_decides_each_clients_rows(plugin: str) -> None:
    over = {**SMALL, "partition.method": f"{plugin}:first_rows", "partition.options": {"size": 40}}
    sc = load_scenario(DEFAULT, over)
    fed = build_federated(sc.data, sc.partition, sc.seed)
    assert [len(c.y_train) + len(c.y_test) for c in fed.clients] == [40, 40, 40]


def test_loss_reference_equal_to_cross_entropy_trains_the_same_weights(plugin: str) -> None:
    over = {**SMALL, "client.loss.margin_lambda": 0.05}  # composes with margin control
    builtin = fedsim.run(DEFAULT, over)
    mine = fedsim.run(DEFAULT, {**over, "client.loss.name": f"{plugin}:my_ce"})
    for k, v in builtin.arrays.items():
        np.testing.assert_allclose(mine.arrays[k], v, rtol=0, atol=1e-6)
    scaled = fedsim.run(
        DEFAULT,
        {**over, "client.loss.name": f"{plugin}:my_ce", "client.loss.options": {"scale": 3.0}},
    )
    assert not np.allclose(scaled.arrays["1.weight"], builtin.arrays["1.weight"])


def test_torch_optim_reference_matches_fedsims_own_sgd() -> None:
    own = fedsim.run(DEFAULT, {**SMALL, "client.lr": 0.05})
    ref = fedsim.run(
        DEFAULT,
        {**SMALL, "client.lr": 0.05, "client.optimizer": "torch.optim:SGD"},
    )
    for k, v in own.arrays.items():
        np.testing.assert_allclose(ref.arrays[k], v, rtol=0, atol=1e-6)
    adamw = fedsim.run(
        DEFAULT,
        {
            **SMALL,
            "client.optimizer": "torch.optim:AdamW",
            "client.optimizer_options": {"weight_decay": 0.1, "betas": [0.8, 0.9]},
        },
    )
    assert not np.allclose(adamw.arrays["1.weight"], own.arrays["1.weight"])


def test_learning_rate_schedules_follow_their_closed_forms() -> None:
    from fedsim.clients.training import learning_rate

    sc = load_scenario(DEFAULT, {"client.lr": 0.2, "client.lr_decay": 0.5})
    cfg = sc.client
    assert learning_rate(cfg, 3, 10) == pytest.approx(0.2)
    step = load_scenario(
        DEFAULT, {"client.lr": 0.2, "client.lr_schedule": "step", "client.lr_step_rounds": 2}
    ).client
    assert [learning_rate(step, r, 10) for r in (1, 2, 3, 5)] == pytest.approx(
        [0.2, 0.2, 0.1, 0.05]
    )
    exp = load_scenario(DEFAULT, {"client.lr": 0.2, "client.lr_schedule": "exponential"}).client
    assert learning_rate(exp, 4, 10) == pytest.approx(0.2 * 0.5**3)
    cos = load_scenario(DEFAULT, {"client.lr": 0.2, "client.lr_schedule": "cosine"}).client
    assert learning_rate(cos, 1, 4) == pytest.approx(0.2)
    assert learning_rate(cos, 3, 4) == pytest.approx(0.1)


def test_lr_schedule_reaches_the_clients() -> None:
    # With the rate decayed to ~0 after round 1, round 2 changes nothing (up to the
    # float32 rounding of averaging), while a constant rate moves the weights.
    one = fedsim.run(DEFAULT, {**SMALL, "rounds": 1})
    decayed = fedsim.run(
        DEFAULT,
        {**SMALL, "client.lr_schedule": "exponential", "client.lr_decay": 1e-12},
    )
    constant = fedsim.run(DEFAULT, SMALL)
    for k, v in one.arrays.items():
        np.testing.assert_allclose(decayed.arrays[k], v, rtol=0, atol=1e-6)
    assert np.abs(constant.arrays["1.weight"] - one.arrays["1.weight"]).max() > 1e-3


def test_strategy_reference_is_built_with_checked_options(plugin: str) -> None:
    from fedsim.config import StrategyConfig
    from fedsim.strategies.registry import build_strategy

    cfg = StrategyConfig(name=f"{plugin}:Tagged", options={"tag": "mine"})
    strategy = build_strategy(cfg, 3)
    assert type(strategy).__name__ == "Tagged" and strategy.tag == "mine"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="strategy.options.nope"):
        build_strategy(StrategyConfig(name=f"{plugin}:Tagged", options={"nope": 1}), 3)
    with pytest.raises(ConfigError, match="subclass of Flower"):
        build_strategy(StrategyConfig(name=f"{plugin}:NotAStrategy"), 3)
    result = fedsim.run(DEFAULT, {**SMALL, "strategy.name": f"{plugin}:Tagged"})
    assert result.summary["strategy"] == f"{plugin}:Tagged"


def test_python_objects_run_locally_and_are_refused_by_other_engines(plugin: str) -> None:
    from torch import nn

    def local_net(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes))

    result = fedsim.run(DEFAULT, SMALL, model=local_net)
    assert result.arrays["1.weight"].shape == (2, 20)
    with pytest.raises(ConfigError, match="package.module:attr"):
        fedsim.run(DEFAULT, SMALL, model=local_net, engine="ray")
    import importlib

    module = importlib.import_module(plugin)
    via_object = fedsim.run(DEFAULT, SMALL, model=module.make_net)  # importable: a reference
    assert via_object.scenario.model.name == f"{plugin}:make_net"


BAD = [
    ({"model.name": "nosuchmodule_xyz:make"}, "cannot import module 'nosuchmodule_xyz'"),
    ({"model.name": "userparts:missing"}, "has no attribute 'missing'"),
    ({"model.name": "userparts:wrong_shape"}, "expected logits of shape (2, 2)"),
    ({"model.name": "userparts:not_a_module"}, "expected a torch.nn.Module"),
    ({"data.dataset": "userparts:load_bad_y"}, "'y' of shape (9,)"),
    ({"partition.method": "userparts:too_few"}, "expected a list of 3 index arrays"),
    ({"client.loss.name": "userparts:not_scalar"}, "expected a scalar tensor"),
    ({"strategy.name": "userparts:NotAStrategy"}, "subclass of Flower"),
    ({"client.optimizer": "userparts:my_ce"}, "client.optimizer"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_plugin_ends_in_one_error_line_and_writes_nothing(
    plugin: str, tmp_path: Path, override: dict[str, str], message: str
) -> None:
    out = tmp_path / "out"
    args = []
    for key, value in {**SMALL, **override}.items():
        text = f'"{value}"' if isinstance(value, str) else str(value).lower()
        args += ["--set", f"{key}={text}"]
    proc = subprocess.run(
        ["fedsim", "run", str(DEFAULT), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: "), proc.stderr
    assert message in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_plugin_module_in_the_working_directory_is_found_by_the_cli(tmp_path: Path) -> None:
    (tmp_path / "mynets.py").write_text(PLUGIN)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # nothing of the test's own path
    proc = subprocess.run(
        [
            "fedsim",
            "run",
            str(DEFAULT),
            "--set",
            'model.name="mynets:make_net"',
            "--set",
            "rounds=1",
            "--set",
            "fairness.enabled=false",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'name = "mynets:make_net"' in (out / "config.toml").read_text()


def test_config_accepts_builtin_names_and_references_only() -> None:
    assert load_scenario(DEFAULT, {"model.name": "pkg.mod:fn"}).model.name == "pkg.mod:fn"
    with pytest.raises(ConfigError, match="model.name: expected one of logreg, mlp, cnn or"):
        load_scenario(DEFAULT, {"model.name": "resnet"})
    with pytest.raises(ConfigError, match="partition.method"):
        load_scenario(DEFAULT, {"partition.method": "bogus"})


def test_model_reference_keeps_seeded_initialisation(plugin: str) -> None:
    from fedsim.clients.models import build_model

    a = build_model(f"{plugin}:make_net", (4,), 2, seed=3)
    b = build_model(f"{plugin}:make_net", (4,), 2, seed=3)
    c = build_model(f"{plugin}:make_net", (4,), 2, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def _hospital_csv(path: Path, n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(20, 80, n),
            "dose": rng.normal(5.0, 2.0, n),
            "ward": rng.choice(["a", "b", "c"], n),
            "sex": rng.choice(["Female", "Male"], n),
            "hospital": rng.choice(["h1", "h2", "h3", "h4"], n),
            "record_id": np.arange(n),
            "outcome": rng.choice(["bad", "good"], n),
        }
    )
    frame.loc[3, "dose"] = np.nan  # an incomplete row is dropped
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
    return frame


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_tabular_file_encodes_categoricals_and_standardises_on_train_rows(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"hospitals.{kind}"
    _hospital_csv(path)
    over = {
        **SMALL,
        "data.dataset": kind,
        "data.path": str(path),
        "data.label": "outcome",
        "data.sensitive": "sex",
        "data.drop": ["record_id", "hospital"],
    }
    sc = load_scenario(DEFAULT, over)
    fed = build_federated(sc.data, sc.partition, sc.seed)
    raw = fed.raw
    # age, dose numeric; ward (3) and sex (2) one-hot; record_id and hospital dropped
    assert raw.x.shape == (239, 2 + 3 + 2)
    assert raw.group_names == ("Female", "Male") and raw.class_names == ("bad", "good")
    assert raw.feature_names[:2] == ("age", "dose")
    train_x = np.concatenate([c.x_train for c in fed.clients])
    np.testing.assert_allclose(train_x[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train_x[:, :2].std(0), 1, atol=1e-4)
    result = fedsim.run(DEFAULT, over)
    assert result.arrays["1.weight"].shape[1] == 7


def test_tabular_file_natural_partition_by_a_dropped_column(tmp_path: Path) -> None:
    path = tmp_path / "hospitals.csv"
    frame = _hospital_csv(path).dropna()
    over = {
        **SMALL,
        "data.dataset": "csv",
        "data.path": str(path),
        "data.label": "outcome",
        "data.drop": ["hospital"],
        "partition.method": "natural",
        "partition.by": "hospital",
        "partition.num_clients": 4,
    }
    sc = load_scenario(DEFAULT, over)
    fed = build_federated(sc.data, sc.partition, sc.seed)
    sizes = [len(c.y_train) + len(c.y_test) for c in fed.clients]
    assert sizes == frame.hospital.value_counts().sort_index().tolist()


def test_tabular_file_mistakes_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "hospitals.csv"
    _hospital_csv(path)
    base = {**SMALL, "data.dataset": "csv", "data.path": str(path), "data.label": "outcome"}
    for over, message in [
        ({"data.label": "nope"}, "data.label: no column 'nope'"),
        ({"data.sensitive": "record_id"}, "data.sensitive: column 'record_id' has 239"),
        ({"data.path": str(tmp_path / "missing.csv")}, "data.path: no such file"),
        ({"data.label": ""}, "data.label: dataset = 'csv' needs"),
    ]:
        sc = load_scenario(DEFAULT, {**base, **over})
        with pytest.raises(ConfigError, match=message):
            build_federated(sc.data, sc.partition, sc.seed)


def test_config_name_lists_agree_with_the_registries() -> None:
    from fedsim.clients.losses import resolve_tau
    from fedsim.clients.models import build_model
    from fedsim.config import DATASETS, LOSSES, MODELS
    from fedsim.data import REGISTRY

    assert set(DATASETS) == set(REGISTRY)
    for name in LOSSES:
        resolve_tau(name, tau=1.0, q=0.7)  # every listed loss is one the maths knows
    for name in MODELS:
        shape = (1, 8, 8) if name == "cnn" else (4,)
        assert isinstance(build_model(name, shape, 2), torch.nn.Module)


def test_fedsim_list_shows_builtins_and_every_plugin_signature() -> None:
    from fedsim.plugins import SIGNATURES

    proc = subprocess.run(["fedsim", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for key, signature in SIGNATURES.items():
        assert f'or {key} = "package.module:attr": {signature}' in proc.stdout
    for name in ("shard", "natural", "fairfed", "fedld", "csv/parquet", "logreg", "gce"):
        assert name in proc.stdout


def test_report_rescoring_rebuilds_a_plugin_model_with_its_options(
    plugin: str, tmp_path: Path
) -> None:
    # One place builds a run's model (clients.models.scenario_model); the report's
    # model-specific bound used to rebuild the default width and fail to load weights.
    from fedsim.model_bound import score_test_split

    over = {
        **SMALL,
        "fairness.enabled": True,
        "fairness.bounds": False,
        "model.name": f"{plugin}:make_net",
        "model.options": {"width": 5},
    }
    run = tmp_path / "run"
    result = fedsim.run(DEFAULT, over, out=run)
    scored = score_test_split(run, (run / "config.toml").read_text())
    assert result.arrays["1.weight"].shape == (5, 20)
    rescored = float(np.mean((scored.scores > 0) == scored.labels))  # score: logit 1 - 0
    assert abs(rescored - result.summary["final"]["eval-acc"]) < 1e-6
