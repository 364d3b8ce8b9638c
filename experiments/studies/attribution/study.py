"""Input attribution as a study: the sweep's best-layer probe attributed to the input features of a few test
utterances per model encoder x task, with the model-randomisation check."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from speechprobe.experiments.studies.attribution.compute import run_attribution_units
from speechprobe.experiments.studies.attribution.figures import attribution_figure_name, draw_attribution_file
from speechprobe.experiments.studies.attribution.report import attribution_section
from speechprobe.experiments.study import Figures, ReportContext, Study


def figures(entries: list[dict]) -> Figures:
    plan: Figures = {}
    for entry in entries:
        if entry.get("utterances") and entry.get("folder"):
            record = entry["utterances"][0]
            plan[attribution_figure_name(entry)] = (
                lambda p, r=record, f=Path(entry["folder"]) / record["maps_file"]: draw_attribution_file(r, f, p))
    return plan


def report(entries: list[dict], context: ReportContext) -> Optional[str]:
    return "\n\n".join(attribution_section(entries, context.figures, context.out)) if entries else None


STUDY = Study(key="attribution", within="sweep",
              section=lambda config: config.sweep if config.sweep and config.sweep.attribution is not None else None,
              compute=run_attribution_units, figures=figures, report=report)
