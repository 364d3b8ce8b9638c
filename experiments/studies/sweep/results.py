"""Reading a sweep's results: the model encoders' units, their random-weights twins, the tasks, and why a
unit's selectivity is n/a. Used by every study that reports on the sweep."""
from __future__ import annotations

from typing import Optional

def model_units(sweep: dict) -> list[dict]:
    return [u for u in sweep.get("results", []) if u.get("role", "model") == "model"]


def model_encoders(sweep: dict) -> list[str]:
    """Non-baseline encoders in the order of the config."""
    seen = [u["encoder"] for u in model_units(sweep)]
    return list(dict.fromkeys([*(e for e in sweep.get("encoders", []) if e in seen), *seen]))


def twin_unit(sweep: dict, encoder: str, task: str) -> Optional[dict]:
    """The random-weights baseline unit of ``encoder`` on ``task``, if the sweep ran one."""
    return next((u for u in sweep.get("results", []) if u.get("role") == "baseline"
                 and u.get("baseline_of") == encoder and u.get("task") == task), None)


def unit_of(sweep: dict, encoder: str, task: str) -> Optional[dict]:
    return next((u for u in model_units(sweep) if u["encoder"] == encoder and u["task"] == task), None)


def sweep_tasks(sweep: dict) -> list[str]:
    seen = [u["task"] for u in model_units(sweep)]
    return list(dict.fromkeys([*(t for t in sweep.get("tasks", []) if t in seen), *seen]))


def selectivity_note(unit: dict) -> Optional[str]:
    """Why a sweep unit's selectivity is n/a (its task's labels are the speakers); None when it is reported.

    Read from the unit's ``selectivity_note``, or, for a unit written before units carried one, from its
    task (:attr:`tasks.tasks.Task.control_note` of the built-in task of that name).
    """
    note = unit.get("selectivity_note")
    if note:
        return str(note)
    from speechprobe.tasks.tasks import BUILTIN_TASKS

    task = BUILTIN_TASKS.get(str(unit.get("task")))
    return task.control_note if task is not None else None


def by_layer(unit: Optional[dict]) -> dict[str, dict]:
    return {s["layer"]: s for s in unit["layers"]} if unit else {}


def best_layer_of(unit: dict) -> Optional[dict]:
    return by_layer(unit).get(unit.get("best_layer"))
