"""Scenario parsing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim.config import (
    Scenario,
    load_scenario,
    loads_scenario,
    parse_assignment,
    parse_value,
)
from fedsim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_round_trip_through_toml() -> None:
    sc = Scenario()
    assert loads_scenario(sc.to_toml()) == sc


def test_every_shipped_scenario_is_valid() -> None:
    files = sorted((REPO / "scenarios").glob("*.toml"))
    assert files, "no scenarios shipped"
    for path in files:
        sc = load_scenario(path)
        assert loads_scenario(sc.to_toml()) == sc, path.name


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"rounds": "ten"}, "rounds: expected an integer, got str 'ten'"),
        ({"rounds": 0}, "rounds: expected a value >= 1, got 0"),
        ({"rounds": True}, "rounds: expected an integer"),
        ({"roundz": 3}, "roundz: unknown key"),
        ({"client": {"lr": -1.0}}, "client.lr: expected a value > 0.0, got -1.0"),
        ({"client": {"lr": 0}}, "client.lr: expected a value > 0.0"),
        ({"client": {"loss": {"tau": -0.5}}}, "client.loss.tau: expected a value >= 0.0"),
        ({"client": {"loss": {"nmae": "ce"}}}, "client.loss.nmae: unknown key"),
        (
            {"client": {"optimizer": "rmsprop"}},
            "client.optimizer: expected one of sgd, adam or a plug-in",
        ),
        ({"partition": {"num_clients": 10**9}}, "partition.num_clients: expected a value <="),
        ({"partition": 3}, "partition: expected a table, got int 3"),
        ({"model": {"hidden": [64, -1]}}, "model.hidden: expected a list of positive integers"),
        ({"data": {"test_fraction": float("nan")}}, "data.test_fraction: expected a finite"),
        ({"engine": "spark"}, "engine: expected one of 'local', 'ray', 'flower'"),
    ],
)
def test_invalid_values_name_the_key_and_what_was_expected(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_scenario(raw)
    assert fragment in str(err.value)


def test_overrides_are_parsed_as_toml_values_and_validated() -> None:
    sc = load_scenario({}, {"client.lr": "0.25", "model.hidden": "[8, 4]", "name": "x y"})
    assert sc.client.lr == 0.25 and sc.model.hidden == (8, 4) and sc.name == "x y"
    with pytest.raises(ConfigError, match="client.epochs: expected an integer"):
        load_scenario({}, {"client.epochs": "1.5"})
    with pytest.raises(ConfigError, match="cannot set 'rounds.x'"):
        load_scenario({"rounds": 3}, {"rounds.x": 1})


def test_parse_assignment_and_value() -> None:
    assert parse_assignment("a.b=3") == ("a.b", 3)
    assert parse_assignment("name=hello") == ("name", "hello")
    assert parse_value("true") is True
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_assignment("novalue")


def test_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_scenario(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a UTF-8"):
        load_scenario(binary)


def test_scenario_is_frozen() -> None:
    sc = Scenario()
    with pytest.raises(AttributeError):
        sc.rounds = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        sc.strategy.options["x"] = 1  # type: ignore[index]
