"""Causal interventions as a study: remove an attribute inside the forward pass at one layer (top-k neurons, the
minimal subset, LEACE) and measure whether later layers recover it and what the encoder's own job and the other
tasks pay, each against random neurons / directions and the majority class.

The config's ``intervention`` is one section or a list of them (e.g. gender in GE2E and dialect in Whisper); the
result is a list with one entry per section, each with its own report section, figures and dashboard table."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.dashboard import Dashboard
from speechprobe.experiments.runner import unit_dir_name
from speechprobe.experiments.studies.intervention.compute import run_intervention
from speechprobe.experiments.studies.intervention.figures import draw_layers, draw_tradeoff
from speechprobe.experiments.studies.intervention.report import intervention_section, summary_lines
from speechprobe.experiments.study import Figures, ReportContext, Study


def _entries(results: list[dict]) -> list[dict]:
    """Older runs stored one result, not a list."""
    return results if isinstance(results, list) else [results]


def suffixes(results: list[dict]) -> list[str]:
    """Each entry's figure-name suffix: ``<encoder>_<attribute>``, with the layer too where two entries share those."""
    pairs = [(r["encoder"], r["attribute"]) for r in results]
    return ["_".join(unit_dir_name(part) for part in (*pair, *((r["layer_spec"],) if pairs.count(pair) > 1 else ())))
            for r, pair in zip(results, pairs)]


def figures(results: list[dict]) -> Figures:
    plan: Figures = {}
    entries = _entries(results)
    for result, suffix in zip(entries, suffixes(entries)):
        if result.get("tradeoff", {}).get("points"):
            plan[f"intervention_tradeoff_{suffix}"] = lambda p, result=result: draw_tradeoff(result, p)
        if result.get("conditions"):
            plan[f"intervention_layers_{suffix}"] = lambda p, result=result: draw_layers(result, p)
    return plan


def report(results: list[dict], context: ReportContext) -> Optional[str]:
    entries = _entries(results)
    return "\n\n".join(intervention_section(result, suffix, context.figures, context.out)
                       for result, suffix in zip(entries, suffixes(entries)))


def summary(results: list[dict]) -> list[str]:
    return [line for result in _entries(results) for line in summary_lines(result)]


def dashboard(results: list[dict], board: Dashboard) -> None:
    entries = _entries(results)
    for result, suffix in zip(entries, suffixes(entries)):
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
        board.log_table(f"intervention_{suffix}", rows)


STUDY = Study(key="intervention", section=lambda config: config.intervention,
              compute=lambda run, sections, results: [run_intervention(run, section) for section in sections],
              figures=figures, report=report, summary=summary, dashboard=dashboard)
