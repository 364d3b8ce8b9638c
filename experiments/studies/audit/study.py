"""The bias audit as a study: how and where an attribute is encoded, its neurons, and who the other tasks'
probes disadvantage."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.dashboard import Dashboard
from speechprobe.experiments.studies.audit.compute import run_audit
from speechprobe.experiments.studies.audit.figures import (draw_audit_ablation, draw_audit_checks, draw_audit_groups,
                                                           draw_overlap)
from speechprobe.experiments.studies.audit.report import audit_section
from speechprobe.experiments.study import Figures, ReportContext, Study
from speechprobe.experiments.writing import ival, pct, versus_random


def figures(audit: dict) -> Figures:
    plan: Figures = {}
    if audit.get("groups"):
        plan["audit_groups"] = lambda p: draw_audit_groups(audit, p)
    if audit.get("overlap"):
        plan["overlap"] = lambda p: draw_overlap(audit, p)
    if (audit.get("ablation") or {}).get("tasks"):
        plan["audit_ablation"] = lambda p: draw_audit_ablation(audit, p)
    if audit.get("checks"):
        plan["audit_checks"] = lambda p: draw_audit_checks(audit, p)
    return plan


def report(audit: dict, context: ReportContext) -> Optional[str]:
    return audit_section(audit, context.figures, context.out, context.target)


def summary(audit: dict) -> list[str]:
    mine = (audit.get("salient") or {}).get(audit.get("attribute")) or {}
    flagged = [f"{t} (worse for {g.get('worst_group')}, gap {ival(g['gap'])})"
               for t, g in (audit.get("groups") or {}).items() if g.get("flagged")]
    lines = [f"audit: {audit.get('attribute')} in {audit.get('encoder')} at {audit.get('layer')}: "
             f"minimal subset k={mine.get('k', '–')} ({pct(mine.get('fraction'))}{versus_random(mine)}); "
             "flagged gaps: " + (", ".join(flagged) if flagged else "none")]
    failing = [t for t, c in (audit.get("checks") or {}).items() if not c.get("beats_random")]
    if failing:
        lines.append(f"audit: the {audit.get('method')} ranking does not beat random neurons at small k for "
                     f"{', '.join(failing)}")
    return lines


def dashboard(audit: dict, board: Dashboard) -> None:
    rows = [{"task": task, "layer": g["layer"], "group": group, "accuracy": g["accuracy"][group]["value"],
             "low": g["accuracy"][group]["low"], "high": g["accuracy"][group]["high"],
             "gap": g["gap"]["value"], "flagged": g["flagged"]}
            for task, g in audit["groups"].items() for group in g["groups"]]
    board.log_table("audit_groups", rows)


STUDY = Study(key="audit", section=lambda config: config.audit, compute=lambda run, section, results: run_audit(run, section),
              figures=figures, report=report, summary=summary, dashboard=dashboard)
