"""Adding a study is one folder and one registry line: the runner, the figures, the report, the summary and the
dashboard all pick a registered study up with no other change."""
from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from speechprobe.experiments import registry
from speechprobe.experiments.execute import compute_studies, log_to_dashboard
from speechprobe.experiments.figures import make_figures
from speechprobe.experiments.plotting import panels, save_figure
from speechprobe.experiments.report import report_markdown, summary_table
from speechprobe.experiments.study import ReportContext, Study
from speechprobe.experiments.writing import figure_md

STUDIES_DIR = Path(__file__).resolve().parents[2] / "experiments" / "studies"


def test_every_study_folder_is_registered_once() -> None:
    folders = sorted(p.name for p in STUDIES_DIR.iterdir() if (p / "study.py").is_file())
    assert folders == sorted(["sweep", "similarity", "gradnap", "attribution", "audit", "ablation", "intervention",
                              "compare", "topomap"])
    registered = sorted(s.compute.__module__.split(".")[3] for s in registry.STUDIES)
    assert registered == folders
    keys = [(s.within, s.key) for s in registry.STUDIES]
    assert len(set(keys)) == len(keys)
    inner = [s for s in registry.STUDIES if s.within]
    assert all(registry.STUDIES.index(s) > [t.key for t in registry.STUDIES].index(s.within) for s in inner)


def _draw_toy(result: dict, path: Path) -> Path:
    fig, (ax,) = panels(1)
    ax.bar(range(len(result["values"])), result["values"])
    return save_figure(fig, path)


def _toy_report(result: dict, context: ReportContext) -> str:
    figure = figure_md("toy_bars", context.figures, context.out, "the toy's bars")
    return f"## Toy study\n\nThe toy counted {sum(result['values'])} (target {context.target}).\n\n{figure}"


class _Board:
    def __init__(self) -> None:
        self.tables: dict[str, list] = {}
        self.figures: list[str] = []

    def log_table(self, name: str, rows: list) -> None:
        self.tables[name] = rows

    def log_figure(self, name: str, path: Path) -> None:
        self.figures.append(name)


TOY = Study(
    key="toy",
    section=lambda config: getattr(config, "toy", None),
    compute=lambda run, section, results: {"values": [section, 2 * section], "seen": sorted(results)},
    figures=lambda result: {"toy_bars": lambda path: _draw_toy(result, path)},
    report=_toy_report,
    summary=lambda result: [f"toy: {sum(result['values'])}"],
    dashboard=lambda result, board: board.log_table("toy", [{"value": v} for v in result["values"]]),
)


def test_a_registered_study_runs_draws_reports_and_logs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry, "STUDIES", (TOY,))
    results = {"name": "toy-run", "config": {"probe": {"target": 0.9}}}
    compute_studies(SimpleNamespace(toy=3), run=None, results=results)
    assert results["toy"] == {"values": [3, 6], "seen": ["config", "name"]}   # it saw the results before it

    figures = make_figures(results, tmp_path / "figures")
    assert list(figures) == ["toy_bars"]
    width, height = struct.unpack(">II", figures["toy_bars"].read_bytes()[16:24])   # the PNG header
    assert width > 100 and height > 100

    markdown = report_markdown(results, figures, tmp_path)
    assert "## Toy study" in markdown and "The toy counted 9 (target 0.9)." in markdown
    assert "figures/toy_bars.png" in markdown and "## Other figures" not in markdown

    assert summary_table(results) == "toy: 9"
    board = _Board()
    log_to_dashboard(board, results, figures)
    assert board.tables == {"toy": [{"value": 3}, {"value": 6}]} and board.figures == ["toy_bars"]


def test_a_study_the_config_does_not_ask_for_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry, "STUDIES", (TOY,))
    results = compute_studies(SimpleNamespace(toy=None), run=None, results={"name": "r"})
    assert "toy" not in results
    assert make_figures(results, tmp_path) == {} and summary_table(results) == "(no results)"
    assert "Toy" not in report_markdown(results, {}, tmp_path)
