"""Data of your own: a loader ``load(**options) -> {"x", "y", "sensitive", ...}``.

The script writes a small table of patient records as CSV beside its output folder
(``<out>-data/patients.csv``: a run folder holds only fedsim's files; no data is stored
in the repository), then runs ``custom_dataset.toml``
with ``data.options.path`` pointing at it. The loader encodes the table into numpy
arrays and hands the hospital column back as an attribute, so ``partition.method =
"natural"`` makes one client per hospital. Without a path (``fedsim run
examples/custom_dataset.toml``) it builds the same table in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HOSPITALS = ("north", "south", "east", "west")


def make_table(rows: int = 1200, seed: int = 0) -> pd.DataFrame:
    """Synthetic patient records: age, dose, sex, hospital and a binary outcome."""
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, rows)
    dose = rng.normal(5.0, 2.0, rows)
    sex = rng.choice(["female", "male"], rows)
    hospital = rng.choice(HOSPITALS, rows, p=[0.4, 0.3, 0.2, 0.1])
    risk = 0.04 * (age - 55) - 0.5 * (dose - 5.0) + 0.3 * (sex == "male")
    outcome = np.where(rng.random(rows) < 1 / (1 + np.exp(-risk)), "bad", "good")
    return pd.DataFrame(
        {"age": age, "dose": dose, "sex": sex, "hospital": hospital, "outcome": outcome}
    )


def load(path: str = "", rows: int = 1200, seed: int = 0) -> dict:
    """Read the CSV at ``path`` (or build the table) and encode it for fedsim."""
    table = pd.read_csv(path) if path else make_table(rows, seed)
    x = np.stack(
        [
            (table.age - table.age.mean()) / table.age.std(),
            (table.dose - table.dose.mean()) / table.dose.std(),
            (table.sex == "male").astype(float),
        ],
        axis=1,
    )
    return {
        "x": x.astype(np.float32),
        "y": (table.outcome == "good").to_numpy(np.int64),  # 0 = bad, 1 = good
        "sensitive": (table.sex == "male").to_numpy(np.int64),
        "group_names": ["female", "male"],
        "class_names": ["bad", "good"],
        "attributes": {"hospital": table.hospital.to_numpy()},  # for partition.by
    }


if __name__ == "__main__":
    from _cli import parse_args, report_line, run_example

    args = parse_args("custom_dataset")
    csv = Path(args.out).with_name(Path(args.out).name + "-data") / "patients.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    make_table().to_csv(csv, index=False)
    result = run_example("custom_dataset", args, {"data.options.path": str(csv.resolve())})
    print(report_line("custom_dataset", result))
