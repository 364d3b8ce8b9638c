"""The layer sweep as a study: every encoder x task x layer, beside each encoder's random-weights twin."""
from __future__ import annotations

from typing import Any, Optional

from speechprobe.experiments.dashboard import Dashboard
from speechprobe.experiments.plotting import safe_name
from speechprobe.experiments.studies.sweep.compute import run_sweep
from speechprobe.experiments.studies.sweep.figures import draw_salient_layers, draw_selectivity, draw_sweep_task
from speechprobe.experiments.studies.sweep.report import sweep_section
from speechprobe.experiments.studies.sweep.results import (best_layer_of, by_layer, model_encoders, model_units,
                                                           selectivity_note, sweep_tasks, twin_unit, unit_of)
from speechprobe.experiments.study import Figures, ReportContext, Study
from speechprobe.experiments.writing import ival, NA, num, text_table, value


def figures(sweep: dict) -> Figures:
    plan: Figures = {}
    if not model_units(sweep):
        return plan
    for task in sweep_tasks(sweep):
        plan[f"sweep_{safe_name(task)}"] = lambda p, t=task: draw_sweep_task(sweep, t, p)
    if any(s.get("selectivity") is not None for u in model_units(sweep) if selectivity_note(u) is None
           for s in u["layers"]):
        plan["selectivity"] = lambda p: draw_selectivity(sweep, p)
    if any(u.get("salient") for u in model_units(sweep)):
        plan["salient_layers"] = lambda p: draw_salient_layers(sweep, p)
    return plan


def report(sweep: dict, context: ReportContext) -> Optional[str]:
    return sweep_section(sweep, context.figures, context.out) if model_units(sweep) else None


def summary(sweep: dict) -> list[str]:
    """Per encoder x task: best layer, test accuracy [CI], the random twin there, selectivity."""
    if not model_units(sweep):
        return []
    rows = []
    for encoder in model_encoders(sweep):
        for task in sweep_tasks(sweep):
            unit = unit_of(sweep, encoder, task)
            best = best_layer_of(unit) if unit else None
            if best is None:
                continue
            twin = by_layer(twin_unit(sweep, encoder, task)).get(best["layer"])
            rows.append([encoder, task, best["layer"], ival(best["accuracy"], 3),
                         num(value(twin["accuracy"]), 3) if twin else "–",
                         NA if selectivity_note(unit) is not None else num(best.get("selectivity"), 3)])
    return [text_table(["encoder", "task", "best layer", "test accuracy [CI]", "random twin", "selectivity"], rows)]


def dashboard(sweep: dict, board: Dashboard) -> None:
    """Per-layer metrics (step = layer position) and the table behind the sweep figures."""
    rows: list[dict[str, Any]] = []
    for unit in sweep["results"]:
        prefix = f"sweep/{unit['encoder']}/{unit['task']}"
        for position, layer in enumerate(unit["layers"]):
            board.log_metrics({f"{prefix}/accuracy": layer["accuracy"]["value"],
                               f"{prefix}/macro_f1": layer["macro_f1"]["value"],
                               f"{prefix}/control_accuracy": layer["control_accuracy"],
                               f"{prefix}/selectivity": layer["selectivity"]}, step=position)
            rows.append({"encoder": unit["encoder"], "role": unit["role"], "task": unit["task"],
                         "layer": layer["layer"], "accuracy": layer["accuracy"]["value"],
                         "low": layer["accuracy"]["low"], "high": layer["accuracy"]["high"],
                         "macro_f1": layer["macro_f1"]["value"], "control_accuracy": layer["control_accuracy"],
                         "selectivity": layer["selectivity"], "majority": layer["majority_accuracy"]})
    board.log_table("sweep", rows)


STUDY = Study(key="sweep", section=lambda config: config.sweep, compute=lambda run, section, results: run_sweep(run, section),
              figures=figures, report=report, summary=summary, dashboard=dashboard)
