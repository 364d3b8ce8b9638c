"""The checkpoint comparison as a study: two checkpoints of one architecture (``compare: {encoders: [A, B]}``),
per layer the relative weight change, the linear CKA of their representations and the probe accuracy of both on
each task (the sweep's units, shared with a sweep of the same run)."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.dashboard import Dashboard
from speechprobe.experiments.studies.compare.compute import run_compare
from speechprobe.experiments.studies.compare.figures import draw_compare, figure_name
from speechprobe.experiments.studies.compare.report import compare_section, summary_lines
from speechprobe.experiments.study import Figures, ReportContext, Study


def figures(result: dict) -> Figures:
    if not result.get("layers"):
        return {}
    return {figure_name(result): lambda path: draw_compare(result, path)}


def report(result: dict, context: ReportContext) -> Optional[str]:
    return compare_section(result, context.figures, context.out)


def dashboard(result: dict, board: Dashboard) -> None:
    board.log_table("compare_layers", [
        {"layer": row["layer"], "relative_weight_change": row.get("relative"), "norm_a": row.get("norm_a"),
         "change": row.get("change"), "n_parameters": row.get("n_parameters"), "linear_cka": row.get("cka")}
        for row in result["layers"]])
    board.log_table("compare_accuracy", [
        {"task": task["task"], "layer": row["layer"], "accuracy_a": row["a"].get("value"),
         "accuracy_b": row["b"].get("value"), "difference": row.get("difference"), "overlap": row.get("overlap"),
         "majority": row["majority_a"]}
        for task in result.get("tasks") or [] for row in task["layers"]])


STUDY = Study(key="compare", section=lambda config: config.compare,
              compute=lambda run, section, results: run_compare(run, section),
              figures=figures, report=report, summary=summary_lines, dashboard=dashboard)
