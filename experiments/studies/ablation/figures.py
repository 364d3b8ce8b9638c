"""The ablation study's figures: ablation curves, the ranking check, the minimal subset, where the top neurons live."""
from __future__ import annotations

from pathlib import Path

from speechprobe.experiments.plotting import (as_float, check_panel, curve, PANEL_H, PANEL_W, panels, pyplot, RED,
                                              rotate_if_crowded, save_figure)
from speechprobe.experiments.writing import ablation_mode_words

def draw_ablation_curves(ablation: dict, path: Path) -> Path:
    """Removing neurons without retraining, and keeping only them with retraining, vs the fraction."""
    curves = ablation["ablation"]
    x = [100 * f for f in curves["fractions"]]
    fig, (left, right) = panels(2)
    curve(left, x, curves["removed_top"], curves["removed_random_mean"], curves["removed_random_std"],
           curves["removed_bottom"])
    curve(right, x, curves["kept_top"], curves["kept_random_mean"], curves["kept_random_std"], curves["kept_bottom"])
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
    return save_figure(fig, path)


def draw_ranking_check(ablation: dict, path: Path) -> Path:
    """The ablation study's ranking against random neurons, kept alone and retrained, from one neuron up."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(PANEL_W + 1, PANEL_H + 0.3), layout="constrained")
    note = check_panel(ax, ablation["check"])
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
    return save_figure(fig, path)


def draw_minimal_subset(ablation: dict, path: Path) -> Path:
    """Validation accuracy of a probe on the top k neurons, and where it reaches the threshold."""
    plt = pyplot()
    m = ablation["minimal_subset"]
    fig, ax = plt.subplots(figsize=(PANEL_W + 1, PANEL_H + 0.3), layout="constrained")
    ax.plot(m["curve_k"], [as_float(v) for v in m["curve_accuracy"]], marker=".", color="C0", label="top-k probe")
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
    return save_figure(fig, path)


def draw_ablation_layers(ablation: dict, path: Path) -> Path:
    """Which layers hold the top neurons of the all-layers ranking, relative to each layer's size."""
    plt = pyplot()
    layers = ablation["layers"]
    names = [layer["name"] for layer in layers]
    counts = [ablation["top_counts"].get(name, 0) for name in names]
    shares = [100 * c / layer["dim"] if layer.get("dim") else float("nan") for c, layer in zip(counts, layers)]
    fig, ax = plt.subplots(figsize=(max(PANEL_W, 0.8 * len(names) + 2), PANEL_H), layout="constrained")
    bars = ax.bar(range(len(names)), shares, color="C0")
    ax.bar_label(bars, labels=[f"{c}" for c in counts], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), names)
    rotate_if_crowded(ax, names)
    ax.set_xlabel("layer (bar label: number of top neurons)")
    ax.set_ylabel("% of the layer's neurons in the top")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Top {ablation.get('top_k')} neurons for {ablation.get('task')} per layer ({ablation.get('encoder')})",
                 fontsize=10)
    return save_figure(fig, path)
