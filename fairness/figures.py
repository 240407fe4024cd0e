"""Paper-ready figure files: standalone SVG and PDF, and the sweep comparison figure.

The report's inline SVGs (:mod:`fedsim.fairness.plots`) drop their namespace and draw
text as paths to live inside one HTML page; a figure saved for a paper must stand on
its own instead. :func:`standalone_svg` keeps the XML prologue and the SVG namespace and
keeps text as text (``svg.fonttype = "none"``: editable, searchable, set in the paper's
font); :func:`pdf_bytes` embeds the fonts (TrueType, ``pdf.fonttype = 42``). Pure
rendering: writing the files is :mod:`fedsim.report_figures`' job.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedsim.fairness.plots import outside_legend

__all__ = ["SWEEP_METRICS", "pdf_bytes", "standalone_svg", "sweep_figure"]

_SVG_RC: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "fedsim-figure"}
_PDF_RC: dict[Any, Any] = {"pdf.fonttype": 42}
#: Sweep columns compared across runs, with their axis labels.
SWEEP_METRICS: dict[str, str] = {
    "eval-acc": "accuracy",
    "global-disparity": "global disparity I(Z;Ŷ) (bits)",
    "local-disparity": "local disparity I(Z;Ŷ|S) (bits)",
}


def standalone_svg(fig: Figure) -> str:
    """``fig`` as a complete SVG document (namespace declared, text kept as text)."""
    buf = io.StringIO()
    with matplotlib.rc_context(_SVG_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def pdf_bytes(fig: Figure) -> bytes:
    """``fig`` as a PDF file with its fonts embedded (no creation date: reproducible)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_PDF_RC):
        fig.savefig(buf, format="pdf", metadata={"CreationDate": None})
    return buf.getvalue()


def sweep_figure(runs: pd.DataFrame, by: Sequence[str]) -> Figure:
    """Mean ± standard deviation over seeds of accuracy and global and local disparity.

    Parameters
    ----------
    runs
        One row per run (a sweep's CSV: grid columns, ``seed``, metric columns); the
        metrics of :data:`SWEEP_METRICS` present in it get one panel each.
    by
        The grid columns that name a configuration (one bar per combination).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per metric, one bar per configuration with its sample standard
        deviation (ddof = 1) as error bar and the number of seeds under it.
    """
    metrics = [m for m in SWEEP_METRICS if m in runs.columns and runs[m].notna().any()]
    grouped = runs.groupby(list(by), sort=False, dropna=False)
    # One grid column: its values as tick labels and its name on the axis.
    single = len(by) == 1
    labels = [
        str(key) if single else ", ".join(f"{k}={v}" for k, v in zip(by, key, strict=True))
        for key in grouped.groups
    ]
    fig = Figure(figsize=(max(4.0, 3.2 * len(metrics)), 3.6), layout="constrained")
    axes = [fig.add_subplot(1, len(metrics), i + 1) for i in range(len(metrics))]
    x = np.arange(len(labels))
    for ax, metric in zip(axes, metrics, strict=True):
        stats = grouped[metric].agg(["mean", "std", "count"])
        std = stats["std"].fillna(0.0).to_numpy()
        ax.bar(
            x, stats["mean"], yerr=std, capsize=3, color="#4c72b0", label="mean ± std over seeds"
        )
        for xi, (mean, n) in enumerate(zip(stats["mean"], stats["count"], strict=True)):
            if math.isfinite(mean):
                ax.annotate(
                    f"n={n}",
                    (xi, 0),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="white",
                )
        ax.set_xticks(x, labels, rotation=30 if len(labels) > 3 else 0, ha="right", fontsize=8)
        ax.set(ylabel=SWEEP_METRICS[metric], title=SWEEP_METRICS[metric].split(" (")[0])
        if single:
            ax.set_xlabel(by[0])
        ax.grid(True, axis="y", alpha=0.3)
    outside_legend(fig, axes[:1], ncols=1)
    return fig
