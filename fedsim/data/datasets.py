"""Dataset registry: features, labels and (where there is one) a sensitive attribute.

Every loader returns a :class:`RawDataset` with all rows pooled (official train and
test files together: fedsim re-splits per client). Tabular categoricals are one-hot
encoded here (the category list is schema, not a statistic); numeric columns are
left unscaled and listed in ``numeric_columns`` so that the federated builder can
standardise them with statistics of the training rows only. Images are float32 in
[0, 1], shaped (N, C, H, W). Where each dataset's files come from (URLs, SHA-256
digests) is :mod:`fedsim.data.sources`.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.data.files import data_dir, fetch
from fedsim.data.sources import (
    ADULT_COLUMNS,
    ADULT_FILES,
    BANK_FILE,
    COMPAS_FILE,
    FASHION_FILES,
    RETINA_FILE,
)
from fedsim.errors import ConfigError, DataError


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A pooled dataset before partitioning."""

    name: str
    kind: str  # "tabular" or "image"
    x: np.ndarray  # float32: (N, D) tabular, (N, C, H, W) image
    y: np.ndarray  # int64 labels in [0, num_classes)
    z: np.ndarray  # int64 sensitive codes in [0, num_groups); zeros if none
    class_names: tuple[str, ...]
    group_names: tuple[str, ...]
    sensitive: str  # name of the sensitive attribute, "" if none
    numeric_columns: tuple[int, ...] = ()
    feature_names: tuple[str, ...] = field(default=())
    # Raw per-row columns by name (categorical columns of tabular sets, every column of a
    # csv/parquet file): what ``partition.method = "natural"`` can split by.
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


Loader = Callable[[str, Path | None], RawDataset]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Loader
    sensitive: tuple[str, ...]  # accepted sensitive attributes, first is the default
    description: str


REGISTRY: dict[str, DatasetInfo] = {}


def register(name: str, sensitive: tuple[str, ...], description: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        REGISTRY[name] = DatasetInfo(name, fn, sensitive, description)
        return fn

    return deco


def load_dataset(
    name: str, sensitive: str = "", root: str | Path | None = None, **synthetic: float
) -> RawDataset:
    """Load a registered dataset.

    Parameters
    ----------
    name
        A key of :data:`REGISTRY` (``fedsim list`` shows them).
    sensitive
        The sensitive attribute; empty for the dataset's default.
    root
        Data directory (see :func:`fedsim.data.files.data_dir`).
    **synthetic
        Knobs of the ``synthetic`` dataset.

    Raises
    ------
    ConfigError
        For an unknown dataset or sensitive attribute.
    DataError
        If a file is missing, corrupt or malformed.
    """
    if name not in REGISTRY:
        raise ConfigError(f"data.dataset: unknown dataset {name!r} (known: {', '.join(REGISTRY)})")
    info = REGISTRY[name]
    attr = sensitive or (info.sensitive[0] if info.sensitive else "")
    if attr and attr not in info.sensitive:
        raise ConfigError(
            f"data.sensitive: {name} has no sensitive attribute {attr!r} "
            f"(expected one of: {', '.join(info.sensitive) or 'none'})"
        )
    if name == "synthetic":
        return synthetic_dataset(**synthetic)  # type: ignore[arg-type]
    return _load_cached(name, attr, str(data_dir(root)))


@lru_cache(maxsize=8)
def _load_cached(name: str, attr: str, root: str) -> RawDataset:
    return REGISTRY[name].loader(attr, Path(root))


# ------------------------------------------------------------------------ synthetic


def synthetic_dataset(
    num_samples: int = 4000,
    num_features: int = 20,
    z_label_agreement: float = 0.85,
    class_separation: float = 1.0,
    seed: int = 0,
) -> RawDataset:
    """Binary Gaussian classes with a sensitive attribute Z correlated with the label.

    ``Y ~ Bernoulli(1/2)``; ``X | Y ~ N(±separation/2 · u, I)`` along a random unit
    direction ``u``; ``Z = Y`` with probability ``z_label_agreement`` and ``1 − Y``
    otherwise (Z itself is not a feature: a classifier sees it only through Y).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=num_samples)
    direction = rng.standard_normal(num_features)
    direction /= np.linalg.norm(direction)
    x = rng.standard_normal((num_samples, num_features))
    x += np.outer(np.where(y == 1, 0.5, -0.5) * class_separation * 2.0, direction)
    agree = rng.random(num_samples) < z_label_agreement
    z = np.where(agree, y, 1 - y)
    return RawDataset(
        name="synthetic",
        kind="tabular",
        x=x.astype(np.float32),
        y=y.astype(np.int64),
        z=z.astype(np.int64),
        class_names=("0", "1"),
        group_names=("0", "1"),
        sensitive="z",
        numeric_columns=tuple(range(num_features)),
        feature_names=tuple(f"x{i}" for i in range(num_features)),
    )


@register("synthetic", ("z",), "binary Gaussian task, Z correlated with Y (no files)")
def _synthetic_default(attr: str, root: Path | None) -> RawDataset:
    return synthetic_dataset()


# ------------------------------------------------------------------------ tabular


def _read_csv(path: Path, **kwargs: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)  # type: ignore[call-overload]
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({exc})") from None


def tabular_dataset(
    name: str,
    frame: pd.DataFrame,
    label: pd.Series,
    z: pd.Series,
    sensitive: str,
    categorical: list[str],
    class_names: tuple[str, ...],
) -> RawDataset:
    numeric = [c for c in frame.columns if c not in categorical]
    encoded = pd.get_dummies(frame[categorical].astype("category"), dtype=np.float32)
    x = np.concatenate([frame[numeric].to_numpy(np.float32), encoded.to_numpy(np.float32)], 1)
    codes = pd.Categorical(z)
    return RawDataset(
        name=name,
        kind="tabular",
        x=x,
        y=label.to_numpy(np.int64),
        z=np.asarray(codes.codes, dtype=np.int64),
        class_names=class_names,
        group_names=tuple(str(c) for c in codes.categories),
        sensitive=sensitive,
        numeric_columns=tuple(range(len(numeric))),
        feature_names=tuple(numeric) + tuple(encoded.columns),
        attributes={str(c): frame[c].to_numpy() for c in categorical},
    )


@register("adult", ("sex", "race"), "UCI Adult income >50K (48,842 rows; 45,222 complete)")
def load_adult(attr: str, root: Path | None) -> RawDataset:
    frames = []
    for spec, skip in zip(ADULT_FILES, (0, 1), strict=True):
        path = fetch(spec, root)
        frames.append(
            _read_csv(
                path,
                header=None,
                names=ADULT_COLUMNS,
                skipinitialspace=True,
                na_values="?",
                skiprows=skip,
            )
        )
    df = pd.concat(frames, ignore_index=True).dropna()
    if len(df) < 1000:
        raise DataError(f"adult: only {len(df)} complete rows read; the files look wrong")
    label = (df.pop("income").str.rstrip(".") == ">50K").astype(np.int64)
    df = df.drop(columns=["fnlwgt", "education"])  # sampling weight; duplicate of education-num
    cats = [
        "workclass",
        "marital-status",
        "occupation",
        "relationship",
        "race",
        "sex",
        "native-country",
    ]
    return tabular_dataset("adult", df, label, df[attr], attr, cats, ("<=50K", ">50K"))


@register("compas", ("race", "sex"), "ProPublica COMPAS two-year recidivism (6,172 rows)")
def load_compas(attr: str, root: Path | None) -> RawDataset:
    df = _read_csv(fetch(COMPAS_FILE, root))
    needed = {
        "days_b_screening_arrest",
        "is_recid",
        "c_charge_degree",
        "score_text",
        "two_year_recid",
        "race",
        "sex",
    }
    if missing := needed - set(df.columns):
        raise DataError(f"compas: columns missing from the CSV: {sorted(missing)}")
    df = df[
        df.days_b_screening_arrest.between(-30, 30)
        & (df.is_recid != -1)
        & (df.c_charge_degree != "O")
        & df.score_text.notna()
    ]
    label = df["two_year_recid"].astype(np.int64)
    features = [
        "sex",
        "age",
        "age_cat",
        "race",
        "juv_fel_count",
        "juv_misd_count",
        "juv_other_count",
        "priors_count",
        "c_charge_degree",
    ]
    frame = df[features].reset_index(drop=True)
    z = frame["race"].eq("African-American").map({True: "African-American", False: "other"})
    z = z if attr == "race" else frame["sex"]
    cats = ["sex", "age_cat", "race", "c_charge_degree"]
    return tabular_dataset(
        "compas", frame, label.reset_index(drop=True), z, attr, cats, ("no-recid", "recid")
    )


@register("bank", ("age", "marital"), "UCI Bank Marketing term deposit (45,211 rows)")
def load_bank(attr: str, root: Path | None) -> RawDataset:
    df = _read_csv(fetch(BANK_FILE, root), sep=";")
    if "y" not in df.columns or "age" not in df.columns:
        raise DataError("bank: expected a ';'-separated file with columns 'age' and 'y'")
    label = (df.pop("y") == "yes").astype(np.int64)
    df = df.drop(columns=["duration"])  # known only after the call: a label leak
    if attr == "age":
        z = df["age"].between(25, 60).map({True: "25-60", False: "<25 or >60"})
    else:
        z = df["marital"]
    cats = [
        "job",
        "marital",
        "education",
        "default",
        "housing",
        "loan",
        "contact",
        "month",
        "poutcome",
    ]
    return tabular_dataset("bank", df, label, z, attr, cats, ("no", "yes"))


# ------------------------------------------------------------------------ images


def _image_dataset(name: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...]) -> RawDataset:
    return RawDataset(
        name=name,
        kind="image",
        x=x,
        y=y.astype(np.int64),
        z=np.zeros(len(y), dtype=np.int64),
        class_names=classes,
        group_names=("all",),
        sensitive="",
    )


@register("retinamnist", (), "MedMNIST RetinaMNIST, 1,600 fundus images 3x28x28, 5 grades")
def load_retinamnist(attr: str, root: Path | None) -> RawDataset:
    path = fetch(RETINA_FILE, root)
    try:
        with np.load(path, allow_pickle=False) as npz:
            xs = [npz[f"{s}_images"] for s in ("train", "val", "test")]
            ys = [npz[f"{s}_labels"] for s in ("train", "val", "test")]
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a RetinaMNIST npz ({exc})") from None
    x = np.concatenate(xs).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    y = np.concatenate(ys).reshape(-1)
    return _image_dataset("retinamnist", x, y, tuple(str(i) for i in range(5)))


def _read_idx(path: Path, magic: int, offset: int) -> np.ndarray:
    try:
        raw = gzip.open(path, "rb").read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path}: bad IDX magic number (expected {magic})")
    return np.frombuffer(raw, np.uint8, offset=offset)


@register("fashion-mnist", (), "Fashion-MNIST, 70,000 images 1x28x28, 10 classes")
def load_fashion_mnist(attr: str, root: Path | None) -> RawDataset:
    xs, ys = [], []
    for split in ("train", "t10k"):
        images = _read_idx(fetch(FASHION_FILES[f"{split}-images-idx3-ubyte.gz"], root), 2051, 16)
        labels = _read_idx(fetch(FASHION_FILES[f"{split}-labels-idx1-ubyte.gz"], root), 2049, 8)
        xs.append(images.reshape(-1, 1, 28, 28))
        ys.append(labels)
    x = np.concatenate(xs).astype(np.float32) / 255.0
    classes = (
        "T-shirt",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    return _image_dataset("fashion-mnist", x, np.concatenate(ys), classes)


@register("digits", (), "scikit-learn's bundled 8x8 digits, 1,797 images, 10 classes")
def load_digits(attr: str, root: Path | None) -> RawDataset:
    from sklearn.datasets import load_digits as sk_digits  # sklearn: start-up, this dataset only

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _image_dataset("digits", x, bunch.target, tuple(str(i) for i in range(10)))
