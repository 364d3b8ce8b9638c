"""GradNAPs as a study: per model encoder x task of the sweep, the label groups' neuron profiles per layer."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.studies.gradnap.compute import run_gradnap
from speechprobe.experiments.studies.gradnap.figures import draw_gradnap, gradnap_figure_name
from speechprobe.experiments.studies.gradnap.report import gradnap_subsection
from speechprobe.experiments.study import Figures, ReportContext, Study


def figures(units: list[dict]) -> Figures:
    return {gradnap_figure_name(u): (lambda p, u=u: draw_gradnap(u, p)) for u in units if u.get("layers")}


def report(units: list[dict], context: ReportContext) -> Optional[str]:
    return gradnap_subsection(units, context.figures, context.out) if units else None


STUDY = Study(key="gradnap", within="sweep",
              section=lambda config: config.sweep if config.sweep and config.sweep.gradnap else None,
              compute=run_gradnap, figures=figures, report=report)
