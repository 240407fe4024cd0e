"""The fairness report's inputs and tables (pure pandas).

Hamman & Dutta, ICLR 2024 (see :mod:`fedsim.fairness.report`).  :class:`ReportInputs`
is what a report is made of; :func:`report_tables` turns it into the tables written as
CSV beside ``report.html`` (:data:`TABLE_FILES`); :func:`achieved_point` finds the trained
model's final-round point.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsim.fairness import metrics as fm
from fedsim.fairness.accounting import (
    CLIENT_ACCURACY_SPREAD,
    CLIENT_ACCURACY_STD,
    WORST_CLIENT_ACCURACY,
)

__all__ = [
    "MIN_CLIENT_ROWS",
    "NO_FAIRNESS",
    "TABLE_FILES",
    "AchievedPoint",
    "ReportInputs",
    "achieved_point",
    "note",
    "report_tables",
    "table_html",
]

#: Table key -> CSV file name written beside ``report.html``.
TABLE_FILES: dict[str, str] = {
    "accuracy": "report_accuracy.csv",
    "disparity": "report_disparity.csv",
    "clients": "report_clients.csv",
    "model_frontier": "report_model_frontier.csv",
    "frontier": "report_frontier.csv",
    "achieved": "report_achieved.csv",
}
_SPREAD = (WORST_CLIENT_ACCURACY, CLIENT_ACCURACY_SPREAD, CLIENT_ACCURACY_STD)
_ACCURACY = ("eval-acc", "eval-loss", "train-loss", *_SPREAD)
_FAIRLEARN = (
    fm.DEMOGRAPHIC_PARITY_DIFFERENCE,
    fm.DEMOGRAPHIC_PARITY_RATIO,
    fm.EQUALIZED_ODDS_DIFFERENCE,
    fm.EQUALIZED_ODDS_RATIO,
)
_DISPARITY = ("global-disparity", "local-disparity", "unique", "redundant", "masked", *_FAIRLEARN)
_N = "num-examples-evaluate"
_CLIENT = (
    "eval-acc",
    "accuracy-ci-low",
    "accuracy-ci-high",
    _N,
    "disparity",
    "disparity-ci-low",
    "disparity-ci-high",
    *_FAIRLEARN,
    f"{fm.DEMOGRAPHIC_PARITY_DIFFERENCE}-ci-low",
    f"{fm.DEMOGRAPHIC_PARITY_DIFFERENCE}-ci-high",
    "eval-loss",
)
_GROUP_PREFIXES = tuple(f"{m}-" for m in fm.PER_GROUP)
#: Clients with fewer test rows than this are flagged, not ranked, in the report.
MIN_CLIENT_ROWS = 30
#: Note shown where a section needs fairness accounting the run did not have.
NO_FAIRNESS = (
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
    config_toml
        The run's ``config.toml`` (shown folded at the end of the page).
    model_frontier
        Model-specific AGLFOP frontier (the same columns, each group's rates restricted
        to the convex hull of the trained model's ROC points), or None.
    model_bound
        The model-specific optimum at the model's disparities: ``accuracy``, ``status``,
        ``eps_global``, ``eps_local`` and ``model`` (the model's accuracy and disparities
        on the rows the ROC points come from).
    model_note
        Why there is no model-specific bound, when there is none.
    entropy_z_bits
        ``H(Z)`` of the test split in bits: the largest possible disparity, drawn on every
        bits axis as the scale reference (NaN when unknown).
    """

    metrics: pd.DataFrame
    summary: Mapping[str, Any]
    frontier: pd.DataFrame | None = None
    bound: Mapping[str, Any] | None = None
    counts_source: Mapping[str, Any] | None = None
    frontier_note: str = ""
    config_toml: str = ""
    model_frontier: pd.DataFrame | None = None
    model_bound: Mapping[str, Any] | None = None
    model_note: str = ""
    entropy_z_bits: float = math.nan


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
        if not set(_SPREAD) & set(wide.columns):
            wide = wide.merge(_client_spread(inputs.metrics), on="round", how="left")
        table = _pick(wide, _ACCURACY, "accuracy-").dropna(subset=["eval-acc"])
        tables["accuracy"] = table.reset_index(drop=True)
    if {"global-disparity", "local-disparity"} <= set(wide.columns):
        table = _pick(wide, _DISPARITY).dropna(subset=["global-disparity"])
        tables["disparity"] = table.reset_index(drop=True)
    clients = _clients(inputs.metrics)
    if clients is not None:
        tables["clients"] = clients
    if inputs.model_frontier is not None:
        tables["model_frontier"] = inputs.model_frontier.reset_index(drop=True)
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
        if inputs.model_bound is not None:
            model_best = float(inputs.model_bound.get("accuracy", math.nan))
            row |= {
                "model_bound_accuracy": model_best,
                "model_gap": model_best - achieved.accuracy,
                "model_bound_status": str(inputs.model_bound.get("status", "not computed")),
            }
        tables["achieved"] = pd.DataFrame([row])
    return tables


def _client_spread(metrics: pd.DataFrame) -> pd.DataFrame:
    """Worst client accuracy, max − min and population std per round, from the clients'
    own ``eval-acc`` rows (runs without fairness accounting record no server value)."""
    frame = metrics[(metrics["client"].astype(str) != "server") & (metrics["metric"] == "eval-acc")]
    grouped = frame.groupby("round")["value"]
    out = pd.DataFrame(
        {
            WORST_CLIENT_ACCURACY: grouped.min(),
            CLIENT_ACCURACY_SPREAD: grouped.max() - grouped.min(),
            CLIENT_ACCURACY_STD: grouped.std(ddof=0),
        }
    )
    return out.reset_index().astype({"round": "int64"})


def client_flag(n: float, disparity: float, fairness: bool) -> str:
    """Why a client is not ranked in the report ("" when it is).

    Fewer than :data:`MIN_CLIENT_ROWS` test rows say too little; with fairness
    accounting, a NaN disparity means the client's test split lacks a sensitive group.
    """
    reasons = []
    if not (isinstance(n, float | int) and np.isfinite(n) and n >= MIN_CLIENT_ROWS):
        reasons.append(f"fewer than {MIN_CLIENT_ROWS} test rows")
    if fairness and not np.isfinite(disparity):
        reasons.append("lacks a sensitive group (n/a)")
    return "; ".join(reasons)


def _clients(metrics: pd.DataFrame) -> pd.DataFrame | None:
    frame = metrics[metrics["client"].astype(str) != "server"]
    frame = frame[frame["metric"].isin(_CLIENT) | frame["metric"].str.startswith(_GROUP_PREFIXES)]
    if frame.empty:
        return None
    wide = frame.pivot_table(
        index=["round", "client"], columns="metric", values="value", aggfunc="last"
    ).reset_index()
    wide.columns = [str(c) for c in wide.columns]
    wide["client"] = wide["client"].astype(str)
    order = [c for c in _CLIENT if c in wide.columns]
    order += [c for p in _GROUP_PREFIXES for c in sorted(wide.columns) if c.startswith(p)]
    order = list(dict.fromkeys(order))
    key = pd.to_numeric(wide["client"], errors="coerce")
    wide = wide.assign(_key=key).sort_values(["round", "_key", "client"]).drop(columns="_key")
    fairness = "disparity" in wide.columns
    n = wide[_N] if _N in wide.columns else pd.Series(np.nan, index=wide.index)
    disparity = wide["disparity"] if fairness else pd.Series(0.0, index=wide.index)
    wide["flag"] = [
        client_flag(float(a), float(b), fairness) for a, b in zip(n, disparity, strict=True)
    ]
    if _N in wide.columns:
        wide[_N] = wide[_N].round().astype("Int64")
    return wide[["round", "client", *order, "flag"]].reset_index(drop=True)


def table_html(frame: pd.DataFrame, digits: int = 4) -> str:
    """``frame`` as an HTML table, floats with ``digits`` decimals."""

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


def note(text: str) -> str:
    """A grey explanatory paragraph (``text`` is HTML)."""
    return f'<p class="note">{text}</p>'
