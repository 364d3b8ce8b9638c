"""The figures of a run's report: each study's planned figures, drawn into one folder.

:func:`make_figures` asks every study that ran for its figures and draws them, returning ``{name: path}``.
Every figure is written through a temporary file and a rename, so a figure on disk is always whole; one
figure failing (odd data) is reported as a warning and the others are still drawn, since the numbers behind
them took far longer to compute than a figure does (under the tests, the warning is an error).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from speechprobe.experiments.plotting import pyplot
from speechprobe.experiments import registry


def planned_figures(results: dict) -> dict[str, Callable[[Path], Path]]:
    """Figure name -> a function drawing it to a path, for every figure the studies' results support."""
    plan: dict[str, Callable[[Path], Path]] = {}
    for study in registry.STUDIES:
        result = study.result_in(results)
        if result:
            plan.update(study.figures(result))
    return plan


def make_figures(results: dict, folder: Path) -> dict[str, Path]:
    """Draw every figure the results support into ``folder``; returns {name: PNG path} of those drawn."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    for name, draw in planned_figures(results).items():
        try:
            drawn[name] = draw(folder / f"{name}.png")
        except Exception as error:  # noqa: BLE001 - one odd figure must not lose the report
            warnings.warn(f"figure {name} not drawn: {type(error).__name__}: {error}", RuntimeWarning, stacklevel=2)
            pyplot().close("all")
    return drawn
