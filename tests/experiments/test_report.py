"""Figures and report of a run, from a real results.json of the demo data (tests/experiments/data)."""
from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path

import pytest

from experiments.figures import make_figures
from experiments.report import summary_table, write_report

DATA = Path(__file__).parent / "data" / "sample-results.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = {"sweep_speaker", "sweep_gender", "sweep_dialect", "sweep_channel", "selectivity", "salient_layers",
            "audit_groups", "overlap", "audit_ablation", "ablation_curves", "minimal_subset", "ablation_layers"}


@pytest.fixture(scope="module")
def sample() -> dict:
    return json.loads(DATA.read_text())


@pytest.fixture(scope="module")
def run(sample: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], str, str]:
    """The whole sample report, drawn once for the module."""
    out = tmp_path_factory.mktemp("run")
    figures = make_figures(sample, out / "figures")
    md, page = write_report(sample, figures, out)
    return out, figures, md.read_text(), page.read_text()


def report_of(results: dict, out: Path, figures: bool = False) -> str:
    """The Markdown report of modified results (figures skipped unless asked: the wording is under test)."""
    drawn = make_figures(results, out / "figures") if figures else {}
    md, _ = write_report(results, drawn, out)
    return md.read_text()


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_every_figure_is_a_sensible_png(run) -> None:
    out, figures, _, _ = run
    assert set(figures) == EXPECTED
    for name, path in figures.items():
        assert path == out / "figures" / f"{name}.png" and path.is_file()
        width, height = png_size(path)
        assert 300 <= width <= 2500 and 200 <= height <= 2000, (name, width, height)
        assert 5_000 < path.stat().st_size < 400_000, name
    assert not [p for p in (out / "figures").iterdir() if p.name.startswith(".")], "temporary files left"


def test_markdown_links_every_figure_relatively(run) -> None:
    _, figures, md, _ = run
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(f"figures/{name}.png" for name in figures)


def test_html_is_self_contained(run) -> None:
    out, figures, _, page = run
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) == len(figures)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "<table>" in page and "<style>" in page
    assert (out / "report.html").stat().st_size < 2_000_000


def test_report_states_the_findings_with_their_numbers(run, sample) -> None:
    _, _, md, page = run
    assert md.startswith("# Report: sample")
    assert "640 utterances, 64 speakers" in md
    assert "How to read this" in md and "95% bootstrap intervals resampling whole speakers" in md
    for unit in sample["sweep"]["results"]:
        if unit["role"] == "model":
            best = next(s for s in unit["layers"] if s["layer"] == unit["best_layer"])
            acc = best["accuracy"]
            expected = f"peaks at **{unit['best_layer']}**"
            assert f"**{unit['encoder']} / {unit['task']}** {expected}" in md
            assert f"{acc['value']:.2f} [{acc['low']:.2f}, {acc['high']:.2f}]" in md
    assert "ge2e beats its random-weights twin (random:ge2e) for gender at every layer" in md
    assert "**disadvantages the female** group" in md
    assert "the top 62 of 256 (24.2%)" in md
    assert "the top 257 neurons (25.1%)" in md
    assert "speaker and dialect overlap above chance" in md
    assert "speaker: not above chance (J = 0.08 vs chance 0.10" in md
    # the HTML carries the same findings
    assert "disadvantages the female</strong> group" in page
    assert "ge2e beats its random-weights twin" in page


def test_unflagged_gap_is_within_chance(sample, tmp_path) -> None:
    results = copy.deepcopy(sample)
    gap = results["audit"]["groups"]["speaker"]
    gap["flagged"], gap["gap"]["low"] = False, -0.01
    md = report_of(results, tmp_path)
    assert "disadvantages" not in md
    assert "**speaker** (probe at lstm2): accuracy female" in md
    assert "the gap between gender groups, 0.19 [-0.01, 0.36], is within chance variation" in md
    assert "0 of 3 tasks show a gap" in md
    assert "flagged gaps: none" in summary_table(results)


def test_flagged_gap_names_the_worse_group(sample, tmp_path) -> None:
    results = copy.deepcopy(sample)
    gap = results["audit"]["groups"]["channel"]
    gap.update(flagged=True, best_group="female", worst_group="male")
    md = report_of(results, tmp_path)
    assert "**channel** (probe at lstm2) **disadvantages the male** group" in md


def test_worse_than_random_is_said(sample, tmp_path) -> None:
    results = copy.deepcopy(sample)
    units = {(u["encoder"], u["task"]): u for u in results["sweep"]["results"]}
    model, twin = units[("ge2e", "gender")], units[("random:ge2e", "gender")]
    for a, b in zip(model["layers"], twin["layers"]):
        a["accuracy"], b["accuracy"] = b["accuracy"], a["accuracy"]
    md = report_of(results, tmp_path)
    assert "ge2e is **worse than** its random-weights twin (random:ge2e) for gender at every layer" in md
    assert "beats its random-weights twin (random:ge2e) for gender" not in md
    # mixed: better at one layer only
    model["layers"][0]["accuracy"]["value"] = 0.99
    md = report_of(results, tmp_path)
    assert "for gender at 1 of 4 layers (lstm1) and not at the others" in md


def test_overlap_above_chance_follows_the_p_value(sample, tmp_path) -> None:
    results = copy.deepcopy(sample)
    results["audit"]["overlap"][0][2]["p_value"] = 0.001
    results["audit"]["overlap"][1][2]["p_value"] = 0.5
    md = report_of(results, tmp_path)
    assert "dialect: above chance (J = 0.23 vs chance 0.23, p = 0.001)" in md
    assert "speaker and dialect overlap above chance" not in md


def test_attribute_removal_like_random_is_said(sample, tmp_path) -> None:
    results = copy.deepcopy(sample)
    entry = results["audit"]["ablation"]["tasks"]["gender"]
    entry["removed_attribute_neurons"] = entry["removed_random_mean"]
    md = report_of(results, tmp_path)
    line = next(line for line in md.splitlines() if line.strip().startswith("- **gender**:"))
    assert "no different from random removal" in line


@pytest.mark.parametrize("missing", ["sweep", "audit", "ablation"])
def test_absent_sections_have_no_heading(sample, tmp_path, missing) -> None:
    results = {k: v for k, v in copy.deepcopy(sample).items() if k != missing}
    md = report_of(results, tmp_path, figures=True)
    headings = {"sweep": "## Layer sweep", "audit": "## Bias audit", "ablation": "## Neuron ablation"}
    for section, heading in headings.items():
        assert (heading in md) == (section != missing), section
    assert (tmp_path / "report.html").is_file()
    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert (tmp_path / link).is_file()
    summary_table(results)


def test_nothing_but_a_name(tmp_path) -> None:
    results = {"name": "empty", "config": {}}
    assert make_figures(results, tmp_path / "figures") == {}
    md = report_of(results, tmp_path)
    assert md.startswith("# Report: empty") and "## " not in md
    assert summary_table(results) == "(no results)"


def test_summary_table_has_every_unit(sample) -> None:
    text = summary_table(sample)
    rows = {tuple(line.split()[:3]): line for line in text.splitlines()}
    for unit in sample["sweep"]["results"]:
        if unit["role"] != "model":
            continue
        best = next(s for s in unit["layers"] if s["layer"] == unit["best_layer"])
        line = rows[(unit["encoder"], unit["task"], unit["best_layer"])]
        assert f"{best['accuracy']['value']:.3f} [{best['accuracy']['low']:.3f}, {best['accuracy']['high']:.3f}]" in line
    assert "audit: gender in ge2e at lstm2: minimal subset k=62" in text
    assert "flagged gaps: speaker (worse for female" in text
    assert "ablation: gender in ge2e (layer all): minimal subset k=257 of 1024 (25.1%)" in text


def test_rewrite_replaces_files_atomically(run, sample) -> None:
    out, figures, md, _ = run
    again, _ = write_report(sample, figures, out)
    assert again.read_text() == md
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
