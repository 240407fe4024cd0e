"""The fairness report's AGLFOP sections: the model-specific and model-agnostic bounds.

Hamman & Dutta, ICLR 2024, Sec. 5 (see :mod:`fedsim.fairness.report`).  The
*model-agnostic* bound lets the classifier see the true label: it bounds what any
classifier could do, and on data whose features cannot predict the label most of the
gap to a trained model is error no fair model could remove.  The *model-specific* bound
restricts each group's ``(FPR_z, TPR_z)`` to the convex hull of the trained model's own
ROC points (group-wise, randomised thresholds of its scores): the gap to it is what a
fair post-processing of this very model could still gain.  The report shows the
model-specific bound first when it is available.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fedsim.fairness.report_tables import AchievedPoint, ReportInputs, note, table_html

__all__ = ["frontier_section", "gap_sentence", "model_gap_sentence", "model_section"]


def gap_sentence(
    achieved: AchievedPoint, bound: Mapping[str, Any] | None, unconstrained: float
) -> str:
    """One sentence quantifying the gap between the model and the AGLFOP optimum."""
    head = (
        f"At its final-round disparities (round {achieved.round}: global I(Z;Ŷ) = "
        f"{achieved.global_disparity:.4f} bits, local I(Z;Ŷ|S) = "
        f"{achieved.local_disparity:.4f} bits) the trained model reaches accuracy "
        f"{achieved.accuracy:.4f}"
    )
    best = float((bound or {}).get("accuracy", math.nan))
    if not math.isfinite(best):
        status = (bound or {}).get("status", "not computed")
        return f"{head}; the AGLFOP optimum at these budgets is unavailable ({status})."
    gap = best - achieved.accuracy
    text = (
        f"{head}; the best accuracy any classifier can reach under these same two budgets "
        f"is {best:.4f}, so the strategy is {gap:.4f} ({100 * gap:.2f} percentage points) "
        "below the theoretical best at its own disparities."
    )
    if math.isfinite(unconstrained):
        text += (
            f" Without fairness budgets the optimum is {unconstrained:.4f}, so holding "
            f"disparity to the model's own levels lowers it by {unconstrained - best:.4f}. "
            "The AGLFOP classifier "
            "may use the true label, so the gap also holds the error the features cannot "
            "remove; it is an upper bound, not a promise."
        )
    return text


def model_gap_sentence(model_bound: Mapping[str, Any]) -> str:
    """One sentence on the gap between the model and its model-specific optimum."""
    model = model_bound.get("model", {}) or {}
    acc = float(model.get("accuracy", math.nan))
    best = float(model_bound.get("accuracy", math.nan))
    head = (
        f"On every client's test split the trained model reaches accuracy {acc:.4f} at "
        f"global I(Z;Ŷ) = {float(model_bound.get('eps_global', math.nan)):.4f} bits and "
        f"local I(Z;Ŷ|S) = {float(model_bound.get('eps_local', math.nan)):.4f} bits"
    )
    if not math.isfinite(best):
        status = model_bound.get("status", "not computed")
        return f"{head}; the model-specific optimum there is unavailable ({status})."
    gap = best - acc
    return (
        f"{head}; thresholding its own scores per group (with randomisation) reaches at "
        f"most {best:.4f} under these same budgets, so the strategy is {gap:.4f} "
        f"({100 * gap:.2f} percentage points) below what a fair post-processing of this "
        "model could reach."
    )


def _budget_table(frontier: pd.DataFrame) -> str:
    grid = frontier.pivot_table(
        index="eps_global", columns="eps_local", values="accuracy", dropna=False
    )
    grid.columns = [f"ε_l={c:.4g}" for c in grid.columns]
    grid = grid.reset_index().rename(columns={"eps_global": "ε_g \\ ε_l"})
    return "<h3>Best accuracy by budget</h3>" + table_html(grid)


def _scale_note(entropy_z_bits: float) -> str:
    if not math.isfinite(entropy_z_bits):
        return ""
    return (
        f" Every bits axis shows H(Z) = {entropy_z_bits:.4f} bits, the largest disparity "
        "any classifier can have, as its scale."
    )


def model_section(
    inputs: ReportInputs, achieved: AchievedPoint | None, figures: dict[str, Any] | None = None
) -> str:
    """The model-specific frontier, the model's point and its gap (or why it is absent).

    ``figures`` receives the frontier figure as ``"model-frontier"``."""
    from fedsim.fairness import plots  # matplotlib: start-up, only when rendering

    if inputs.model_frontier is None or inputs.model_bound is None:
        return note(
            html.escape(
                inputs.model_note
                or "No model-specific bound: it needs the run's model, its config.toml and "
                "a binary label (see the README's fairness section)."
            )
        )
    intro = note(
        "Best accuracy of a classifier that thresholds the trained model's scores per "
        "group (randomising between thresholds): each group's (FPR, TPR) lies in the "
        "convex hull of the model's ROC points on every client's test split, with global "
        "disparity at most ε_g and local disparity at most ε_l (bits). The star is the "
        "trained model, which is one such classifier; grey cells are budgets its ROC "
        "hull cannot meet." + _scale_note(inputs.entropy_z_bits)
    )
    model = dict(inputs.model_bound.get("model", {}) or {})
    fig = plots.frontier_figure(
        inputs.model_frontier,
        model or None,
        entropy_z=inputs.entropy_z_bits,
        label="best accuracy (model's ROC hull)",
    )
    if figures is not None:
        figures["model-frontier"] = fig
    figure = plots.to_inline_svg(fig, "model-frontier")
    verdict = f'<p class="gap">{html.escape(model_gap_sentence(inputs.model_bound))}</p>'
    return intro + figure + verdict + _budget_table(inputs.model_frontier)


def frontier_section(
    inputs: ReportInputs,
    tables: Mapping[str, pd.DataFrame],
    achieved: AchievedPoint | None,
    figures: dict[str, Any] | None = None,
) -> str:
    """The model-agnostic frontier, the achieved point and its gap (or why it is absent).

    ``figures`` receives the frontier figure as ``"frontier"``."""
    from fedsim.fairness import plots  # matplotlib: start-up, only when rendering

    if inputs.frontier is None:
        return note(html.escape(inputs.frontier_note or "No AGLFOP frontier for this run."))
    frontier = inputs.frontier
    source = inputs.counts_source or {}
    where = f"the {source.get('rows', 'test')} split"
    if "clients" in source:
        where += f" pooled over {source['clients']} clients"
    if "round" in source:
        where += f" (those evaluated in round {source['round']})"
    intro = note(
        "Best accuracy of any classifier Q(ŷ | s, z, y) with global disparity at most ε_g "
        f"and local disparity at most ε_l (bits), computed on {html.escape(where)} — the "
        "rows the model's achieved point was measured on. The star is the trained model."
        + _scale_note(inputs.entropy_z_bits)
    )
    point = None if achieved is None else achieved.as_dict()
    fig = plots.frontier_figure(frontier, point, entropy_z=inputs.entropy_z_bits)
    if figures is not None:
        figures["frontier"] = fig
    figure = plots.to_inline_svg(fig, "frontier")
    if achieved is not None:
        best_unconstrained = float(frontier["accuracy"].max())
        sentence = gap_sentence(achieved, inputs.bound, best_unconstrained)
        verdict = f'<p class="gap">{html.escape(sentence)}</p>'
        verdict += table_html(tables["achieved"])
    else:
        verdict = note(
            "No achieved point to compare: the run has no final round with accuracy and "
            "both disparities."
        )
    return intro + figure + verdict + _budget_table(frontier)
