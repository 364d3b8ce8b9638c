"""The bias audit's figures: group accuracies, subset overlaps, ablation of the attribute's neurons, ranking checks."""
from __future__ import annotations

from pathlib import Path

from speechprobe.experiments.plotting import (as_float, check_panel, ci_label, grouped_bars, interval_bounds,
                                              interval_value, PANEL_H, PANEL_W, panels, pyplot, RED,
                                              rotate_if_crowded, save_figure)
from speechprobe.experiments.writing import ablation_mode_words

def draw_audit_groups(audit: dict, path: Path) -> Path:
    """The other tasks' accuracy per attribute group, the gap and whether it is flagged."""
    tasks = list(audit["groups"])
    fig, axes = panels(len(tasks), width=3.8)
    for ax, task in zip(axes, tasks):
        g = audit["groups"][task]
        groups = list(g["groups"])
        values = [as_float(interval_value(g["accuracy"][k])) for k in groups]
        bounds = [interval_bounds(g["accuracy"][k]) for k in groups]
        err = [[max(0.0, v - as_float(lo)) for v, (lo, _) in zip(values, bounds)],
               [max(0.0, as_float(hi) - v) for v, (_, hi) in zip(values, bounds)]]
        colors = [RED if g.get("flagged") and k == g.get("worst_group") else "C0" for k in groups]
        ax.bar(range(len(groups)), values, yerr=err, capsize=4, color=colors)
        ax.set_xticks(range(len(groups)), groups)
        gap = g["gap"]
        lo, hi = interval_bounds(gap)
        text = f"gap {as_float(interval_value(gap)):.2f} [{as_float(lo):.2f}, {as_float(hi):.2f}]"
        flagged = bool(g.get("flagged"))
        ax.set_title(f"{task} (at {g.get('layer')})\n{text}{' *' if flagged else ''}",
                     color=RED if flagged else "black", fontsize=10)
        ax.set_xlabel(audit.get("attribute", "group"))
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"test accuracy ({ci_label(audit)})")
    fig.suptitle(f"Accuracy per {audit.get('attribute')} group ({audit.get('encoder')})\n"
                 "* the gap's interval excludes 0", fontsize=11)
    return save_figure(fig, path)


def draw_overlap(audit: dict, path: Path) -> Path:
    """Jaccard overlap of the tasks' minimal subsets, each cell 'J / chance' (bold: p < 0.05)."""
    plt = pyplot()
    tasks = list(audit["overlap_tasks"])
    matrix = audit["overlap"]
    n = len(tasks)
    size = 1.3 + 1.05 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    values = [[as_float(cell.get("jaccard")) for cell in row] for row in matrix]
    image = ax.imshow(values, vmin=0, vmax=1, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, cell in enumerate(row):
            j_value, chance = as_float(cell.get("jaccard")), as_float(cell.get("chance"))
            significant = cell.get("p_value") is not None and cell["p_value"] < 0.05 and i != j
            # the diagonal has no chance to beat: it shows the subset's size instead
            text = f"k = {cell.get('size_a')}" if i == j else f"{j_value:.2f} / {chance:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    fontweight="bold" if significant else "normal", color="white" if j_value > 0.6 else "black")
    ax.set_xticks(range(n), tasks)
    ax.set_yticks(range(n), tasks)
    rotate_if_crowded(ax, tasks)
    fig.colorbar(image, ax=ax, label="Jaccard overlap")
    ax.set_title(f"Minimal-subset overlap at {audit.get('layer')}\n(J / chance; bold: above chance, p < 0.05; diagonal: subset size)",
                 fontsize=10)
    return save_figure(fig, path)


def draw_audit_ablation(audit: dict, path: Path) -> Path:
    """Per task: accuracy with every neuron, without the attribute's neurons, without random neurons."""
    plt = pyplot()
    tasks_data = audit["ablation"]["tasks"]
    tasks = list(tasks_data)
    fig, ax = plt.subplots(figsize=(max(PANEL_W, 1.6 * len(tasks) + 1.5), PANEL_H + 0.3), layout="constrained")
    k = len(audit["ablation"].get("neurons", []))
    series = [("all neurons", [as_float(tasks_data[t]["full"]) for t in tasks]),
              (f"{audit.get('attribute')} neurons removed ({k})",
               [as_float(tasks_data[t]["removed_attribute_neurons"]) for t in tasks]),
              (f"{k} random neurons removed (mean ± SD)", [as_float(tasks_data[t]["removed_random_mean"]) for t in tasks])]
    errors = [None, None, [as_float(tasks_data[t].get("removed_random_std")) for t in tasks]]
    grouped_bars(ax, tasks, series, errors)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("task (probe at the audited layer)")
    ax.set_ylabel("test accuracy (first fold)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=3)
    ax.set_title(f"Removing the {audit.get('attribute')} neurons of {audit.get('encoder')} at {audit.get('layer')} "
                 f"\n{ablation_mode_words(audit['ablation'].get('mode', 'mean'))}, no retraining", fontsize=10)
    return save_figure(fig, path)


def draw_audit_checks(audit: dict, path: Path) -> Path:
    """Each audited task's ranking against random neurons at the audit's layer, one panel per task."""
    checks = audit["checks"]
    fig, axes = panels(len(checks))
    for ax, (task, check) in zip(axes, checks.items()):
        note = check_panel(ax, check)
        ax.set_title(f"{task}\n{note}" if note else task, fontsize=9)
    axes[0].set_ylabel("test accuracy (kept alone, retrained)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Ranking checks ({audit.get('method', 'weight')} ranking) at {audit.get('layer')} of "
                 f"{audit.get('encoder')}: top k vs k random neurons")
    return save_figure(fig, path)
