"""A self-contained HTML fairness report of one run, and its tables.

Hamman & Dutta, "Demystifying Local and Global Fairness Trade-offs in Federated Learning
Using Partial Information Decomposition" (ICLR 2024). The report shows, per round, the
accuracy, the global disparity ``I(Z;Ŷ)`` and local disparity ``I(Z;Ŷ|S)`` (bits) with
their PID ``Uni + Red = global``, ``Uni + Syn = local``; each client's own disparity;
and the AGLFOP frontier — the best accuracy any classifier reaches under budgets
``(eps_global, eps_local)`` — with the trained model's achieved point and its gap to
the optimum at its own disparities.

This module is pure: it turns already loaded inputs (long-form metrics, the summary,
an optional frontier) into HTML and :class:`pandas.DataFrame` tables; reading a run
folder and writing the files is :func:`fedsim.bounds.write_report`'s job. The HTML has
no external reference: figures are inline SVG (:mod:`fedsim.fairness.plots`), styles are
inline, and nothing is fetched.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

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
    "frontier": "AGLFOP accuracy frontier and the trained model",
}
#: Table key -> CSV file name written beside ``report.html``.
TABLE_FILES: dict[str, str] = {
    "accuracy": "report_accuracy.csv",
    "disparity": "report_disparity.csv",
    "clients": "report_clients.csv",
    "frontier": "report_frontier.csv",
    "achieved": "report_achieved.csv",
}
_ACCURACY = ("eval-acc", "eval-loss", "train-loss")
_DISPARITY = ("global-disparity", "local-disparity", "unique", "redundant", "masked", "spd", "eod")
_CLIENT = ("eval-acc", "eval-loss", "num-examples-evaluate", "disparity", "spd", "eod")
_NO_FAIRNESS = (
    "This run has no fairness accounting (<code>fairness.enabled = false</code>), so its "
    "metrics hold no disparities. Rerun with <code>--set fairness.enabled=true</code> "
    "to get this section."
)


@dataclass(frozen=True)
class AchievedPoint:
    """The trained model's final-round accuracy and disparities (bits)."""

    round: int
    accuracy: float
    global_disparity: float
    local_disparity: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def achieved_point(metrics: pd.DataFrame) -> AchievedPoint | None:
    """The server's final-round ``eval-acc``, ``global-disparity``, ``local-disparity``.

    The final round is the last one with all three; None when no round has them (a run
    without fairness accounting or without evaluation).
    """
    wide = _server(metrics)
    needed = ["eval-acc", "global-disparity", "local-disparity"]
    if wide.empty or not set(needed) <= set(wide.columns):
        return None
    rows = wide.dropna(subset=needed)
    if rows.empty:
        return None
    last = rows.iloc[-1]
    return AchievedPoint(int(last["round"]), *(float(last[k]) for k in needed))


@dataclass(frozen=True)
class ReportInputs:
    """What a report is made of.

    Attributes
    ----------
    metrics
        Long-form metrics: round, client (``"server"`` or a partition id), metric, value.
    summary
        The run's ``summary.json``.
    frontier
        AGLFOP frontier (columns of :func:`fedsim.fairness.aglfop.frontier`), or None.
    bound
        The AGLFOP optimum at the achieved disparities: ``accuracy``, ``status``.
    counts_source
        Where the frontier's counts came from (``rows``, ``round``, ``partition_ids``).
    frontier_note
        Why there is no frontier, when there is none.
    """

    metrics: pd.DataFrame
    summary: Mapping[str, Any]
    frontier: pd.DataFrame | None = None
    bound: Mapping[str, Any] | None = None
    counts_source: Mapping[str, Any] | None = None
    frontier_note: str = ""
    config_toml: str = ""


@dataclass(frozen=True)
class Report:
    """The HTML page and the tables it shows (keys of :data:`TABLE_FILES`)."""

    html: str
    tables: dict[str, pd.DataFrame]
    achieved: AchievedPoint | None


def _server(metrics: pd.DataFrame) -> pd.DataFrame:
    frame = metrics[metrics["client"].astype(str) == "server"]
    if frame.empty:
        return pd.DataFrame({"round": pd.Series(dtype="int64")})
    wide = frame.pivot_table(index="round", columns="metric", values="value", aggfunc="last")
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index().sort_values("round", ignore_index=True)


def _pick(wide: pd.DataFrame, names: tuple[str, ...], prefix: str = "") -> pd.DataFrame:
    cols = [c for c in names if c in wide.columns]
    cols += sorted(c for c in wide.columns if prefix and c.startswith(prefix))
    return wide[["round", *cols]]


def report_tables(inputs: ReportInputs, achieved: AchievedPoint | None) -> dict[str, pd.DataFrame]:
    """The report's tables; a table the run cannot support is absent."""
    wide = _server(inputs.metrics)
    tables: dict[str, pd.DataFrame] = {}
    if "eval-acc" in wide.columns:
        tables["accuracy"] = _pick(wide, _ACCURACY, "acc-group-").dropna(subset=["eval-acc"])
    if {"global-disparity", "local-disparity"} <= set(wide.columns):
        table = _pick(wide, _DISPARITY).dropna(subset=["global-disparity"])
        tables["disparity"] = table.reset_index(drop=True)
    clients = _clients(inputs.metrics)
    if clients is not None:
        tables["clients"] = clients
    if inputs.frontier is not None:
        tables["frontier"] = inputs.frontier.reset_index(drop=True)
    if achieved is not None:
        bound = dict(inputs.bound or {})
        best = float(bound.get("accuracy", math.nan))
        row = achieved.as_dict() | {
            "bound_accuracy": best,
            "gap": best - achieved.accuracy,
            "bound_status": str(bound.get("status", "not computed")),
        }
        tables["achieved"] = pd.DataFrame([row])
    return tables


def _clients(metrics: pd.DataFrame) -> pd.DataFrame | None:
    frame = metrics[metrics["client"].astype(str) != "server"]
    frame = frame[frame["metric"].isin(_CLIENT) | frame["metric"].str.startswith("acc-group-")]
    if frame.empty:
        return None
    wide = frame.pivot_table(
        index=["round", "client"], columns="metric", values="value", aggfunc="last"
    ).reset_index()
    wide.columns = [str(c) for c in wide.columns]
    wide["client"] = wide["client"].astype(str)
    order = [c for c in _CLIENT if c in wide.columns]
    order += sorted(c for c in wide.columns if c.startswith("acc-group-"))
    key = pd.to_numeric(wide["client"], errors="coerce")
    wide = wide.assign(_key=key).sort_values(["round", "_key", "client"]).drop(columns="_key")
    if "num-examples-evaluate" in wide.columns:
        wide["num-examples-evaluate"] = wide["num-examples-evaluate"].round().astype("Int64")
    return wide[["round", "client", *order]].reset_index(drop=True)


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


def _table_html(frame: pd.DataFrame, digits: int = 4) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.{digits}f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


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
        ("final global disparity (bits)", _fmt(final.get("global-disparity"))),
        ("final local disparity (bits)", _fmt(final.get("local-disparity"))),
        ("wall time (s)", s.get("wall_time_s", "")),
    ]
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    out = f'<table class="kv">{body}</table>'
    if achieved is None:
        out += _note("No achieved point: the run has no round with accuracy and both disparities.")
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
    from fedsim.fairness import plots

    achieved = achieved_point(inputs.metrics)
    tables = report_tables(inputs, achieved)
    parts: dict[str, str] = {"overview": _overview(inputs, achieved)}

    if "accuracy" in tables and not tables["accuracy"].empty:
        parts["accuracy"] = plots.accuracy_svg(tables["accuracy"]) + _table_html(tables["accuracy"])
    else:
        parts["accuracy"] = _note("The run recorded no evaluation accuracy (eval-acc).")

    if "disparity" in tables and not tables["disparity"].empty:
        parts["disparity"] = (
            _note(
                "Global disparity I(Z;Ŷ) and local disparity I(Z;Ŷ|S) in bits, on the pooled "
                "test splits; PID of I(Z;Ŷ,S): unique + redundant = global, unique + masked "
                "= local."
            )
            + plots.disparity_svg(tables["disparity"])
            + _table_html(tables["disparity"])
        )
    else:
        parts["disparity"] = _note(_NO_FAIRNESS)

    parts["clients"] = _clients_section(tables.get("clients"), achieved)
    parts["frontier"] = _frontier_section(inputs, tables, achieved)
    page = _page(inputs, parts)
    return Report(page, tables, achieved)


def _clients_section(table: pd.DataFrame | None, achieved: AchievedPoint | None) -> str:
    if table is None or table.empty:
        return _note("The run recorded no per-client evaluation rows.")
    last = table[table["round"] == table["round"].max()].reset_index(drop=True)
    if "disparity" not in last.columns or last["disparity"].isna().all():
        return _note(_NO_FAIRNESS + " Per-client accuracy, final round:") + _table_html(last)
    global_bits = achieved.global_disparity if achieved is not None else None
    intro = _note(
        f"Each client's own disparity I(Z;Ŷ) on its test split (bits), statistical-parity "
        f"(spd) and equalized-odds (eod) differences and group accuracies, round "
        f"{int(last['round'].iloc[0])}. All rounds are in {TABLE_FILES['clients']}."
    )
    return intro + _clients_figure(last, global_bits) + _table_html(last)


def _clients_figure(last: pd.DataFrame, global_bits: float | None) -> str:
    from fedsim.fairness import plots

    return plots.clients_svg(last.dropna(subset=["disparity"]), global_bits)


def _frontier_section(
    inputs: ReportInputs, tables: Mapping[str, pd.DataFrame], achieved: AchievedPoint | None
) -> str:
    from fedsim.fairness import plots

    if inputs.frontier is None:
        return _note(html.escape(inputs.frontier_note or "No AGLFOP frontier for this run."))
    frontier = inputs.frontier
    source = inputs.counts_source or {}
    where = f"the {source.get('rows', 'test')} split"
    if "clients" in source:
        where += f" pooled over {source['clients']} clients"
    if "round" in source:
        where += f" (those evaluated in round {source['round']})"
    intro = _note(
        "Best accuracy of any classifier Q(ŷ | s, z, y) with global disparity at most ε_g "
        f"and local disparity at most ε_l (bits), computed on {html.escape(where)} — the "
        "rows the model's achieved point was measured on. The star is the trained model."
    )
    point = None if achieved is None else achieved.as_dict()
    figure = plots.frontier_svg(frontier, point)
    if achieved is not None:
        best_unconstrained = float(frontier["accuracy"].max())
        sentence = gap_sentence(achieved, inputs.bound, best_unconstrained)
        verdict = f'<p class="gap">{html.escape(sentence)}</p>'
        verdict += _table_html(tables["achieved"])
    else:
        verdict = _note(
            "No achieved point to compare: the run has no final round with accuracy and "
            "both disparities."
        )
    grid = frontier.pivot_table(index="eps_global", columns="eps_local", values="accuracy")
    grid.columns = [f"ε_l={c:.4g}" for c in grid.columns]
    grid = grid.reset_index().rename(columns={"eps_global": "ε_g \\ ε_l"})
    return intro + figure + verdict + "<h3>Best accuracy by budget</h3>" + _table_html(grid)


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
