"""The figures of a run's report, drawn from its results (the dict that becomes ``results.json``).

:func:`make_figures` draws whatever the results hold (sweep, audit, ablation: each may be absent) into
one folder and returns ``{name: path}``. Every figure is written through a temporary file and a rename,
so a figure on disk is always whole; one figure failing (odd data) is reported as a warning and the
others are still drawn, since the numbers behind them took far longer to compute than a figure does.
Matplotlib is imported lazily with the Agg backend: the report must render without a display.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from speechprobe.io import write_atomically

DPI = 110
PANEL_W, PANEL_H = 4.6, 3.4  # inches per panel: modest files, readable labels
GREY, RED = "0.45", "#c0392b"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(text: str) -> str:
    """A task or encoder name as a file-name part (`random:ge2e` -> `random-ge2e`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", str(text))


def _save(fig: Any, path: Path) -> Path:
    """Write the figure atomically and close it."""
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        _plt().close(fig)


def _panels(n: int, *, width: float = PANEL_W, height: float = PANEL_H, sharey: bool = True) -> tuple[Any, list]:
    """A row of ``n`` panels (wrapping after three) with constrained layout, so labels never overlap."""
    plt = _plt()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             sharey=sharey, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _value(interval: Any) -> Optional[float]:
    return interval.get("value") if isinstance(interval, dict) else interval


def _bounds(interval: Any) -> tuple[Optional[float], Optional[float]]:
    if not isinstance(interval, dict):
        return None, None
    return interval.get("low"), interval.get("high")


def _num(value: Any) -> float:
    """None (a NaN in results.json) as NaN, so matplotlib leaves a gap instead of failing."""
    return float("nan") if value is None else float(value)


def _ci_label(section: Any) -> str:
    """'95% CI' from the first interval found in a section, so the label follows the config."""
    stack = [section]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "confidence" in item and "low" in item:
                return f"{100 * item['confidence']:g}% CI"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return "CI"


def _rotate_if_crowded(ax: Any, labels: list[str]) -> None:
    if len(labels) > 5 or max((len(s) for s in labels), default=0) > 8:
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")


# --------------------------------------------------------------------------------------------------
# sweep


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


def ablation_mode_words(mode: Optional[str]) -> str:
    """An ablation mode in words (:data:`probing.ablation.MODE_DESCRIPTIONS`); results written before the
    mode was recorded used raw zeros, so a missing mode reads as ``"zero"``."""
    from speechprobe.probing.ablation import MODE_DESCRIPTIONS

    mode = "zero" if mode is None else str(mode)
    return MODE_DESCRIPTIONS.get(mode, f"{mode} ablation")


def _sweep_panel(ax: Any, unit: dict, twin: Optional[dict]) -> None:
    layers = [s["layer"] for s in unit["layers"]]
    x = list(range(len(layers)))
    acc = [_num(_value(s["accuracy"])) for s in unit["layers"]]
    lows = [_num(_bounds(s["accuracy"])[0]) for s in unit["layers"]]
    highs = [_num(_bounds(s["accuracy"])[1]) for s in unit["layers"]]
    ax.fill_between(x, lows, highs, color="C0", alpha=0.2, linewidth=0)
    ax.errorbar(x, acc, yerr=[[max(0.0, a - lo) for a, lo in zip(acc, lows)],
                              [max(0.0, hi - a) for a, hi in zip(acc, highs)]],
                color="C0", marker="o", capsize=3, label=f"{unit['encoder']} ({_ci_label(unit['layers'])})")
    if twin is not None:
        by_layer = {s["layer"]: _num(_value(s["accuracy"])) for s in twin["layers"]}
        ax.plot(x, [by_layer.get(name, float("nan")) for name in layers], "--", color="C1", marker=".",
                label=f"random weights ({twin['encoder']})")
    control = [_num(s.get("control_accuracy")) for s in unit["layers"]]
    if any(c == c for c in control):
        ax.plot(x, control, ":", color="C2", marker=".", label="control task")
    majority = [_num(s.get("majority_accuracy")) for s in unit["layers"]]
    ax.plot(x, majority, "-", color=GREY, linewidth=1.2, label="majority class")
    best = unit.get("best_layer")
    if best in layers:
        i = layers.index(best)
        ax.plot([i], [acc[i]], marker="*", markersize=16, color=RED, linestyle="none", label="best layer (validation)")
        ax.axvline(i, color=RED, alpha=0.25, linewidth=1)
    ax.set_xticks(x, layers)
    _rotate_if_crowded(ax, layers)
    ax.set_ylim(0, 1.05)
    ax.set_title(unit["encoder"])
    ax.set_xlabel("layer")
    ax.grid(alpha=0.3)


def draw_sweep_task(sweep: dict, task: str, path: Path) -> Path:
    """Layer-wise test accuracy of ``task``, one panel per encoder, beside its baselines."""
    units = [u for e in model_encoders(sweep) if (u := unit_of(sweep, e, task)) is not None]
    fig, axes = _panels(len(units))
    for ax, unit in zip(axes, units):
        _sweep_panel(ax, unit, twin_unit(sweep, unit["encoder"], task))
    axes[0].set_ylabel("test accuracy (pooled over folds)")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{task}: probing accuracy per layer")
    return _save(fig, path)


def draw_selectivity(sweep: dict, path: Path) -> Path:
    """Selectivity (task minus control-task accuracy) per layer, one line per task; a task whose selectivity
    is n/a (speaker identity: :func:`selectivity_note`) has no line, and a note under the figure says why."""
    encoders = model_encoders(sweep)
    fig, axes = _panels(len(encoders))
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
            ax.plot(range(len(layers)), [_num(s.get("selectivity")) for s in unit["layers"]],
                    marker="o", color=f"C{i}", label=task)
        ax.axhline(0, color=GREY, linewidth=1)
        ax.set_xticks(range(len(layers)), layers)
        _rotate_if_crowded(ax, layers)
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
    return _save(fig, path)


def _grouped_bars(ax: Any, labels: list[str], series: list[tuple[str, list[float]]],
                  errors: Optional[list[Optional[list[float]]]] = None) -> None:
    """Bars of several series side by side at each label."""
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series):
        offsets = [j - 0.4 + width * (i + 0.5) for j in range(len(labels))]
        err = errors[i] if errors else None
        ax.bar(offsets, values, width, yerr=err, capsize=3 if err else 0, label=name, color=f"C{i}")
    ax.set_xticks(range(len(labels)), labels)
    _rotate_if_crowded(ax, labels)


def draw_salient_layers(sweep: dict, path: Path) -> Path:
    """Share of each layer's neurons among the salient (top) neurons of a probe on all layers."""
    encoders = model_encoders(sweep)
    fig, axes = _panels(len(encoders), sharey=False)
    top = None
    for ax, encoder in zip(axes, encoders):
        units = [u for t in sweep_tasks(sweep) if (u := unit_of(sweep, encoder, t)) and u.get("salient")]
        layers = [s["layer"] for s in units[0]["layers"]] if units else []
        series = [(u["task"], [100 * _num(u["salient"]["share_of_layer"].get(name)) for name in layers]) for u in units]
        _grouped_bars(ax, layers, series)
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
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# audit


def draw_audit_groups(audit: dict, path: Path) -> Path:
    """The other tasks' accuracy per attribute group, the gap and whether it is flagged."""
    tasks = list(audit["groups"])
    fig, axes = _panels(len(tasks), width=3.8)
    for ax, task in zip(axes, tasks):
        g = audit["groups"][task]
        groups = list(g["groups"])
        values = [_num(_value(g["accuracy"][k])) for k in groups]
        bounds = [_bounds(g["accuracy"][k]) for k in groups]
        err = [[max(0.0, v - _num(lo)) for v, (lo, _) in zip(values, bounds)],
               [max(0.0, _num(hi) - v) for v, (_, hi) in zip(values, bounds)]]
        colors = [RED if g.get("flagged") and k == g.get("worst_group") else "C0" for k in groups]
        ax.bar(range(len(groups)), values, yerr=err, capsize=4, color=colors)
        ax.set_xticks(range(len(groups)), groups)
        gap = g["gap"]
        lo, hi = _bounds(gap)
        text = f"gap {_num(_value(gap)):.2f} [{_num(lo):.2f}, {_num(hi):.2f}]"
        flagged = bool(g.get("flagged"))
        ax.set_title(f"{task} (at {g.get('layer')})\n{text}{' *' if flagged else ''}",
                     color=RED if flagged else "black", fontsize=10)
        ax.set_xlabel(audit.get("attribute", "group"))
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"test accuracy ({_ci_label(audit)})")
    fig.suptitle(f"Accuracy per {audit.get('attribute')} group ({audit.get('encoder')})\n"
                 "* the gap's interval excludes 0", fontsize=11)
    return _save(fig, path)


def draw_overlap(audit: dict, path: Path) -> Path:
    """Jaccard overlap of the tasks' minimal subsets, each cell 'J / chance' (bold: p < 0.05)."""
    plt = _plt()
    tasks = list(audit["overlap_tasks"])
    matrix = audit["overlap"]
    n = len(tasks)
    size = 1.3 + 1.05 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    values = [[_num(cell.get("jaccard")) for cell in row] for row in matrix]
    image = ax.imshow(values, vmin=0, vmax=1, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, cell in enumerate(row):
            j_value, chance = _num(cell.get("jaccard")), _num(cell.get("chance"))
            significant = cell.get("p_value") is not None and cell["p_value"] < 0.05 and i != j
            # the diagonal has no chance to beat: it shows the subset's size instead
            text = f"k = {cell.get('size_a')}" if i == j else f"{j_value:.2f} / {chance:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    fontweight="bold" if significant else "normal", color="white" if j_value > 0.6 else "black")
    ax.set_xticks(range(n), tasks)
    ax.set_yticks(range(n), tasks)
    _rotate_if_crowded(ax, tasks)
    fig.colorbar(image, ax=ax, label="Jaccard overlap")
    ax.set_title(f"Minimal-subset overlap at {audit.get('layer')}\n(J / chance; bold: above chance, p < 0.05; diagonal: subset size)",
                 fontsize=10)
    return _save(fig, path)


def draw_audit_ablation(audit: dict, path: Path) -> Path:
    """Per task: accuracy with every neuron, without the attribute's neurons, without random neurons."""
    plt = _plt()
    tasks_data = audit["ablation"]["tasks"]
    tasks = list(tasks_data)
    fig, ax = plt.subplots(figsize=(max(PANEL_W, 1.6 * len(tasks) + 1.5), PANEL_H + 0.3), layout="constrained")
    k = len(audit["ablation"].get("neurons", []))
    series = [("all neurons", [_num(tasks_data[t]["full"]) for t in tasks]),
              (f"{audit.get('attribute')} neurons removed ({k})",
               [_num(tasks_data[t]["removed_attribute_neurons"]) for t in tasks]),
              (f"{k} random neurons removed (mean ± SD)", [_num(tasks_data[t]["removed_random_mean"]) for t in tasks])]
    errors = [None, None, [_num(tasks_data[t].get("removed_random_std")) for t in tasks]]
    _grouped_bars(ax, tasks, series, errors)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("task (probe at the audited layer)")
    ax.set_ylabel("test accuracy (first fold)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=3)
    ax.set_title(f"Removing the {audit.get('attribute')} neurons of {audit.get('encoder')} at {audit.get('layer')} "
                 f"\n{ablation_mode_words(audit['ablation'].get('mode', 'mean'))}, no retraining", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# ablation


def _curve(ax: Any, x: list[float], top: list, mean: list, std: list, bottom: list) -> None:
    mean_f, std_f = [_num(m) for m in mean], [_num(s) for s in std]
    ax.plot(x, [_num(v) for v in top], marker="o", color=RED, label="top neurons")
    ax.plot(x, mean_f, marker="o", color="C0", label="random neurons (mean ± SD)")
    ax.fill_between(x, [m - s for m, s in zip(mean_f, std_f)], [m + s for m, s in zip(mean_f, std_f)],
                    color="C0", alpha=0.2, linewidth=0)
    ax.plot(x, [_num(v) for v in bottom], marker="o", color=GREY, label="bottom neurons")


def draw_ablation_curves(ablation: dict, path: Path) -> Path:
    """Removing neurons without retraining, and keeping only them with retraining, vs the fraction."""
    curves = ablation["ablation"]
    x = [100 * f for f in curves["fractions"]]
    fig, (left, right) = _panels(2)
    _curve(left, x, curves["removed_top"], curves["removed_random_mean"], curves["removed_random_std"],
           curves["removed_bottom"])
    _curve(right, x, curves["kept_top"], curves["kept_random_mean"], curves["kept_random_std"], curves["kept_bottom"])
    left.set_title(f"removed, no retraining:\n{ablation_mode_words(curves.get('mode'))}")
    right.set_title("kept alone, retrained")
    minimal = ablation.get("minimal_subset") or {}
    for ax in (left, right):
        if curves.get("full_accuracy") is not None:
            ax.axhline(curves["full_accuracy"], color="black", linewidth=1, linestyle="--", label="all neurons")
        if minimal.get("fraction") is not None:
            ax.axvline(100 * minimal["fraction"], color="C4", linestyle=":",
                       label=f"minimal subset (k={minimal.get('k')})")
        ax.set_xscale("log")
        ax.set_xlabel("% of neurons (log scale)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    left.set_ylabel("test accuracy")
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Ablation: {ablation.get('task')} in {ablation.get('encoder')} (layer {ablation.get('layer')}, "
                 f"{ablation.get('n_neurons', curves.get('n_features'))} neurons)")
    return _save(fig, path)


def _check_panel(ax: Any, check: dict) -> str:
    """A ranking's sanity curve: its top k kept alone and retrained, against k random and the bottom k;
    returns a note for the panel's title naming the small k where it is not better than random."""
    _curve(ax, check["ks"], check["top_test"], check["random_test_mean"], check["random_test_std"],
           check["bottom_test"])
    ax.set_xscale("log")
    ax.set_xlabel("neurons kept k (log scale)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    small = [(k, v) for k, v in zip(check["ks"], check.get("verdicts") or []) if k <= 10]
    if check.get("beats_random") is False:
        return "does NOT beat random at k <= 10"
    not_better = [str(k) for k, v in small if v != "better"]
    return f"not better than random at k = {', '.join(not_better)}" if not_better else ""


def draw_ranking_check(ablation: dict, path: Path) -> Path:
    """The ablation study's ranking against random neurons, kept alone and retrained, from one neuron up."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(PANEL_W + 1, PANEL_H + 0.3), layout="constrained")
    note = _check_panel(ax, ablation["check"])
    minimal = ablation.get("minimal_subset") or {}
    if minimal.get("k") is not None:
        ax.axvline(minimal["k"], color="C4", linestyle=":", label=f"minimal subset k={minimal['k']}")
    if minimal.get("random_k_median") is not None:
        ax.axvline(minimal["random_k_median"], color="C0", linestyle=":",
                   label=f"random neurons' k={minimal['random_k_median']:g}")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Ranking check ({ablation.get('method', 'weight')} ranking): {ablation.get('task')} in "
                 f"{ablation.get('encoder')} ({ablation.get('layer')})" + (f"\n{note}" if note else ""), fontsize=9)
    return _save(fig, path)


def draw_audit_checks(audit: dict, path: Path) -> Path:
    """Each audited task's ranking against random neurons at the audit's layer, one panel per task."""
    checks = audit["checks"]
    fig, axes = _panels(len(checks))
    for ax, (task, check) in zip(axes, checks.items()):
        note = _check_panel(ax, check)
        ax.set_title(f"{task}\n{note}" if note else task, fontsize=9)
    axes[0].set_ylabel("test accuracy (kept alone, retrained)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Ranking checks ({audit.get('method', 'weight')} ranking) at {audit.get('layer')} of "
                 f"{audit.get('encoder')}: top k vs k random neurons")
    return _save(fig, path)


def draw_minimal_subset(ablation: dict, path: Path) -> Path:
    """Validation accuracy of a probe on the top k neurons, and where it reaches the threshold."""
    plt = _plt()
    m = ablation["minimal_subset"]
    fig, ax = plt.subplots(figsize=(PANEL_W + 1, PANEL_H + 0.3), layout="constrained")
    ax.plot(m["curve_k"], [_num(v) for v in m["curve_accuracy"]], marker=".", color="C0", label="top-k probe")
    if m.get("full_accuracy") is not None:
        ax.axhline(m["full_accuracy"], color="black", linestyle="--", linewidth=1, label="all neurons")
    if m.get("threshold") is not None:
        target = m.get("target")
        ax.axhline(m["threshold"], color=RED, linewidth=1,
                   label=f"threshold ({100 * target:g}% of full)" if target else "threshold")
    ax.axvline(m["k"], color="C4", linestyle=":", label=f"minimal subset k={m['k']}")
    ax.set_xscale("log")
    ax.set_xlabel("number of top-ranked neurons k (log scale)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Minimal subset: {ablation.get('task')} in {ablation.get('encoder')} ({ablation.get('layer')})")
    return _save(fig, path)


def draw_ablation_layers(ablation: dict, path: Path) -> Path:
    """Which layers hold the top neurons of the all-layers ranking, relative to each layer's size."""
    plt = _plt()
    layers = ablation["layers"]
    names = [layer["name"] for layer in layers]
    counts = [ablation["top_counts"].get(name, 0) for name in names]
    shares = [100 * c / layer["dim"] if layer.get("dim") else float("nan") for c, layer in zip(counts, layers)]
    fig, ax = plt.subplots(figsize=(max(PANEL_W, 0.8 * len(names) + 2), PANEL_H), layout="constrained")
    bars = ax.bar(range(len(names)), shares, color="C0")
    ax.bar_label(bars, labels=[f"{c}" for c in counts], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), names)
    _rotate_if_crowded(ax, names)
    ax.set_xlabel("layer (bar label: number of top neurons)")
    ax.set_ylabel("% of the layer's neurons in the top")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Top {ablation.get('top_k')} neurons for {ablation.get('task')} per layer ({ablation.get('encoder')})",
                 fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# layer similarity


def draw_similarity(similarity: dict, path: Path) -> Path:
    """Layer x layer heatmap (rows: the first store's layers, columns: the second's), values printed."""
    plt = _plt()
    rows, cols = list(similarity["layers_a"]), list(similarity["layers_b"])
    values = [[_num(v) for v in row] for row in similarity["matrix"]]
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * len(cols), 1.3 + 0.6 * len(rows)), layout="constrained")
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    if len(rows) * len(cols) <= 400:  # numbers stay readable up to 20 x 20
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    _rotate_if_crowded(ax, cols)
    ax.set_xlabel(f"{similarity['encoder_b']} layer")
    ax.set_ylabel(f"{similarity['encoder_a']} layer")
    name = similarity["measure"].replace("_", " ").replace("cka", "CKA").replace("svcca", "SVCCA").replace("pwcca", "PWCCA")
    fig.colorbar(image, ax=ax, label=name)
    title = (f"{name} between the layers of {similarity['encoder_a']}" if similarity["within"]
             else f"{name}: {similarity['encoder_a']} vs {similarity['encoder_b']}")
    ax.set_title(f"{title}\n({similarity['n_utterances']} utterances)", fontsize=10)
    return _save(fig, path)


def similarity_figure_name(similarity: dict) -> str:
    name = f"similarity_{safe_name(similarity['encoder_a'])}"
    return name if similarity["within"] else f"{name}_vs_{safe_name(similarity['encoder_b'])}"


# --------------------------------------------------------------------------------------------------


def planned_figures(results: dict) -> dict[str, Callable[[Path], Path]]:
    """Figure name -> a function drawing it to a path, for every figure the results can support."""
    plan: dict[str, Callable[[Path], Path]] = {}
    sweep = results.get("sweep")
    if sweep and model_units(sweep):
        for task in sweep_tasks(sweep):
            plan[f"sweep_{safe_name(task)}"] = lambda p, t=task: draw_sweep_task(sweep, t, p)
        if any(s.get("selectivity") is not None for u in model_units(sweep) if selectivity_note(u) is None
               for s in u["layers"]):
            plan["selectivity"] = lambda p: draw_selectivity(sweep, p)
        if any(u.get("salient") for u in model_units(sweep)):
            plan["salient_layers"] = lambda p: draw_salient_layers(sweep, p)
        for matrix in sweep.get("similarity") or []:
            plan[similarity_figure_name(matrix)] = lambda p, m=matrix: draw_similarity(m, p)
        for unit in sweep.get("gradnap") or []:
            if unit.get("layers"):
                plan[gradnap_figure_name(unit)] = lambda p, u=unit: draw_gradnap(u, p)
        for entry in sweep.get("attribution") or []:  # drawn by the input-attribution block at the end
            if entry.get("utterances") and entry.get("folder"):
                record = entry["utterances"][0]
                plan[attribution_figure_name(entry)] = (
                    lambda p, r=record, f=Path(entry["folder"]) / record["maps_file"]: draw_attribution_file(r, f, p))
    audit = results.get("audit")
    if audit:
        if audit.get("groups"):
            plan["audit_groups"] = lambda p: draw_audit_groups(audit, p)
        if audit.get("overlap"):
            plan["overlap"] = lambda p: draw_overlap(audit, p)
        if (audit.get("ablation") or {}).get("tasks"):
            plan["audit_ablation"] = lambda p: draw_audit_ablation(audit, p)
        if audit.get("checks"):
            plan["audit_checks"] = lambda p: draw_audit_checks(audit, p)
    ablation = results.get("ablation")
    if ablation:
        if ablation.get("ablation"):
            plan["ablation_curves"] = lambda p: draw_ablation_curves(ablation, p)
        if ablation.get("check"):
            plan["ranking_check"] = lambda p: draw_ranking_check(ablation, p)
        if (ablation.get("minimal_subset") or {}).get("curve_k"):
            plan["minimal_subset"] = lambda p: draw_minimal_subset(ablation, p)
        if ablation.get("top_counts") and ablation.get("layers"):
            plan["ablation_layers"] = lambda p: draw_ablation_layers(ablation, p)
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
            _plt().close("all")
    return drawn


# --------------------------------------------------------------------------------------------------
# GradNAPs (`speechprobe gradnap` and the sweep's optional gradnap units)


def gradnap_figure_name(unit: dict) -> str:
    return f"gradnap_{safe_name(unit['encoder'])}_{safe_name(unit['task'])}"


def gradnap_focus(result: dict) -> Optional[dict]:
    """The layer whose profiles a heatmap shows: the most separating one, else the largest excess over chance."""
    layers = result.get("layers") or []
    if not layers:
        return None
    best = result.get("most_separating")
    return next((l for l in layers if l["layer"] == best), None) or max(layers, key=lambda l: _num(l.get("excess")))


def draw_gradnap(result: dict, path: Path, title: Optional[str] = None) -> Path:
    """A dendrogram of the group profiles per layer (top row) and one layer's profiles on its top neurons."""
    import numpy as np
    from scipy.cluster.hierarchy import dendrogram

    plt = _plt()
    layers = result["layers"]
    n = len(layers)
    focus = gradnap_focus(result)
    n_groups = len(focus["groups"])
    top_h = 2.2 + 0.08 * n_groups
    heat_h = 1.4 + 0.28 * n_groups
    fig = plt.figure(figsize=(max(2.7 * n, 7.5), top_h + heat_h + 0.6), layout="constrained")
    grid = fig.add_gridspec(2, n, height_ratios=[top_h, heat_h])
    for k, layer in enumerate(layers):
        ax = fig.add_subplot(grid[0, k])
        dendrogram(np.asarray(layer["linkage"], dtype=float), labels=layer["groups"], ax=ax,
                   orientation="right" if n_groups > 6 else "top", color_threshold=0, above_threshold_color=GREY,
                   leaf_font_size=7 if n_groups > 6 else 8)
        mark = "separates" if layer["separates"] else "n.s."
        accuracy = f"probe acc {100 * _num(layer['probe_accuracy']):.0f}%, " if layer.get("probe_accuracy") is not None else ""
        ax.set_title(f"{layer['layer']}\n{accuracy}p {_num(layer['p_value']):.3f} ({mark})\n"
                     f"separation {_num(layer['separation']):.3f} vs {_num(layer['null_mean']):.3f}", fontsize=8,
                     color=RED if layer["layer"] == focus["layer"] and layer["separates"] else "black")
        ax.tick_params(axis="x" if n_groups <= 6 else "y", labelrotation=90 if n_groups <= 6 else 0)
        if k == 0:
            (ax.set_xlabel if n_groups > 6 else ax.set_ylabel)("euclidean distance", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    order = [focus["groups"].index(g) for g in focus["leaves"]]
    if n_groups > 6:  # the dendrograms list their leaves bottom-up: top-down rows match them
        order = order[::-1]
    values = np.asarray(focus["top_profiles"], dtype=float)[order]
    limit = float(np.abs(values).max()) or 1.0
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_yticks(range(len(order)), [f"{focus['groups'][k]} ({focus['sizes'][k]})" for k in order], fontsize=8)
    ax.set_xticks(range(len(focus["top_neurons"])), [str(j) for j in focus["top_neurons"]], fontsize=7, rotation=90)
    ax.set_xlabel(f"neuron of {focus['layer']} (the {len(focus['top_neurons'])} with the largest |profile|)")
    fig.colorbar(image, ax=ax, label="GradNAP (spread units)")
    fig.suptitle(title or f"GradNAPs of {result.get('groups_column', 'groups')} groups: {result.get('encoder', '')}, "
                 f"{result.get('task', '')} probes", fontsize=10)
    return _save(fig, path)
# input attribution (experiments.attribution): the spectrogram with each method's map overlaid


def _log_spectrogram(wave: Any, hop: int = 160, n_fft: int = 400) -> Any:
    """A plain log power spectrogram (frames, bins) for showing a waveform-level map over."""
    import numpy as np

    wave = np.asarray(wave, dtype=np.float64)
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)
    return 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10)


def draw_attribution(info: dict, features: Any, maps: dict, path: Path) -> Path:
    """One panel per method: the utterance's spectrogram in grey, |attribution| overlaid in colour (feature-
    level maps), or its time envelope as a line (waveform-level maps); the randomisation correlation in
    each title. `info` is the command's attribution.json (feature kind, hop, rate, real frames, methods)."""
    import numpy as np

    plt = _plt()
    kind, hop, rate = info["feature_kind"], int(info["feature_hop"]), int(info["sample_rate"])
    real = int(info["real_frames"])
    features = np.asarray(features)
    if kind == "waveform":
        background = _log_spectrogram(features[:real])
        step = 160
    else:
        background = features[:real]
        if kind == "power-mel":
            background = 10 * np.log10(np.maximum(background, 1e-10))
        step = hop
    names = list(maps)
    fig, axes = plt.subplots(1, len(names), figsize=(PANEL_W * len(names) * 0.9, PANEL_H), squeeze=False)
    duration = (real if kind == "waveform" else background.shape[0] * step) / rate
    extent = (0, duration, 0, background.shape[1])
    for ax, name in zip(axes[0], names):
        ax.imshow(background.T, origin="lower", aspect="auto", cmap="gray", extent=extent)
        values = np.abs(np.asarray(maps[name], dtype=np.float64))
        if kind == "waveform":
            n = min(real, len(values)) // step
            envelope = values[: n * step].reshape(n, step).sum(axis=1) if n else values
            twin = ax.twinx()
            twin.plot((np.arange(len(envelope)) + 0.5) * step / rate, envelope / (envelope.max() or 1), color=RED, lw=1)
            twin.set_ylim(0, 1.05)
            twin.set_yticks([])
        else:
            overlay = values[:real]
            overlay = overlay / (np.quantile(overlay, 0.995) or overlay.max() or 1)
            ax.imshow(np.clip(overlay, 0, 1).T, origin="lower", aspect="auto", cmap="inferno",
                      alpha=np.clip(overlay, 0, 1).T ** 0.5 * 0.85, extent=extent)
        summary = info["methods"][name]
        rho = summary.get("randomisation_spearman")
        title = f"{name.replace('_', ' ')}\nrandomised-probe rank corr. {rho:.2f}" if rho is not None else name
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel("mel band" if kind != "waveform" else "frequency bin")
    fig.suptitle(f"{info['encoder']} {info['layer']}: {info['utterance']} -> {info['target']} "
                 f"(p = {info['probabilities'][info['target']]:.2f})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def draw_attribution_file(info: dict, maps_file: Path, path: Path) -> Path:
    """`draw_attribution` from a saved attribution.npz (features and map_<method> arrays)."""
    import numpy as np

    with np.load(maps_file) as data:
        maps = {m: data[f"map_{m}"] for m in info["methods"] if f"map_{m}" in data}
        return draw_attribution(info, data["features"], maps, path)


def attribution_figure_name(entry: dict) -> str:
    """The figure name of a sweep attribution unit's first utterance (`attribution_ge2e_gender`)."""
    return f"attribution_{safe_name(entry['encoder'])}_{safe_name(entry['task'])}"
