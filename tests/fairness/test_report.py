"""The fairness report: self-contained HTML, tables that match the run, the achieved point,
a headless-browser rendering, and one-line errors."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim import bounds, report_run
from fedsim.cli import main
from fedsim.fairness import plots
from fedsim.fairness.report import (
    SECTIONS,
    TABLE_FILES,
    ReportInputs,
    achieved_point,
    build_report,
)
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.toml"
FAIR = {**SMALL, "rounds": 3, "fairness.enabled": True, "fairness.bounds": True}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_APT = "apt-get install -y chromium"


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def fair_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fairness run with its stored frontier, reported through the CLI."""
    out = tmp_path_factory.mktemp("report") / "run"
    fedsim.run(DEFAULT, {**FAIR, "fairness.bounds_grid": 4}, out=out)
    with pytest.raises(SystemExit) as exc:
        main(["report", str(out), "-q"])
    assert exc.value.code == 0
    return out


@pytest.fixture(scope="module")
def plain_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run without fairness accounting, reported."""
    out = tmp_path_factory.mktemp("plain") / "run"
    fedsim.run(DEFAULT, SMALL, out=out)
    report_run.write_report(out)
    return out


def _server(run_dir: Path, metric: str) -> pd.Series:
    m = pd.read_parquet(run_dir / "metrics.parquet")
    rows = m[(m.client == "server") & (m.metric == metric)].sort_values("round")
    return rows.set_index("round").value


# --------------------------------------------------------------- self-contained HTML


def _assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    for match in re.finditer(r"""\bsrc\s*=\s*["']?([^"'\s>]*)""", page, re.IGNORECASE):
        assert match.group(1).startswith("data:"), match.group(0)
    assert not re.search(r"<(script|link|iframe|img|object|embed)\b", page, re.IGNORECASE)
    assert "@import" not in page
    for ref in re.findall(r"url\(([^)]*)\)", page):  # only in-page SVG references
        assert ref.startswith("#"), ref
    for ref in re.findall(r"""href\s*=\s*["']([^"']*)""", page):
        assert ref.startswith("#"), ref
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate element ids across figures"


def test_report_has_every_section_and_inline_svg(fair_report: Path) -> None:
    page = (fair_report / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    for title in SECTIONS.values():
        assert f"<h2>{title}</h2>" in page, title
    assert page.count("<svg ") >= 4  # accuracy, disparity, clients, frontier
    assert "<path" in page  # figures are drawn, text as paths (no font files needed)
    _assert_self_contained(page)


def test_plain_run_report_explains_the_missing_sections(plain_report: Path) -> None:
    page = (plain_report / "report.html").read_text()
    for title in SECTIONS.values():
        assert f"<h2>{title}</h2>" in page, title
    assert page.count("<svg ") == 1  # accuracy only
    assert "no fairness accounting" in page
    assert "fairness.enabled=true" in page
    _assert_self_contained(page)
    assert (plain_report / TABLE_FILES["accuracy"]).is_file()
    assert (plain_report / TABLE_FILES["clients"]).is_file()
    for key in ("disparity", "frontier", "achieved"):
        assert not (plain_report / TABLE_FILES[key]).exists(), key
    assert not (plain_report / bounds.FRONTIER_CSV).exists()


# ---------------------------------------------------------------- tables vs metrics


def test_accuracy_and_disparity_tables_match_the_metrics(fair_report: Path) -> None:
    acc = pd.read_csv(fair_report / TABLE_FILES["accuracy"])
    assert acc["round"].tolist() == list(range(1, FAIR["rounds"] + 1))
    np.testing.assert_array_equal(acc["eval-acc"], _server(fair_report, "eval-acc").to_numpy())
    np.testing.assert_array_equal(acc["accuracy-1"], _server(fair_report, "accuracy-1"))
    dis = pd.read_csv(fair_report / TABLE_FILES["disparity"])
    for metric in ("global-disparity", "local-disparity", "unique", "redundant", "masked"):
        np.testing.assert_array_equal(dis[metric], _server(fair_report, metric).to_numpy())
    # PID identities survive the round trip through the CSV.
    np.testing.assert_allclose(dis.unique + dis.redundant, dis["global-disparity"], atol=1e-9)
    np.testing.assert_allclose(dis.unique + dis.masked, dis["local-disparity"], atol=1e-9)


def test_client_table_matches_the_per_client_rows(fair_report: Path) -> None:
    clients = pd.read_csv(fair_report / TABLE_FILES["clients"], dtype={"client": str})
    m = pd.read_parquet(fair_report / "metrics.parquet")
    rows = m[(m.client != "server") & (m.metric == "disparity")]
    merged = clients.merge(rows, on=["round", "client"])
    assert len(merged) == len(rows) == FAIR["rounds"] * SMALL["partition.num_clients"]
    np.testing.assert_array_equal(merged["disparity"], merged["value"])
    page = (fair_report / "report.html").read_text()
    final = clients[clients["round"] == FAIR["rounds"]]
    for value in final["disparity"]:
        assert f"<td>{value:.4f}</td>" in page


def test_achieved_point_equals_the_final_round(fair_report: Path) -> None:
    achieved = pd.read_csv(fair_report / TABLE_FILES["achieved"]).iloc[0]
    last = FAIR["rounds"]
    assert achieved["round"] == last
    assert achieved["accuracy"] == _server(fair_report, "eval-acc")[last]
    assert achieved["global_disparity"] == _server(fair_report, "global-disparity")[last]
    assert achieved["local_disparity"] == _server(fair_report, "local-disparity")[last]
    # The model is a feasible classifier at its own budgets: the bound is at least its accuracy.
    assert achieved["accuracy"] - 1e-6 <= achieved["bound_accuracy"] <= 1.0 + 1e-6
    assert achieved["gap"] == pytest.approx(achieved["bound_accuracy"] - achieved["accuracy"])
    page = (fair_report / "report.html").read_text()
    assert f"reaches accuracy {achieved['accuracy']:.4f}" in page
    assert f"is {achieved['bound_accuracy']:.4f}, so the strategy is {achieved['gap']:.4f}" in page


def test_report_frontier_is_the_stored_one(fair_report: Path) -> None:
    stored = pd.read_csv(fair_report / bounds.FRONTIER_CSV)
    shown = pd.read_csv(fair_report / TABLE_FILES["frontier"])
    pd.testing.assert_frame_equal(stored, shown)


def test_report_computes_a_missing_frontier_from_the_checkpoint(
    fair_report: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(fair_report, copy)
    stored = pd.read_csv(copy / bounds.FRONTIER_CSV)
    for name in (bounds.FRONTIER_CSV, bounds.FRONTIER_JSON, *TABLE_FILES.values()):
        (copy / name).unlink(missing_ok=True)  # report_model_frontier.csv: not written here
    # Doubling the checkpoint's counts leaves every distribution (so the frontier) as it
    # was, but shows in the stored record: proof that the counts came from the checkpoint.
    last = f"fairness/counts/{FAIR['rounds']}"
    doubled = _edit_checkpoint_tensor(copy, last, lambda counts: 2 * counts)
    calls: list[tuple[int, int]] = []
    files = report_run.write_report(copy, progress=lambda done, total: calls.append((done, total)))
    assert files.frontier_computed and calls[-1] == (16, 16)
    record = json.loads((copy / bounds.FRONTIER_JSON).read_text())
    assert record["counts_source"]["from"] == "checkpoint"
    assert record["counts_source"]["round"] == FAIR["rounds"]
    assert record["counts"] == doubled.sum(axis=3).tolist()
    again = pd.read_csv(copy / bounds.FRONTIER_CSV)  # stored for the next report
    np.testing.assert_allclose(again.accuracy, stored.accuracy, atol=1e-6)
    achieved = pd.read_csv(copy / TABLE_FILES["achieved"]).iloc[0]
    assert achieved["bound_accuracy"] >= achieved["accuracy"] - 1e-6
    assert not report_run.write_report(copy).frontier_computed  # now it is reused
    assert report_run.write_report(copy, grid=3).frontier_computed  # another grid: recomputed
    assert len(pd.read_csv(copy / TABLE_FILES["frontier"])) == 9


def _edit_checkpoint_tensor(
    run_dir: Path, key: str, edit: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Rewrite one tensor of the run's checkpoint (header kept as it is); the new value."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = run_dir / "checkpoint.safetensors"
    with safe_open(str(path), "np") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - not a dict
    tensors[key] = edit(tensors[key])
    save_file(tensors, str(path), metadata=metadata)
    return tensors[key]


# ------------------------------------------------- model-specific bound (two frontiers)


@pytest.fixture(scope="module")
def model_page(fair_report: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The fair run's report with the model-specific bound, as write_report will wire it."""
    import json

    from fedsim import model_bound, results

    record = json.loads((fair_report / bounds.FRONTIER_JSON).read_text())
    inputs = ReportInputs(
        results.read_metrics(fair_report),
        results.read_summary(fair_report),
        pd.read_csv(fair_report / bounds.FRONTIER_CSV),
        record["bound_at_achieved"],
        record["counts_source"],
        config_toml=(fair_report / results.CONFIG).read_text(),
    )
    report = build_report(model_bound.with_model_bound(inputs, fair_report))
    page = tmp_path_factory.mktemp("model") / "report.html"
    page.write_text(report.html)
    return page, report


def test_report_shows_the_model_specific_frontier_first(model_page: tuple[Path, Any]) -> None:
    path, report = model_page
    page = path.read_text()
    assert page.index('<section id="model">') < page.index('<section id="frontier">')
    model_part = page[page.index('<section id="model">') : page.index('<section id="frontier">')]
    assert 'aria-label="model-frontier"' in model_part and "<path" in model_part
    assert 'aria-label="frontier"' in page[page.index('<section id="frontier">') :]
    assert page.count("<svg ") >= 5  # accuracy, disparity, clients and both frontiers
    _assert_self_contained(page)
    achieved = report.tables["achieved"].iloc[0]
    assert f"at most {achieved['model_bound_accuracy']:.4f} under these same budgets" in page
    table = report.tables["model_frontier"]
    assert list(table.columns) == list(report.tables["frontier"].columns)
    assert table[["eps_global", "eps_local"]].equals(
        report.tables["frontier"][["eps_global", "eps_local"]]
    )


def test_model_specific_bound_is_between_the_model_and_the_agnostic_bound(
    model_page: tuple[Path, Any],
) -> None:
    _, report = model_page
    row = report.tables["achieved"].iloc[0]
    # Rescoring the saved model on the rebuilt test split reproduces the run's metrics.
    assert row["accuracy"] == pytest.approx(report.achieved.accuracy, abs=1e-6)
    assert row["accuracy"] - 1e-6 <= row["model_bound_accuracy"] <= row["bound_accuracy"] + 1e-6
    assert row["model_gap"] == pytest.approx(row["model_bound_accuracy"] - row["accuracy"])
    specific, agnostic = report.tables["model_frontier"], report.tables["frontier"]
    assert np.all(specific.accuracy.fillna(0.0) <= agnostic.accuracy + 1e-6)  # pointwise


def test_every_bits_axis_carries_h_z(model_page: tuple[Path, Any], fair_report: Path) -> None:
    import json

    path, _ = model_page
    h_z = json.loads((fair_report / bounds.FRONTIER_JSON).read_text())["information_bits"]["H(Z)"]
    page = path.read_text()
    assert f"H(Z) = {h_z:.4f} bits" in page  # the notes of both frontier sections
    for prefix in ("disparity", "clients", "model-frontier", "frontier"):  # each bits figure
        start = page.index(f'aria-label="{prefix}"')
        svg = page[start : page.index("</svg>", start)]
        # matplotlib keeps each text drawn as paths in a comment beside it.
        assert f"H(Z) = {h_z:.3f}" in svg, prefix
    accuracy_start = page.index('aria-label="accuracy"')
    assert "H(Z)" not in page[accuracy_start : page.index("</svg>", accuracy_start)]


def test_model_specific_report_renders_in_a_headless_browser(
    model_page: tuple[Path, Any], tmp_path: Path
) -> None:
    path, _ = model_page
    image = _screenshot(path, tmp_path)
    assert 0.005 < (image.mean(axis=2) < 0.5).mean() < 0.5
    bottom = image[2400:]  # the two frontier figures sit in the lower part of the page
    assert bottom.std() > 0.01


# ----------------------------------------------------------------- pure functions


def _long(rows: list[tuple[int, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["round", "client", "metric", "value"])


def test_achieved_point_takes_the_last_round_with_all_three() -> None:
    frame = _long(
        [
            (1, "server", "eval-acc", 0.6),
            (1, "server", "global-disparity", 0.2),
            (1, "server", "local-disparity", 0.1),
            (2, "server", "eval-acc", 0.7),
            (2, "server", "global-disparity", 0.3),
            (2, "server", "local-disparity", 0.15),
            (3, "server", "eval-acc", 0.8),  # no disparities: not an achieved point
        ]
    )
    point = achieved_point(frame)
    assert point is not None and (point.round, point.accuracy) == (2, 0.7)
    assert (point.global_disparity, point.local_disparity) == (0.3, 0.15)
    assert achieved_point(frame[frame.metric == "eval-acc"]) is None
    assert achieved_point(_long([])) is None


def test_build_report_on_a_tiny_frame_without_a_frontier() -> None:
    frame = _long(
        [(r, "server", "eval-acc", 0.5 + r / 10) for r in (1, 2)]
        + [(r, "server", "global-disparity", 0.1) for r in (1, 2)]
        + [(r, "server", "local-disparity", 0.05) for r in (1, 2)]
        + [(2, "0", "disparity", 0.2), (2, "1", "disparity", 0.0)]
    )
    report = build_report(ReportInputs(frame, {"scenario": "tiny"}, frontier_note="none here"))
    assert set(report.tables) == {"accuracy", "disparity", "clients", "achieved"}
    assert math.isnan(report.tables["achieved"].bound_accuracy.iloc[0])
    assert "none here" in report.html
    _assert_self_contained(report.html)


def test_inline_svg_has_no_namespace_urls_and_prefixed_ids() -> None:
    table = pd.DataFrame({"round": [1, 2, 3], "eval-acc": [0.5, 0.6, 0.7]})
    svg = plots.accuracy_svg(table)
    assert svg.startswith("<svg ") and svg.endswith("</svg>")
    assert "http" not in svg and "<metadata" not in svg and "<?xml" not in svg
    ids = re.findall(r'\bid="([^"]+)"', svg)
    assert ids and all(i.startswith("accuracy-") for i in ids)
    for ref in re.findall(r'href="#([^"]+)"', svg) + re.findall(r"url\(#([^)]+)\)", svg):
        assert ref in ids


# ------------------------------------------------------------------------- errors


def test_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_main(["report", str(tmp_path / "missing")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("fedsim: error: report: run folder") and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run_main(["report", str(empty)], capsys)
    assert code == 2 and err.count("\n") == 1 and "not a complete run folder" in err
    assert not (empty / "report.html").exists()


# ----------------------------------------------------------------- headless browser


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        f"no headless browser found (looked for {', '.join(CHROMIUM_NAMES)}); the report "
        f"rendering test needs one: install it with `{CHROMIUM_APT}` (Debian/Ubuntu)"
    )


def _screenshot(page: Path, tmp_path: Path, height: int = 3000) -> Any:
    """A headless-browser screenshot of ``page`` as an RGB float image."""
    import matplotlib.image

    browser = _chromium()
    png = tmp_path / "report.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        f"--window-size=1200,{height}",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert png.is_file(), f"{browser} wrote no screenshot (rc {proc.returncode}): {proc.stderr}"
    assert png.stat().st_size > 20_000  # a blank 1200x3000 page compresses to a few kB
    image = matplotlib.image.imread(png)[..., :3]
    assert image.shape[:2] == (height, 1200)
    return image


def test_report_renders_in_a_headless_browser(fair_report: Path, tmp_path: Path) -> None:
    image = _screenshot(fair_report / "report.html", tmp_path)
    dark = (image.mean(axis=2) < 0.5).mean()  # text, axes, bars
    assert 0.005 < dark < 0.5, dark
    colours = np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # plots in colour, not a uniform or two-tone page
    top, middle = image[:600].std(), image[600:2400].std()
    assert top > 0.01 and middle > 0.01  # content at the top and further down


# ------------------------------------------------------------ paper-ready figures

SVG_NS = "{http://www.w3.org/2000/svg}"


def test_figures_option_writes_standalone_svg_and_pdf_that_render(
    fair_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import xml.etree.ElementTree as ET

    folder = tmp_path / "figures"
    code, _, err = _run_main(["report", str(fair_report), "-q", "--figures", str(folder)], capsys)
    assert code == 0, err
    names = {"accuracy", "disparity", "clients", "model-frontier", "frontier"}
    assert {p.name for p in folder.iterdir()} == {f"{n}.{e}" for n in names for e in ("svg", "pdf")}
    for name in names:
        root = ET.parse(folder / f"{name}.svg").getroot()
        assert root.tag == f"{SVG_NS}svg", name  # the namespace a standalone file needs
        texts = [t for t in root.iter(f"{SVG_NS}text") if "".join(t.itertext()).strip()]
        assert texts, f"{name}: text is not kept as text"
        assert (folder / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    clients_text = ET.tostring(ET.parse(folder / "clients.svg").getroot(), encoding="unicode")
    assert "n=" in clients_text  # test-set sizes on the bars
    image = _screenshot(folder / "clients.svg", tmp_path, height=900)
    assert 0.005 < (image.mean(axis=2) < 0.5).mean() < 0.5
    colours = np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20  # bars in colour, not an unrendered (blank or text) page


def test_pid_bars_stack_to_the_global_and_local_disparity() -> None:
    table = pd.DataFrame(
        {
            "round": [1, 2],
            "global-disparity": [0.3, 0.5],
            "local-disparity": [0.25, 0.45],
            "unique": [0.2, 0.1],
            "redundant": [0.1, 0.4],
            "masked": [0.05, 0.35],
        }
    )
    fig = plots.disparity_figure(table)
    bars = fig.axes[1].patches
    tops: dict[float, float] = {}
    for bar in bars:  # stacked: the top of each x position is what the bar decomposes
        x = round(bar.get_x() + bar.get_width() / 2, 6)
        tops[x] = max(tops.get(x, 0.0), bar.get_y() + bar.get_height())
    xs = sorted(tops)
    assert len(xs) == 4  # two bars per round
    np.testing.assert_allclose([tops[x] for x in xs[0::2]], table["global-disparity"])
    np.testing.assert_allclose([tops[x] for x in xs[1::2]], table["local-disparity"])
    assert not fig.axes[0].get_legend() and fig.legends  # one legend, outside the axes


def test_small_and_one_group_clients_are_flagged_not_ranked() -> None:
    rows: list[tuple[int, str, str, float]] = [(1, "server", "eval-acc", 0.7)]
    for client, n, disparity in (("0", 200, 0.05), ("1", 12, 0.9), ("2", 150, math.nan)):
        rows += [
            (1, client, "eval-acc", 0.7),
            (1, client, "num-examples-evaluate", n),
            (1, client, "disparity", disparity),
        ]
    report = build_report(ReportInputs(_long(rows), {"scenario": "t"}))
    clients = report.tables["clients"].set_index("client")
    assert clients.loc["0", "flag"] == ""
    assert "fewer than 30" in clients.loc["1", "flag"]
    assert "lacks a sensitive group" in clients.loc["2", "flag"]
    section = report.html.split('id="clients"')[1].split("</section>")[0]
    ranked, flagged = section.split("Flagged clients (2)")
    assert "Ranked clients (1)" in ranked and "0.9000" not in ranked  # the tiny client
    assert "0.9000" in flagged
    texts = [t.get_text() for t in report.figures["clients"].axes[0].texts]
    assert "n/a" in texts and "n=12" in texts and "n=200" in texts


def test_client_accuracy_spread_is_in_the_accuracy_table_without_accounting() -> None:
    rows = [(1, "server", "eval-acc", 0.7)]
    rows += [(1, c, "eval-acc", a) for c, a in (("0", 0.5), ("1", 0.9), ("2", 0.7))]
    table = build_report(ReportInputs(_long(rows), {})).tables["accuracy"]
    assert table["worst-client-accuracy"].iloc[0] == pytest.approx(0.5)
    assert table["client-accuracy-spread"].iloc[0] == pytest.approx(0.4)
    assert table["client-accuracy-std"].iloc[0] == pytest.approx(np.std([0.5, 0.9, 0.7]))


def test_report_of_a_sweep_csv_draws_mean_and_std_over_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import xml.etree.ElementTree as ET

    runs = pd.DataFrame(
        {
            "strategy.name": ["fedavg"] * 3 + ["fedprox"] * 3,
            "seed": [0, 1, 2] * 2,
            "eval-acc": [0.70, 0.72, 0.74, 0.60, 0.61, 0.65],
            "global-disparity": [0.1, 0.2, 0.3, 0.05, 0.05, 0.05],
            "local-disparity": [0.1, 0.1, 0.1, 0.02, 0.03, 0.04],
        }
    )
    runs.to_csv(tmp_path / "runs.csv", index=False)
    code, out, err = _run_main(["report", str(tmp_path)], capsys)
    assert code == 0, err
    assert ET.parse(tmp_path / "sweep.svg").getroot().tag == f"{SVG_NS}svg"
    assert (tmp_path / "sweep.pdf").read_bytes().startswith(b"%PDF")
    from fedsim.fairness.figures import sweep_figure

    fig = sweep_figure(runs, ["strategy.name"])
    assert [ax.get_ylabel().split(" ")[0] for ax in fig.axes] == ["accuracy", "global", "local"]
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [0.72, np.mean([0.60, 0.61, 0.65])])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    code, _, err = _run_main(["report", str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("fedsim: error:")
