"""Causal interventions as a study: remove an attribute inside the forward pass at one layer (top-k neurons, the
minimal subset, LEACE) and measure whether later layers recover it and what the encoder's own job and the other
tasks pay, each against random neurons / directions and the majority class."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.dashboard import Dashboard
from speechprobe.experiments.studies.intervention.compute import run_intervention
from speechprobe.experiments.studies.intervention.figures import draw_layers, draw_tradeoff
from speechprobe.experiments.studies.intervention.report import intervention_section, summary_lines
from speechprobe.experiments.study import Figures, ReportContext, Study


def figures(result: dict) -> Figures:
    plan: Figures = {}
    if result.get("tradeoff", {}).get("points"):
        plan["intervention_tradeoff"] = lambda p: draw_tradeoff(result, p)
    if result.get("conditions"):
        plan["intervention_layers"] = lambda p: draw_layers(result, p)
    return plan


def report(result: dict, context: ReportContext) -> Optional[str]:
    return intervention_section(result, context.figures, context.out)


def dashboard(result: dict, board: Dashboard) -> None:
    rows = []
    for c in result["conditions"]:
        job = c.get("job") or {}
        row = {"condition": c["name"], "kind": c["kind"], "k": c.get("k"), "mode": c.get("mode"),
               "attribute_at_layer_in_forward": c["at_layer"]["in_forward_accuracy"],
               "attribute_at_layer_stored": c["at_layer"].get("stored_accuracy"),
               "own_job": job.get("value") if job.get("available") else None}
        row.update({f"attribute_{a['layer']}": a["accuracy"]["value"] for a in c["attribute"]})
        row.update({f"task_{t}": v["accuracy"]["value"] for t, v in c["tasks"].items()})
        rows.append(row)
    board.log_table("intervention", rows)


STUDY = Study(key="intervention", section=lambda config: config.intervention,
              compute=lambda run, section, results: run_intervention(run, section),
              figures=figures, report=report, summary=summary_lines, dashboard=dashboard)
