"""What a study is to the runner, the report and the dashboard: a small typed interface they loop over.

A study (sweep, audit, ablation, similarity, GradNAPs, attribution, ...) lives in one folder under
`experiments/studies/`, holding its computation, its figures, its report section and its dashboard rows, and
is registered by one line in `experiments/studies/__init__.py`. Nothing outside its folder names it: the
runner computes every study whose config section is present, in registry order (a study may read the results
of those before it), and the report, the summary and the dashboard ask each study for its part.

Results stay plain JSON values (what `results.json` holds and a rerun reads back), so a report can be
rebuilt from a results file without recomputing anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TYPE_CHECKING

if TYPE_CHECKING:
    from speechprobe.experiments.config import RunConfig
    from speechprobe.experiments.dashboard import Dashboard
    from speechprobe.experiments.runner import Run

Figures = dict[str, Callable[[Path], Path]]  # figure name -> draw(path) -> path


@dataclass(frozen=True)
class ReportContext:
    """What a report section needs besides its own result: the whole run's results, the drawn figures and
    the folder the report is written to (figure links are relative to it)."""

    results: dict
    figures: dict[str, Path]
    out: Path

    @property
    def target(self) -> Any:
        """The minimal-subset target of the run's probe settings (for the studies that state it)."""
        return ((self.results.get("config") or {}).get("probe") or {}).get("target")


def _no_figures(result: Any) -> Figures:
    return {}


def _no_report(result: Any, context: ReportContext) -> Optional[str]:
    return None


def _no_lines(result: Any) -> list[str]:
    return []


def _no_rows(result: Any, dashboard: "Dashboard") -> None:
    return None


@dataclass(frozen=True)
class Study:
    """One study, as the runner, the report and the dashboard see it.

    key: where its result goes (`results[key]`, or `results[within][key]` for a study reported inside
    another, as layer similarity inside the sweep). section: its part of the config, or None when the run
    does not ask for it. compute: (run, section, results so far) -> its result, plain JSON values.
    figures: name -> drawing function, for the figures its result supports. report: its Markdown section
    (None to add nothing). summary: lines for the terminal summary. dashboard: its metrics and tables.
    """

    key: str
    section: Callable[["RunConfig"], Any]
    compute: Callable[["Run", Any, dict], Any]
    figures: Callable[[Any], Figures] = _no_figures
    report: Callable[[Any, ReportContext], Optional[str]] = _no_report
    summary: Callable[[Any], list[str]] = _no_lines
    dashboard: Callable[[Any, "Dashboard"], None] = _no_rows
    within: Optional[str] = None

    def result_in(self, results: dict) -> Any:
        """This study's result in a run's results, or None when it did not run."""
        place = results.get(self.within) if self.within else results
        return (place or {}).get(self.key) if isinstance(place, dict) else None

    def store_in(self, results: dict, result: Any) -> None:
        if self.within:
            results[self.within][self.key] = result
        else:
            results[self.key] = result
