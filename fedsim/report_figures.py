"""Figure files for papers: ``fedsim report RUN --figures DIR`` and ``fedsim report SWEEP``.

Writes each figure of a run's report (:class:`fedsim.fairness.report.Report`) as a
standalone SVG (SVG namespace, text kept as text) and a PDF, and the comparison figure
of a sweep (mean ± std over seeds, :func:`fedsim.fairness.figures.sweep_figure`) from
the CSV ``fedsim sweep --out`` writes. Rendering is :mod:`fedsim.fairness.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim.errors import ConfigError, DataError
from fedsim.study import METRIC_COLUMNS

__all__ = ["SWEEP_CSV", "sweep_csv", "write_figures", "write_sweep_figures"]

#: A sweep folder's CSV (one row per run), as the sweep scripts name it.
SWEEP_CSV = "runs.csv"
_NOT_GRID = {"seed", *METRIC_COLUMNS}  # a sweep CSV's other columns are its grid


def write_figures(figures: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """Write ``<name>.svg`` and ``<name>.pdf`` for every figure into ``folder``.

    Returns
    -------
    list of pathlib.Path
        The files written, SVG then PDF per figure.
    """
    from fedsim import results  # pandas: start-up
    from fedsim.fairness.figures import (  # matplotlib: start-up, only when rendering
        pdf_bytes,
        standalone_svg,
    )

    out = Path(folder)
    written: list[Path] = []
    for name, fig in figures.items():
        svg, pdf = out / f"{name}.svg", out / f"{name}.pdf"
        results.atomic_write_text(svg, standalone_svg(fig))
        results.atomic_write_bytes(pdf, pdf_bytes(fig))
        written += [svg, pdf]
    return written


def sweep_csv(path: str | Path) -> Path | None:
    """The sweep CSV ``path`` names (a ``.csv`` file, or a folder holding ``runs.csv``
    and no run's ``summary.json``), or None when ``path`` is not a sweep."""
    from fedsim import results  # pandas: start-up

    p = Path(path)
    if p.suffix.lower() == ".csv":
        return p
    if p.is_dir() and (p / SWEEP_CSV).is_file() and not (p / results.SUMMARY).is_file():
        return p / SWEEP_CSV
    return None


def write_sweep_figures(csv: str | Path, folder: str | Path | None = None) -> list[Path]:
    """The sweep comparison figure (``sweep.svg``, ``sweep.pdf``) of a sweep CSV.

    Parameters
    ----------
    csv
        One row per run: grid columns, ``seed`` and metric columns (``eval-acc``;
        ``global-disparity`` and ``local-disparity`` when the sweep recorded them).
    folder
        Where to write (default: beside the CSV).

    Raises
    ------
    ConfigError
        If the file is missing or has no ``seed`` or ``eval-acc`` column or no grid column.
    DataError
        If it cannot be read as CSV.
    """
    from fedsim.fairness.figures import (  # matplotlib: start-up, only when rendering
        SWEEP_METRICS,
        sweep_figure,
    )

    path = Path(csv)
    if not path.is_file():
        raise ConfigError(f"report: sweep CSV {str(path)!r} does not exist")
    try:
        runs = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"report: cannot read the sweep CSV {str(path)!r}: {exc}") from exc
    missing = [c for c in ("seed", "eval-acc") if c not in runs.columns]
    by = [c for c in runs.columns if c not in _NOT_GRID and c not in SWEEP_METRICS]
    if missing or not by:
        raise ConfigError(
            f"report: {str(path)!r} is not a sweep CSV (needs grid columns, seed and eval-acc; "
            f"has {', '.join(map(str, runs.columns))}); pass the --out file of `fedsim sweep`"
        )
    return write_figures({"sweep": sweep_figure(runs, by)}, folder or path.parent)
