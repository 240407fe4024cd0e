"""Hostile scenario files: every one ends with one error line and exit code 2."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedsim.cli import main
from fedsim.config import Scenario

SCENARIO_KEYS = {f.name for f in dataclasses.fields(Scenario)}


def _leaf_fields(cls: type = Scenario, prefix: str = "") -> list[tuple[str, typing.Any, dict]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _leaf_fields(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, tp, dict(f.metadata)))
    return out


LEAVES = [leaf for leaf in _leaf_fields() if not leaf[0].endswith("options")]


def _invalid_value(tp: typing.Any, meta: dict) -> st.SearchStrategy:
    """Values that no valid scenario can hold for a field of type ``tp``."""
    junk = st.one_of(st.text(max_size=8), st.lists(st.integers(), max_size=3), st.booleans())
    if tp is int:
        bad = [st.text(max_size=5), st.floats()]  # a TOML float, even 3.0, is not an integer
        if meta.get("hi") is not None:
            bad.append(st.integers(min_value=int(meta["hi"]) + 1, max_value=2**62))
        if meta.get("lo") is not None:
            bad.append(st.integers(min_value=-(2**62), max_value=int(meta["lo"]) - 1))
        return st.one_of(*bad)
    if tp is float:
        bad = [st.text(max_size=5), st.sampled_from([float("nan"), float("inf"), float("-inf")])]
        if meta.get("hi") is not None:
            bad.append(st.floats(min_value=meta["hi"] * 2 + 1, max_value=1e300))
        if meta.get("lo") is not None:
            bad.append(st.floats(max_value=meta["lo"] - 1e-3, min_value=-1e300))
        return st.one_of(*bad)
    if tp is bool:
        return st.one_of(st.integers(), st.text(max_size=5))
    if typing.get_origin(tp) is typing.Literal:
        return st.text(max_size=10).filter(lambda v: v not in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return st.one_of(
            st.lists(st.integers(max_value=0), min_size=1, max_size=3), st.text(max_size=4)
        )
    return junk.filter(lambda v: not isinstance(v, str))  # str fields: anything but a string


@st.composite
def broken_scenarios(draw: st.DrawFn) -> bytes:
    raw = Scenario().to_dict()
    kind = draw(st.sampled_from(["bad-value", "unknown-key", "not-a-table"]))
    if kind == "bad-value":
        path, tp, meta = draw(st.sampled_from(LEAVES))
        value = draw(_invalid_value(tp, meta))
    elif kind == "unknown-key":
        table = draw(st.sampled_from(["", "data.", "client.", "client.loss.", "partition."]))
        name = draw(st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True))
        assume(not name.endswith("_") and name not in SCENARIO_KEYS)
        path, value = table + name + "_x", draw(st.integers())
    else:
        path = draw(st.sampled_from(["data", "client", "partition", "strategy", "faults"]))
        value = draw(st.one_of(st.integers(), st.text(max_size=5)))
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return tomli_w.dumps(raw).encode()


def _is_valid_toml_scenario(data: bytes) -> bool:
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return bool(table) and set(table) <= SCENARIO_KEYS


def _assert_one_line_exit_2(
    data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "hostile.toml"
    scenario.write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["run", str(scenario), "--out", str(out), "-q"])
    _, err = capsys.readouterr()
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: "), err
    assert not out.exists()


FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FAST
@given(data=broken_scenarios())
def test_broken_fields(data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_one_line_exit_2(data, tmp_path, capsys)


@FAST
@given(data=st.binary(max_size=200))
def test_binary_garbage(data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assume(not _is_valid_toml_scenario(data))
    _assert_one_line_exit_2(data, tmp_path, capsys)


@FAST
@given(text=st.text(alphabet="[]=\"'{}.,#\n abc123", max_size=60))
def test_toml_syntax_soup(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assume(not _is_valid_toml_scenario(text.encode()))
    _assert_one_line_exit_2(text.encode(), tmp_path, capsys)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"   \n# only a comment\n",
        b"rounds = 99999999999999999999\n",
        b"[partition]\nnum_clients = -4\n",
        b"seed = -1\n",
        b"[client]\nbatch_size = 0\n",
        b"rounds = 1e400\n",
    ],
)
def test_named_cases(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_one_line_exit_2(content, tmp_path, capsys)
