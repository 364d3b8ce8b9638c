"""The checkpoint comparison's figure: per layer, the relative weight change (bars) and linear CKA (a line, on its
own axis), then one panel per task with the probe accuracy of A and B (intervals) and the majority class."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speechprobe.experiments.plotting import (as_float, GREY, interval_bounds, panels, RED, rotate_if_crowded,
                                              safe_name, save_figure)
from speechprobe.experiments.writing import sig


def figure_name(result: dict) -> str:
    return f"compare_{safe_name(result['encoder_a'])}_vs_{safe_name(result['encoder_b'])}"


def _errors(intervals: list[dict], values: np.ndarray) -> np.ndarray:
    bounds = np.array([[as_float(v) for v in interval_bounds(i)] for i in intervals], dtype=float).reshape(-1, 2)
    return np.abs(np.vstack([values - bounds[:, 0], bounds[:, 1] - values]))


def draw_compare(result: dict, path: Path) -> Path:
    layers = [row["layer"] for row in result["layers"]]
    x = np.arange(len(layers))
    tasks = result.get("tasks") or []
    fig, axes = panels(1 + len(tasks), sharey=False)
    a, b = result["encoder_a"], result["encoder_b"]

    ax = axes[0]
    change = [as_float(row.get("relative")) for row in result["layers"]]
    ax.bar(x, change, color="C0", alpha=0.75, label="relative weight change ||B − A|| / ||A||")
    ax.axhline(0.0, color="black", linewidth=0.8)
    # scaled to the largest change (a fine-tune moves weights by 1e-4..1e-3: on a 0-1 axis the bars vanish),
    # each bar labelled with its value
    largest = float(np.nanmax(change + [0.0]))
    top = largest if largest > 0 else 1.0
    ax.set_ylim(0, top * 1.7)  # headroom for the legend above the bars and their labels
    for position, value in zip(x, change):
        if np.isfinite(value):
            ax.annotate(sig(value), (position, value), xytext=(0, 2), textcoords="offset points", ha="center",
                        fontsize=6, color="C0")
    ax.set_ylabel("relative weight change (0: identical)", color="C0")
    ax.set_xticks(x, layers)
    rotate_if_crowded(ax, layers)
    ax.set_xlabel("layer")
    twin = ax.twinx()
    twin.plot(x, [as_float(row.get("cka")) for row in result["layers"]], marker="o", color=RED,
              label="linear CKA of A and B (1: alike)")
    twin.set_ylim(0, 1.4)
    twin.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    twin.set_ylabel("linear CKA", color=RED)
    handles = [*ax.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left")
    ax.set_title(f"weights and representations\n({result['n_utterances']} utterances)", fontsize=9)

    for ax, task in zip(axes[1:], tasks):
        rows = task["layers"]
        shown = [layers.index(row["layer"]) for row in rows if row["layer"] in layers]
        for key, name, colour, shift in (("a", a, "black", -0.06), ("b", b, "C1", 0.06)):
            values = np.array([as_float(row[key].get("value")) for row in rows])
            ax.errorbar(np.array(shown) + shift, values, yerr=_errors([row[key] for row in rows], values),
                        marker="o", color=colour, capsize=3, label=f"{'A' if key == 'a' else 'B'}: {name}")
        ax.plot(shown, [as_float(row["majority_a"]) for row in rows], color=GREY, linestyle=":",
                label="majority class")
        ax.set_xticks(x, layers)
        rotate_if_crowded(ax, layers)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{task['task']} test accuracy")
        ax.grid(alpha=0.3)
        ax.set_title(task["task"], fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{a} (A) vs {b} (B), per layer", fontsize=10)
    return save_figure(fig, path)
