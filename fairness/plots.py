"""Figures of the fairness report (matplotlib, no pyplot state).

Every ``*_figure`` function draws on a fresh :class:`matplotlib.figure.Figure`, legends
outside the data; the ``*_svg`` functions render it for inlining in the HTML report:
SVG with text as paths (no fonts needed to view it), the XML prologue, the DOCTYPE, the
metadata block and the namespace declarations stripped — an ``<svg>`` element inside
HTML gets its namespace from the HTML parser — so the markup holds no external
reference, and element ids are prefixed per figure so several figures can share one
page. Standalone SVG and PDF files of the same figures are :mod:`fedsim.fairness.figures`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

__all__ = [
    "accuracy_figure",
    "accuracy_svg",
    "clients_figure",
    "clients_svg",
    "disparity_figure",
    "disparity_svg",
    "frontier_figure",
    "frontier_svg",
    "outside_legend",
    "to_inline_svg",
]

_RC: dict[Any, Any] = {"svg.fonttype": "path", "svg.hashsalt": "fedsim-report", "font.size": 9.0}
GROUP_ACCURACY = "accuracy-"  # per-group accuracy columns: accuracy-<group name>
WORST_CLIENT = "worst-client-accuracy"
_PID_COLOURS = {"unique": "#4c72b0", "redundant": "#dd8452", "masked": "#55a868"}
_PID_LABELS = {"unique": "Uni (unique)", "redundant": "Red (redundant)", "masked": "Syn (masked)"}
_STRIP = (
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*"),
    re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
)


def to_inline_svg(fig: Figure, prefix: str) -> str:
    """``fig`` as an ``<svg>`` element fit for inlining in HTML.

    Parameters
    ----------
    fig
        The figure to render.
    prefix
        Prepended to every element id (and reference) so that ids are unique per page.

    Returns
    -------
    str
        The ``<svg>...</svg>`` markup, without prologue, metadata or namespaces.
    """
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    for pattern in _STRIP:
        text = pattern.sub("", text)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{prefix}" ', 1).strip()


def _figure(width: float, height: float, cols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def _entropy_scale(ax: Axes, entropy_z: float | None) -> None:
    """A right-hand axis in percent of ``H(Z)`` on a linear bits axis, labelled with it.

    ``H(Z)`` is the largest disparity any classifier can have (``I(Z;Ŷ) <= H(Z)``), so
    the percentage says how much of the sensitive attribute a prediction reveals.
    """
    if entropy_z is None or not np.isfinite(entropy_z) or entropy_z <= 0:
        return
    per_bit = 100.0 / float(entropy_z)

    def to_percent(bits: Any) -> Any:
        return np.asarray(bits, dtype=float) * per_bit

    def to_bits(percent: Any) -> Any:
        return np.asarray(percent, dtype=float) / per_bit

    scale = ax.secondary_yaxis("right", functions=(to_percent, to_bits))
    scale.set_ylabel(f"% of H(Z) = {entropy_z:.3f} bits")


def outside_legend(fig: Figure, axes: Sequence[Axes], ncols: int = 3) -> None:
    """One legend for every labelled artist of ``axes``, below the plots (off the data)."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8)


def accuracy_figure(table: pd.DataFrame) -> Figure:
    """Test accuracy per round, per-group accuracy (``accuracy-<group>``) and the worst
    client's accuracy when recorded."""
    fig, (ax,) = _figure(7.0, 3.4)
    rounds = table["round"]
    ax.plot(rounds, table["eval-acc"], marker="o", lw=2, label="accuracy (pooled test)")
    for col in sorted(c for c in table.columns if c.startswith(GROUP_ACCURACY)):
        ax.plot(rounds, table[col], ls="--", marker=".", label=col[len(GROUP_ACCURACY) :])
    if WORST_CLIENT in table.columns and table[WORST_CLIENT].notna().any():
        ax.plot(
            rounds, table[WORST_CLIENT], ls=":", marker="v", color="#c44e52", label="worst client"
        )
    ax.set(xlabel="round", ylabel="accuracy", title="Test accuracy per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    outside_legend(fig, [ax], ncols=4)
    return fig


def accuracy_svg(table: pd.DataFrame) -> str:
    """:func:`accuracy_figure` as inline SVG."""
    return to_inline_svg(accuracy_figure(table), "accuracy")


def disparity_figure(table: pd.DataFrame, *, entropy_z: float | None = None) -> Figure:
    """Global/local disparity per round and, per round, the PID as two stacked bars.

    The left bar is global disparity = Uni + Red, the right one local = Uni + Syn, so each
    bar's height is the quantity it decomposes. ``entropy_z`` (bits) adds a
    percent-of-H(Z) scale to every bits axis.
    """
    has_pid = {"unique", "redundant", "masked"} <= set(table.columns) and bool(
        table[["unique", "redundant", "masked"]].notna().any().any()
    )
    fig, axes = _figure(10.0 if has_pid else 7.0, 3.6, cols=2 if has_pid else 1)
    rounds = table["round"].to_numpy()
    ax = axes[0]
    ax.plot(rounds, table["global-disparity"], marker="o", label="global I(Z;Ŷ)")
    ax.plot(rounds, table["local-disparity"], marker="s", label="local I(Z;Ŷ|S)")
    ax.set(xlabel="round", ylabel="bits", title="Global and local disparity")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _entropy_scale(ax, entropy_z)
    if has_pid:
        ax = axes[1]
        unique = table["unique"].fillna(0.0).to_numpy()
        width = 0.38
        for offset, other in ((-width / 2, "redundant"), (width / 2, "masked")):
            x = rounds + offset
            ax.bar(x, unique, width, color=_PID_COLOURS["unique"], label=_PID_LABELS["unique"])
            ax.bar(
                x,
                table[other].fillna(0.0).to_numpy(),
                width,
                bottom=unique,
                color=_PID_COLOURS[other],
                label=_PID_LABELS[other],
            )
        ax.set(
            xlabel="round (left bar: global = Uni + Red; right bar: local = Uni + Syn)",
            ylabel="bits",
            title="PID of the disparities per round",
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _entropy_scale(ax, entropy_z)
    outside_legend(fig, axes, ncols=5)
    return fig


def disparity_svg(table: pd.DataFrame, *, entropy_z: float | None = None) -> str:
    """:func:`disparity_figure` as inline SVG."""
    return to_inline_svg(disparity_figure(table, entropy_z=entropy_z), "disparity")


def clients_figure(
    final: pd.DataFrame, global_disparity: float | None, *, entropy_z: float | None = None
) -> Figure:
    """Each client's own disparity ``I(Z;Ŷ)`` in the final round, with n and intervals.

    ``final`` holds ``client``, ``disparity``, optionally ``disparity-ci-low``/``-high``,
    ``num-examples-evaluate`` and ``flag`` (empty for a client large enough to rank).
    Ranked clients come first, tallest bar first, with their bootstrap interval; flagged
    clients follow in grey, hatched, and a client without two groups shows "n/a"
    instead of a bar. Every bar carries its test-set size n.
    """
    frame = final.copy()
    if "flag" not in frame.columns:
        frame["flag"] = ""
    ranked = frame[frame["flag"] == ""].sort_values("disparity", ascending=False)
    flagged = frame[frame["flag"] != ""]
    order = pd.concat([ranked, flagged])
    width = min(14.0, max(6.0, 0.3 * len(order)))
    fig, (ax,) = _figure(width, 3.6)
    x = np.arange(len(order))
    heights = order["disparity"].to_numpy(dtype=float)
    ok = (order["flag"] == "").to_numpy()
    drawn = np.nan_to_num(heights)
    ax.bar(x[ok], drawn[ok], color="#4c72b0", label="client I(Z;Ŷ)")
    if (~ok).any():
        flagged = "flagged: few rows or one group"
        ax.bar(x[~ok], drawn[~ok], color="#bbbbbb", hatch="//", label=flagged)
    if {"disparity-ci-low", "disparity-ci-high"} <= set(order.columns):
        low = order["disparity-ci-low"].to_numpy(dtype=float)
        high = order["disparity-ci-high"].to_numpy(dtype=float)
        has = np.isfinite(low) & np.isfinite(high)
        below, above = np.clip(drawn - low, 0, None), np.clip(high - drawn, 0, None)
        ax.errorbar(
            x[has],
            drawn[has],
            yerr=[below[has], above[has]],
            fmt="none",
            ecolor="black",
            elinewidth=0.8,
            capsize=2,
            label="95% bootstrap interval",
        )
    if global_disparity is not None and np.isfinite(global_disparity):
        ax.axhline(global_disparity, color="#c44e52", ls="--", label="global I(Z;Ŷ)")
    highs = order.get("disparity-ci-high", pd.Series(dtype=float)).to_numpy(dtype=float)
    top = float(np.nanmax(np.r_[drawn, highs[np.isfinite(highs)], 1e-6]))
    sizes = order.get("num-examples-evaluate", pd.Series([np.nan] * len(order)))
    for xi, h, n, value in zip(x, drawn, sizes.to_numpy(dtype=float), heights, strict=True):
        text = "n/a" if not np.isfinite(value) else (f"n={int(n)}" if np.isfinite(n) else "")
        ax.annotate(
            text,
            (xi, h),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=6,
            rotation=90 if len(order) > 12 else 0,
        )
    ax.set_ylim(0, 1.25 * top)
    labels = order["client"].astype(str).tolist()
    ax.set_xticks(x, labels, fontsize=7 if len(labels) > 20 else 9)
    ax.set(xlabel="client (partition id)", ylabel="bits", title="Per-client disparity, final round")
    _entropy_scale(ax, entropy_z)
    outside_legend(fig, [ax], ncols=2)
    return fig


def clients_svg(
    final: pd.DataFrame, global_disparity: float | None, *, entropy_z: float | None = None
) -> str:
    """:func:`clients_figure` as inline SVG."""
    return to_inline_svg(clients_figure(final, global_disparity, entropy_z=entropy_z), "clients")


def frontier_svg(
    frontier: pd.DataFrame,
    achieved: Mapping[str, float] | None,
    *,
    entropy_z: float | None = None,
    prefix: str = "frontier",
    label: str = "best accuracy (AGLFOP)",
) -> str:
    """:func:`frontier_figure` as inline SVG, its ids prefixed with ``prefix``."""
    fig = frontier_figure(frontier, achieved, entropy_z=entropy_z, label=label)
    return to_inline_svg(fig, prefix)


def frontier_figure(
    frontier: pd.DataFrame,
    achieved: Mapping[str, float] | None,
    *,
    entropy_z: float | None = None,
    label: str = "best accuracy (AGLFOP)",
) -> Figure:
    """Contours of the AGLFOP optimum over (eps_global, eps_local), with the model marked.

    ``achieved`` holds ``accuracy``, ``global_disparity`` and ``local_disparity``;
    ``entropy_z`` (bits) is drawn on both budget axes as their scale; ``label`` names
    the colour bar.
    """
    grid = frontier.pivot_table(index="eps_local", columns="eps_global", values="accuracy")
    g, loc = grid.columns.to_numpy(float), grid.index.to_numpy(float)
    fig, (ax,) = _figure(7.0, 5.0)
    if len(g) >= 2 and len(loc) >= 2:
        levels = _levels(grid.to_numpy())
        filled = ax.contourf(g, loc, grid.to_numpy(), levels=levels, cmap="viridis")
        lines = ax.contour(
            g, loc, grid.to_numpy(), levels=levels[1:-1], colors="white", linewidths=0.6
        )
        ax.clabel(lines, fmt="%.3f", fontsize=7)
        fig.colorbar(filled, ax=ax, label=label)
        gg, ll = np.meshgrid(g, loc)
        ax.plot(gg.ravel(), ll.ravel(), ".", color="black", ms=2, alpha=0.5)
        _symlog_axes(ax, g, loc, achieved, entropy_z)
    else:  # one of the grids is {0}: nothing to disclose on that axis
        xs, ys = (g, grid.iloc[0].to_numpy()) if len(g) >= 2 else (loc, grid.iloc[:, 0].to_numpy())
        ax.plot(xs, ys, marker="o")
        ax.set(ylabel=label)
    if achieved is not None:
        ax.plot(
            achieved["global_disparity"],
            achieved["local_disparity"],
            marker="*",
            ms=16,
            color="#e8432e",
            mec="white",
            ls="none",
            label=f"trained model (accuracy {achieved['accuracy']:.4f})",
        )
    h_z = float(entropy_z) if entropy_z is not None else float("nan")
    has_scale = bool(np.isfinite(h_z) and h_z > 0)
    if has_scale and len(g) >= 2 and len(loc) >= 2:
        ax.axvline(h_z, color="#c44e52", ls=":", lw=1.2, label=f"H(Z) = {h_z:.3f} bits")
        ax.axhline(h_z, color="#c44e52", ls=":", lw=1.2)
    outside_legend(fig, [ax], ncols=2)
    unit = f"bits; H(Z) = {h_z:.3f}" if has_scale else "bits"
    ax.set(xlabel=f"global budget ε_g ({unit})", ylabel=f"local budget ε_l ({unit})")
    ax.set_title("Best accuracy with I(Z;Ŷ) ≤ ε_g and I(Z;Ŷ|S) ≤ ε_l")
    return fig


def _levels(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi - lo < 1e-9:
        return np.array([lo - 1e-3, lo + 1e-3])
    return np.linspace(lo, hi, 11)


def _symlog_axes(
    ax: Axes,
    eps_global: Sequence[float],
    eps_local: Sequence[float],
    achieved: Mapping[str, float] | None,
    entropy_z: float | None = None,
) -> None:
    """Symmetric-log axes (0 stays on the axis, small budgets get room) ticked at the
    grid's budgets and wide enough to show the achieved point and ``H(Z)``."""
    axes = (
        (eps_global, "global_disparity", ax.xaxis, ax.set_xscale, ax.set_xlim),
        (eps_local, "local_disparity", ax.yaxis, ax.set_yscale, ax.set_ylim),
    )
    for values, key, axis, scale, limits in axes:
        positive = [v for v in values if v > 0]
        top = max(positive)
        if achieved is not None and np.isfinite(achieved[key]):
            top = max(top, 1.15 * achieved[key])
        if entropy_z is not None and np.isfinite(entropy_z) and entropy_z > 0:
            top = max(top, 1.05 * entropy_z)
        scale("symlog", linthresh=min(positive), linscale=0.5)
        limits(0, top)
        axis.set_ticks(list(values), [f"{v:.3g}" for v in values])
        axis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelrotation=45)
