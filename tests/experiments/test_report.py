"""Figures and report of a run, from a real results.json of the demo data (tests/experiments/data)."""
from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path

import pytest

from speechprobe.experiments.figures import make_figures
from speechprobe.experiments.report import summary_table, write_report

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


def test_speaker_selectivity_is_na_with_the_reason_once(sample, tmp_path) -> None:
    """The sample predates the note and holds speaker selectivity numbers: the report shows n/a for them, states
    the reason once, and still reports the other tasks' selectivity; so does the terminal summary."""
    from speechprobe.tasks.tasks import SPEAKER_CONTROL_NOTE

    results = copy.deepcopy(sample)
    speaker = next(u for u in results["sweep"]["results"] if (u["role"], u["task"]) == ("model", "speaker"))
    assert all(s["selectivity"] is not None for s in speaker["layers"])
    md = report_of(results, tmp_path)
    table = md[md.index("### ge2e: per-layer results"):]
    table = table[:table.index("\n### ", 1)]
    rows = [line for line in table.splitlines() if line.startswith("| speaker |")]
    assert len(rows) == len(speaker["layers"])
    assert all(line.split("|")[5:7] == [" n/a ", " n/a "] for line in rows)  # control, selectivity
    assert md.count(SPEAKER_CONTROL_NOTE) == 1 and f"**Selectivity n/a for speaker**: {SPEAKER_CONTROL_NOTE}." in md
    finding = next(line for line in md.splitlines() if line.startswith("- **ge2e / speaker**"))
    assert "Selectivity: n/a" in finding and "Selectivity at" not in finding and "not selective" not in finding
    gender = next(line for line in md.splitlines() if line.startswith("- **ge2e / gender**"))
    assert "Selectivity at lstm2: 0.30" in gender
    summary = {tuple(line.split()[:2]): line for line in summary_table(results).splitlines()}
    assert summary[("ge2e", "speaker")].endswith("n/a") and summary[("ge2e", "gender")].endswith("0.295")


def test_selectivity_figure_leaves_out_the_speaker_line(sample, tmp_path, monkeypatch) -> None:
    import matplotlib.pyplot as plt

    import speechprobe.experiments.studies.sweep.figures as figures_module

    drawn = []
    monkeypatch.setattr(figures_module, "save_figure", lambda fig, path: drawn.append(fig) or path)
    figures_module.draw_selectivity(sample["sweep"], tmp_path / "selectivity.png")
    (fig,) = drawn
    try:
        labels = {line.get_label() for line in fig.axes[0].get_lines()}
        assert {"gender", "dialect", "channel"} <= labels and "speaker" not in labels  # one line per task but speaker
        note = fig.get_supxlabel()
        assert note.startswith("speaker: selectivity n/a") and "recognising" in note
    finally:
        plt.close(fig)


def test_every_ablation_sentence_names_the_mode(sample, tmp_path) -> None:
    """The sample's curves predate the mode key (they were raw zeros); the audit recorded mean ablation."""
    results = copy.deepcopy(sample)
    assert results["audit"]["ablation"]["mode"] == "mean"
    results["ablation"]["ablation"].pop("mode", None)
    md = report_of(results, tmp_path)
    section = md[md.index("## Neuron ablation"):]
    assert "removing them without retraining, by raw-zero ablation (out of distribution), gives top" in section
    assert "### Ablation curves: test accuracy; removal by raw-zero ablation (out of distribution)" in section
    assert "Removing the top neurons by raw-zero ablation (out of distribution)" in section
    assert "**Removing the gender neurons** by mean ablation (in distribution), at lstm2" in md
    assert "curves by raw-zero ablation (out of distribution)" in summary_table(results)
    results["ablation"]["ablation"]["mode"] = "mean"
    md = report_of(results, tmp_path)
    section = md[md.index("## Neuron ablation"):]
    assert "by mean ablation (in distribution), gives top" in section and "raw-zero" not in md


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


def _check(top: list[float], random: list[float], beats: bool, summary: str) -> dict:
    ks = [1, 3, 10, 30]
    return {"ks": ks, "top_test": top, "random_test_mean": random, "random_test_std": [0.01] * 4,
            "bottom_test": [0.5] * 4, "verdicts": ["better" if t > r + 0.02 else "worse" if t < r - 0.02 else "same"
                                                    for t, r in zip(top, random)],
            "beats_random": beats, "summary": summary}


def test_a_ranking_that_does_not_beat_random_is_said_never_silently(sample, tmp_path) -> None:
    results = copy.deepcopy(sample)
    failing = "the ranking does not beat random neurons at k <= 10: the top 1 neuron kept alone reaches 0.45"
    results["ablation"]["method"] = "weight"
    results["ablation"]["check"] = _check([0.45, 0.56, 0.67, 0.81], [0.54, 0.74, 0.84, 0.87], False, failing)
    results["ablation"]["minimal_subset"].update(random_k=[240, 260, 250], random_k_median=250.0, is_minimal=False,
                                                 summary="257 neurons keep 97% of the accuracy; random neurons need "
                                                         "250: not a finding, random neurons do about as well")
    md = report_of(results, tmp_path, figures=True)
    assert f"**Ranking check** (weight ranking, top k kept alone and retrained vs k random neurons): {failing}." in md
    assert "random neurons need 250: not a finding" in md
    assert "| gender | 1 | 0.450 | 0.540 ± 0.010 | 0.500 | worse |" in md
    assert (tmp_path / "figures" / "ranking_check.png").is_file()
    summary = summary_table(results)
    assert "random neurons 250: not a finding" in summary
    assert "the weight ranking does not beat random neurons at small k" in summary
    # and a passing check is not called failing
    results["ablation"]["check"] = _check([0.85, 0.92, 0.93, 0.93], [0.58, 0.79, 0.89, 0.91], True, "fine")
    assert "does not beat random" not in summary_table(results)


def test_audit_names_the_tasks_whose_ranking_fails(sample, tmp_path) -> None:
    results = copy.deepcopy(sample)
    audit = results["audit"]
    audit["method"] = "path"
    tasks = [audit["attribute"], *audit["tasks"]]
    audit["checks"] = {t: _check([0.9, 0.9, 0.9, 0.9], [0.6, 0.7, 0.8, 0.85], True, f"{t} beats random")
                       for t in tasks}
    audit["checks"]["channel"] = _check([0.2, 0.3, 0.4, 0.5], [0.2, 0.3, 0.4, 0.5], False, "channel does not beat random")
    md = report_of(results, tmp_path, figures=True)
    assert "the ranking does not beat random neurons at small k for channel, so its subsets and overlaps" in md
    # the failing task's sentence comes first
    assert md.index("**channel**: channel does not beat random") < md.index(f"**{audit['attribute']}**: ")
    assert (tmp_path / "figures" / "audit_checks.png").is_file()
    assert "audit: the path ranking does not beat random neurons at small k for channel" in summary_table(results)
