"""Neuron ablation as a study: a ranking of one task's neurons, its minimal subset beside random rankings',
and what removing or keeping the top, random and bottom neurons does."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.dashboard import Dashboard
from speechprobe.experiments.studies.ablation.compute import run_ablation
from speechprobe.experiments.studies.ablation.figures import (draw_ablation_curves, draw_ablation_layers,
                                                              draw_minimal_subset, draw_ranking_check)
from speechprobe.experiments.studies.ablation.report import ablation_section
from speechprobe.experiments.study import Figures, ReportContext, Study
from speechprobe.experiments.writing import ablation_mode_words, pct, versus_random


def figures(ablation: dict) -> Figures:
    plan: Figures = {}
    if ablation.get("ablation"):
        plan["ablation_curves"] = lambda p: draw_ablation_curves(ablation, p)
    if ablation.get("check"):
        plan["ranking_check"] = lambda p: draw_ranking_check(ablation, p)
    if (ablation.get("minimal_subset") or {}).get("curve_k"):
        plan["minimal_subset"] = lambda p: draw_minimal_subset(ablation, p)
    if ablation.get("top_counts") and ablation.get("layers"):
        plan["ablation_layers"] = lambda p: draw_ablation_layers(ablation, p)
    return plan


def report(ablation: dict, context: ReportContext) -> Optional[str]:
    return ablation_section(ablation, context.figures, context.out, context.target)


def summary(ablation: dict) -> list[str]:
    m = ablation.get("minimal_subset") or {}
    return [f"ablation: {ablation.get('task')} in {ablation.get('encoder')} (layer {ablation.get('layer')}): "
            f"minimal subset k={m.get('k', '–')} of {ablation.get('n_neurons')} ({pct(m.get('fraction'))}"
            f"{versus_random(m)})"
            + (f"; the {ablation.get('method')} ranking does not beat random neurons at small k"
               if ablation.get("check") and not ablation["check"].get("beats_random") else "")
            + (f"; curves by {ablation_mode_words(ablation['ablation'].get('mode'))}"
               if ablation.get("ablation") else "")]


def dashboard(ablation: dict, board: Dashboard) -> None:
    curve = ablation["ablation"]
    rows = [{"fraction": f, "k": k, "removed_top": t, "removed_random": r, "removed_bottom": b,
             "kept_top": kt, "kept_random": kr, "kept_bottom": kb}
            for f, k, t, r, b, kt, kr, kb in zip(curve["fractions"], curve["ks"], curve["removed_top"],
                                                 curve["removed_random_mean"], curve["removed_bottom"],
                                                 curve["kept_top"], curve["kept_random_mean"], curve["kept_bottom"])]
    board.log_table("ablation", rows)


STUDY = Study(key="ablation", section=lambda config: config.ablation,
              compute=lambda run, section, results: run_ablation(run, section),
              figures=figures, report=report, summary=summary, dashboard=dashboard)
