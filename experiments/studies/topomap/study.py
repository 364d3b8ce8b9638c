"""Topographic neuron maps as a study (``topomap: {encoders, tasks, layer, top_fraction, permutations}``): per
encoder x task, one layer's neurons laid out so that grid neighbours correlate, painted with every label group's
profile, the probe's weights and its salient neurons, with permutation tests of whether those gather."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.dashboard import Dashboard
from speechprobe.experiments.studies.topomap.compute import run_topomap
from speechprobe.experiments.studies.topomap.figures import draw_topomap, figure_name
from speechprobe.experiments.studies.topomap.report import summary_lines, topomap_section
from speechprobe.experiments.study import Figures, ReportContext, Study


def figures(result: dict) -> Figures:
    return {figure_name(entry): (lambda path, entry=entry: draw_topomap(entry, path)) for entry in result.get("maps") or []}


def report(result: dict, context: ReportContext) -> Optional[str]:
    return topomap_section(result, context.figures, context.out) if result.get("maps") else None


def dashboard(result: dict, board: Dashboard) -> None:
    maps = result.get("maps") or []
    board.log_table("topomap", [
        {"encoder": m["encoder"], "task": m["task"], "layer": m["layer"],
         "held_out_gain": m["layout_summary"]["quality"].get("gain"),
         "random_gain": m["layout_summary"]["quality"].get("random_gain"),
         "in_sample_gain": m["layout_summary"]["quality_in_sample"].get("gain"),
         "stability": m["layout_summary"]["stability"].get("mean"), "salient_k": m["k"],
         "nn_ratio": m["salient"].get("nn_ratio"), "nn_p_value": m["salient"].get("nn_p_value"),
         "weights_moran_i": m["weight_moran"].get("moran_i"), "weights_moran_p": m["weight_moran"].get("moran_p_value")}
        for m in maps])
    board.log_table("topomap_groups", [
        {"encoder": m["encoder"], "task": m["task"], "layer": m["layer"], "group": g["group"], "size": g["size"],
         "moran_i": g.get("moran_i"), "moran_p_value": g.get("moran_p_value")}
        for m in maps for g in m.get("groups") or []])


STUDY = Study(key="topomap", section=lambda config: config.topomap,
              compute=lambda run, section, results: run_topomap(run, section),
              figures=figures, report=report, summary=summary_lines, dashboard=dashboard)
