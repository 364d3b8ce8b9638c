"""The sweep's figures: accuracy per layer per task, selectivity, where the salient neurons live."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from speechprobe.experiments.plotting import (as_float, ci_label, GREY, grouped_bars, interval_bounds,
                                              interval_value, PANEL_W, panels, RED, rotate_if_crowded, save_figure)
from speechprobe.experiments.studies.sweep.results import (model_encoders, selectivity_note, sweep_tasks, twin_unit,
                                                           unit_of)

def _sweep_panel(ax: Any, unit: dict, twin: Optional[dict]) -> None:
    layers = [s["layer"] for s in unit["layers"]]
    x = list(range(len(layers)))
    acc = [as_float(interval_value(s["accuracy"])) for s in unit["layers"]]
    lows = [as_float(interval_bounds(s["accuracy"])[0]) for s in unit["layers"]]
    highs = [as_float(interval_bounds(s["accuracy"])[1]) for s in unit["layers"]]
    ax.fill_between(x, lows, highs, color="C0", alpha=0.2, linewidth=0)
    ax.errorbar(x, acc, yerr=[[max(0.0, a - lo) for a, lo in zip(acc, lows)],
                              [max(0.0, hi - a) for a, hi in zip(acc, highs)]],
                color="C0", marker="o", capsize=3, label=f"{unit['encoder']} ({ci_label(unit['layers'])})")
    if twin is not None:
        twin_accuracy = {s["layer"]: as_float(interval_value(s["accuracy"])) for s in twin["layers"]}
        ax.plot(x, [twin_accuracy.get(name, float("nan")) for name in layers], "--", color="C1", marker=".",
                label=f"random weights ({twin['encoder']})")
    control = [as_float(s.get("control_accuracy")) for s in unit["layers"]]
    if any(c == c for c in control):
        ax.plot(x, control, ":", color="C2", marker=".", label="control task")
    majority = [as_float(s.get("majority_accuracy")) for s in unit["layers"]]
    ax.plot(x, majority, "-", color=GREY, linewidth=1.2, label="majority class")
    best = unit.get("best_layer")
    if best in layers:
        i = layers.index(best)
        ax.plot([i], [acc[i]], marker="*", markersize=16, color=RED, linestyle="none", label="best layer (validation)")
        ax.axvline(i, color=RED, alpha=0.25, linewidth=1)
    ax.set_xticks(x, layers)
    rotate_if_crowded(ax, layers)
    ax.set_ylim(0, 1.05)
    ax.set_title(unit["encoder"])
    ax.set_xlabel("layer")
    ax.grid(alpha=0.3)


def draw_sweep_task(sweep: dict, task: str, path: Path) -> Path:
    """Layer-wise test accuracy of ``task``, one panel per encoder, beside its baselines."""
    units = [u for e in model_encoders(sweep) if (u := unit_of(sweep, e, task)) is not None]
    fig, axes = panels(len(units))
    for ax, unit in zip(axes, units):
        _sweep_panel(ax, unit, twin_unit(sweep, unit["encoder"], task))
    axes[0].set_ylabel("test accuracy (pooled over folds)")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{task}: probing accuracy per layer")
    return save_figure(fig, path)


def draw_selectivity(sweep: dict, path: Path) -> Path:
    """Selectivity (task minus control-task accuracy) per layer, one line per task; a task whose selectivity
    is n/a (speaker identity: :func:`selectivity_note`) has no line, and a note under the figure says why."""
    encoders = model_encoders(sweep)
    fig, axes = panels(len(encoders))
    omitted: dict[str, str] = {}
    for ax, encoder in zip(axes, encoders):
        layers: list[str] = []
        for i, task in enumerate(sweep_tasks(sweep)):
            unit = unit_of(sweep, encoder, task)
            if unit is None:
                continue
            note = selectivity_note(unit)
            if note is not None:
                omitted.setdefault(task, note)
                continue
            layers = [s["layer"] for s in unit["layers"]]
            ax.plot(range(len(layers)), [as_float(s.get("selectivity")) for s in unit["layers"]],
                    marker="o", color=f"C{i}", label=task)
        ax.axhline(0, color=GREY, linewidth=1)
        ax.set_xticks(range(len(layers)), layers)
        rotate_if_crowded(ax, layers)
        ax.set_title(encoder)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("selectivity (accuracy - control accuracy)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Selectivity per layer")
    if omitted:
        import textwrap

        notes = {}
        for task, note in omitted.items():
            notes.setdefault(note, []).append(task)
        width = int(18 * PANEL_W * min(3, len(axes)))  # characters of 7 pt text across the panels
        text = "\n".join(textwrap.fill(f"{', '.join(tasks)}: selectivity n/a, no line: {note}", width)
                         for note, tasks in notes.items())
        fig.supxlabel(text, fontsize=7, color=GREY)  # constrained layout keeps room for it
    return save_figure(fig, path)


def draw_salient_layers(sweep: dict, path: Path) -> Path:
    """Share of each layer's neurons among the salient (top) neurons of a probe on all layers."""
    encoders = model_encoders(sweep)
    fig, axes = panels(len(encoders), sharey=False)
    top = None
    for ax, encoder in zip(axes, encoders):
        units = [u for t in sweep_tasks(sweep) if (u := unit_of(sweep, encoder, t)) and u.get("salient")]
        layers = [s["layer"] for s in units[0]["layers"]] if units else []
        series = [(u["task"], [100 * as_float(u["salient"]["share_of_layer"].get(name)) for name in layers]) for u in units]
        grouped_bars(ax, layers, series)
        if units:
            top = units[0]["salient"].get("top_fraction", top)
        ax.set_title(encoder)
        ax.set_xlabel("layer")
        ax.set_ylabel("% of the layer's neurons")
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.3)
        ax.legend(fontsize=7, ncols=min(4, max(1, len(series))), loc="upper center")
    share = f"top {100 * top:g}%" if top else "top"
    fig.suptitle(f"Salient neurons per layer\n({share} of a probe on all layers at once)", fontsize=11)
    return save_figure(fig, path)
