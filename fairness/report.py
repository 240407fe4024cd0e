"""A self-contained HTML fairness report of one run, and its tables.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated Learning
Using Partial Information Decomposition" (ICLR 2024). The report shows, per round, the
accuracy, the global disparity ``I(Z;Ŷ)`` and local disparity ``I(Z;Ŷ|S)`` (bits) with
their PID ``Uni + Red = global``, ``Uni + Syn = local``; each client's own disparity;
and the AGLFOP frontier — the best accuracy any classifier reaches under budgets
``(eps_global, eps_local)`` — with the trained model's achieved point and its gap to
the optimum at its own disparities.

When the trained model's scores are available the report also shows, first, the
*model-specific* frontier: each group's rates restricted to the convex hull of the
model's ROC points (:mod:`fedsim.fairness.report_bounds` explains the two bounds). Every
"bits" axis carries ``H(Z)``, the largest possible disparity, as its scale.

This module is pure: it turns already loaded inputs (long-form metrics, the summary,
optional frontiers) into HTML and :class:`pandas.DataFrame` tables; reading a run
folder and writing the files is :func:`fedsim.report_run.write_report`'s job (the
model-specific inputs come from :func:`fedsim.model_bound.with_model_bound`). Tables
are built in :mod:`fedsim.fairness.report_tables`, the bound sections in
:mod:`fedsim.fairness.report_bounds`. The HTML has
no external reference: figures are inline SVG (:mod:`fedsim.fairness.plots`), styles are
inline, and nothing is fetched.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from fedsim.fairness.report_bounds import frontier_section, gap_sentence, model_section
from fedsim.fairness.report_tables import (
    MIN_CLIENT_ROWS,
    NO_FAIRNESS,
    TABLE_FILES,
    AchievedPoint,
    ReportInputs,
    achieved_point,
    note,
    report_tables,
    table_html,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "SECTIONS",
    "TABLE_FILES",
    "AchievedPoint",
    "Report",
    "ReportInputs",
    "achieved_point",
    "build_report",
    "gap_sentence",
    "report_tables",
]

#: Section key -> heading (every report has all of them, with a note when empty).
SECTIONS: dict[str, str] = {
    "overview": "Run overview",
    "accuracy": "Accuracy per round",
    "disparity": "Global and local disparity per round",
    "clients": "Per-client disparity",
    "model": "Model-specific AGLFOP frontier: thresholds of the trained model",
    "frontier": "Model-agnostic AGLFOP frontier and the trained model",
}


@dataclass(frozen=True)
class Report:
    """The HTML page, the tables it shows (keys of :data:`TABLE_FILES`) and its figures
    (by file stem, for :func:`fedsim.fairness.figures.standalone_svg` and ``pdf_bytes``)."""

    html: str
    tables: dict[str, pd.DataFrame]
    achieved: AchievedPoint | None
    figures: dict[str, Figure]


def _overview(inputs: ReportInputs, achieved: AchievedPoint | None) -> str:
    s = inputs.summary
    final = s.get("final", {}) or {}
    rows = [
        ("scenario", s.get("scenario", "")),
        ("dataset", s.get("dataset", "")),
        ("strategy", s.get("strategy", "")),
        ("engine", s.get("engine", "")),
        ("clients", s.get("num_clients", "")),
        ("rounds", s.get("rounds", "")),
        ("seed", s.get("seed", "")),
        ("final accuracy", _fmt(final.get("eval-acc"))),
        ("final worst-client accuracy", _fmt(final.get("worst-client-accuracy"))),
        ("final client accuracy spread (max − min)", _fmt(final.get("client-accuracy-spread"))),
        ("final global disparity (bits)", _fmt(final.get("global-disparity"))),
        ("final local disparity (bits)", _fmt(final.get("local-disparity"))),
        ("wall time (s)", s.get("wall_time_s", "")),
    ]
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    out = f'<table class="kv">{body}</table>'
    if achieved is None:
        out += note("No achieved point: the run has no round with accuracy and both disparities.")
    return out


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{float(value):.4f}"


def build_report(inputs: ReportInputs) -> Report:
    """Render the report page and its tables.

    Parameters
    ----------
    inputs
        The run's metrics, summary and (optional) frontier and bound.

    Returns
    -------
    Report
        ``html`` (one self-contained page with a section per :data:`SECTIONS` entry),
        ``tables`` (keys of :data:`TABLE_FILES` the run supports) and the achieved point.
    """
    from fedsim.fairness import plots  # matplotlib: start-up, only when rendering

    achieved = achieved_point(inputs.metrics)
    tables = report_tables(inputs, achieved)
    parts: dict[str, str] = {"overview": _overview(inputs, achieved)}
    figures: dict[str, Figure] = {}

    if "accuracy" in tables and not tables["accuracy"].empty:
        figures["accuracy"] = plots.accuracy_figure(tables["accuracy"])
        parts["accuracy"] = (
            note(
                "Pooled test accuracy, accuracy per sensitive group, and client-level "
                "performance fairness as q-FFL reports it: the worst client's accuracy and "
                "the spread (max − min, standard deviation) of the clients' accuracies."
            )
            + plots.to_inline_svg(figures["accuracy"], "accuracy")
            + table_html(tables["accuracy"])
        )
    else:
        parts["accuracy"] = note("The run recorded no evaluation accuracy (eval-acc).")

    if "disparity" in tables and not tables["disparity"].empty:
        parts["disparity"] = (
            note(
                "Global disparity I(Z;Ŷ) and local disparity I(Z;Ŷ|S) in bits, on the pooled "
                "test splits; PID of I(Z;Ŷ,S): unique + redundant = global, unique + masked "
                "= local."
            )
            + _inline(
                figures,
                "disparity",
                plots.disparity_figure(tables["disparity"], entropy_z=inputs.entropy_z_bits),
            )
            + table_html(tables["disparity"])
        )
    else:
        parts["disparity"] = note(NO_FAIRNESS)

    parts["clients"] = _clients_section(
        tables.get("clients"), achieved, inputs.entropy_z_bits, figures
    )
    parts["model"] = model_section(inputs, achieved, figures)
    parts["frontier"] = frontier_section(inputs, tables, achieved, figures)
    page = _page(inputs, parts)
    return Report(page, tables, achieved, figures)


def _inline(figures: dict[str, Figure], name: str, fig: Figure) -> str:
    """Keep ``fig`` as the report's figure ``name`` and return it as inline SVG."""
    from fedsim.fairness import plots  # matplotlib: start-up, only when rendering

    figures[name] = fig
    return plots.to_inline_svg(fig, name)


def _clients_section(
    table: pd.DataFrame | None,
    achieved: AchievedPoint | None,
    entropy_z_bits: float,
    figures: dict[str, Figure],
) -> str:
    from fedsim.fairness import plots  # matplotlib: start-up, only when rendering

    if table is None or table.empty:
        return note("The run recorded no per-client evaluation rows.")
    last = table[table["round"] == table["round"].max()].reset_index(drop=True)
    if "disparity" not in last.columns or last["disparity"].isna().all():
        return note(NO_FAIRNESS + " Per-client accuracy, final round:") + table_html(last)
    global_bits = achieved.global_disparity if achieved is not None else None
    ranked = last[last["flag"] == ""].sort_values("disparity", ascending=False)
    flagged = last[last["flag"] != ""]
    intro = note(
        f"Each client's own disparity I(Z;Ŷ) on its test split (bits) with its 95% "
        f"bootstrap interval and test-set size n, fairlearn's demographic-parity and "
        f"equalized-odds differences and ratios, and per-group rates, round "
        f"{int(last['round'].iloc[0])}. Clients with fewer than {MIN_CLIENT_ROWS} test rows "
        "or without both sensitive groups are flagged, not ranked: their numbers say "
        "little, and a client holding one group has no disparity at all (n/a), which is "
        f"not the same as fair. All rounds are in {TABLE_FILES['clients']}."
    )
    figure = _inline(
        figures,
        "clients",
        plots.clients_figure(last, global_bits, entropy_z=entropy_z_bits),
    )
    out = intro + figure + f"<h3>Ranked clients ({len(ranked)})</h3>" + table_html(ranked)
    if len(flagged):
        out += f"<h3>Flagged clients ({len(flagged)}), not ranked</h3>" + table_html(flagged)
    return out


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}table.kv th{text-align:left}
.note{color:#555}.gap{background:#fff6e5;border-left:4px solid #e8a33e;padding:.6em 1em}
svg{max-width:100%;height:auto;display:block;margin:.6em 0}
nav a{margin-right:1em}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.8em}
"""


def _page(inputs: ReportInputs, parts: Mapping[str, str]) -> str:
    name = html.escape(str(inputs.summary.get("scenario", "run")))
    nav = "".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title in SECTIONS.items())
    sections = "".join(
        f'<section id="{key}"><h2>{html.escape(title)}</h2>{parts[key]}</section>'
        for key, title in SECTIONS.items()
    )
    files = ", ".join(TABLE_FILES.values())
    config = (
        f"<details><summary>Scenario (config.toml)</summary><pre>"
        f"{html.escape(inputs.config_toml)}</pre></details>"
        if inputs.config_toml
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>fedsim fairness report: {name}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Fairness report: {name}</h1>"
        '<p class="note">Global and local disparity, their partial information '
        "decomposition and the AGLFOP accuracy bound (Hamman &amp; Dutta, ICLR 2024). "
        f"Tables: {html.escape(files)} beside this file.</p>"
        f"<nav>{nav}</nav>{sections}{config}</body></html>\n"
    )
