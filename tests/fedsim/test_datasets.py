"""Dataset loaders on the real shared files: shapes, label counts, checksums."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedsim.data import load_dataset
from fedsim.data.datasets import synthetic_dataset
from fedsim.data.files import fetch
from fedsim.data.sources import ALL_FILES
from fedsim.errors import ConfigError, DataError


def test_adult(data_dir: Path) -> None:
    ds = load_dataset("adult", "sex", data_dir)
    # 48,842 rows, 45,222 complete; the shared README's counts.
    assert ds.x.shape[0] == 45_222 and ds.x.dtype == np.float32
    assert ds.y.sum() == 11_208  # >50K among complete rows (train 7,508 + test 3,700)
    assert ds.group_names == ("Female", "Male")
    assert np.bincount(ds.z).sum() == 45_222 and ds.num_classes == 2
    race = load_dataset("adult", "race", data_dir)
    assert race.num_groups == 5 and set(race.group_names) >= {"White", "Black"}


def test_compas_uses_propublica_filter_and_drops_names(data_dir: Path) -> None:
    ds = load_dataset("compas", "race", data_dir)
    assert ds.x.shape[0] == 6_172
    assert abs(ds.y.mean() - 0.4551) < 5e-4
    assert not any(n in ("name", "first", "last", "dob") for n in ds.feature_names)
    assert ds.group_names == ("African-American", "other")
    assert load_dataset("compas", "sex", data_dir).group_names == ("Female", "Male")


def test_bank(data_dir: Path) -> None:
    ds = load_dataset("bank", "age", data_dir)
    assert ds.x.shape[0] == 45_211 and ds.y.sum() == 5_289
    assert "duration" not in ds.feature_names
    assert load_dataset("bank", "marital", data_dir).num_groups == 3


def test_retinamnist(data_dir: Path) -> None:
    ds = load_dataset("retinamnist", "", data_dir)
    assert ds.x.shape == (1_600, 3, 28, 28)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert np.bincount(ds.y).tolist() == [714, 186, 326, 282, 92]  # train+val+test


def test_fashion_mnist(data_dir: Path) -> None:
    ds = load_dataset("fashion-mnist", "", data_dir)
    assert ds.x.shape == (70_000, 1, 28, 28)
    assert np.bincount(ds.y).tolist() == [7_000] * 10
    assert ds.x.max() == 1.0 and ds.x.min() == 0.0


def test_digits_is_bundled() -> None:
    ds = load_dataset("digits")
    assert ds.x.shape == (1_797, 1, 8, 8) and ds.num_classes == 10


def test_synthetic_knobs() -> None:
    ds = synthetic_dataset(num_samples=20_000, num_features=5, z_label_agreement=0.9, seed=3)
    assert ds.x.shape == (20_000, 5)
    assert abs((ds.z == ds.y).mean() - 0.9) < 0.01
    again = synthetic_dataset(num_samples=20_000, num_features=5, z_label_agreement=0.9, seed=3)
    assert np.array_equal(ds.x, again.x)


def test_unknown_dataset_and_attribute() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="no sensitive attribute 'age'"):
        load_dataset("adult", "age")


def _copy(spec_key: str, data_dir: Path, dest: Path) -> Path:
    spec = ALL_FILES[spec_key][0]
    target = dest / spec.relpath
    target.parent.mkdir(parents=True)
    shutil.copy(data_dir / spec.relpath, target)
    return target


def test_checksum_failure_says_how_to_fix(data_dir: Path, tmp_path: Path) -> None:
    target = _copy("compas", data_dir, tmp_path)
    with target.open("r+b") as fh:
        fh.truncate(target.stat().st_size // 2)
    with pytest.raises(DataError, match="corrupt or truncated; delete it and run again"):
        fetch(ALL_FILES["compas"][0], tmp_path)


def test_truncated_gzip_fails_its_checksum(data_dir: Path, tmp_path: Path) -> None:
    target = _copy("fashion-mnist", data_dir, tmp_path)
    with target.open("r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(DataError, match="corrupt or truncated"):
        fetch(ALL_FILES["fashion-mnist"][0], tmp_path)


def test_missing_file_offline_names_file_location_and_url(tmp_path: Path, no_network: None) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("adult", "sex", tmp_path)
    text = str(err.value)
    assert "adult/adult.data" in text and str(tmp_path) in text
    assert "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.data" in text
