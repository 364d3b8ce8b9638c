"""The intervention study's figures: the trade-off between removing the attribute and what it costs, and the
attribute's accuracy layer by layer after each intervention."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speechprobe.experiments.plotting import as_float, GREY, PANEL_H, PANEL_W, panels, pyplot, RED, save_figure

_STYLE = {  # kind -> marker, colour, filled
    "none": ("*", "black", True),
    "top": ("o", RED, True),
    "random": ("o", "C0", False),
    "leace": ("D", "C2", True),
    "random_directions": ("D", "C2", False),
}


def draw_tradeoff(result: dict, path: Path) -> Path:
    """x: the attribute's accuracy at the last layer after removal (retrained probe); y: the own job's cost (EER or
    WER increase over no intervention, or the other tasks' mean accuracy drop); top-k vs random-k, LEACE vs random
    directions, and the no-intervention point."""
    plt = pyplot()
    trade = result["tradeoff"]
    fig, ax = plt.subplots(figsize=(PANEL_W + 1.6, PANEL_H + 0.6), layout="constrained")
    seen = set()
    for point in trade["points"]:
        x, y = as_float(point["x"]), as_float(point["y"])
        if np.isnan(x) or np.isnan(y):
            continue
        marker, colour, filled = _STYLE.get(point["kind"], ("o", GREY, True))
        label = {"none": "no intervention", "top": "top-k neurons", "random": "random-k neurons (mean ± SD)",
                 "leace": "LEACE", "random_directions": "random directions (mean ± SD)"}.get(point["kind"])
        ax.errorbar(x, y, xerr=point.get("x_std") or None, yerr=point.get("y_std") or None, fmt=marker,
                    color=colour, markerfacecolor=colour if filled else "white", markersize=9 if marker == "*" else 7,
                    capsize=3, label=None if label in seen else label)
        seen.add(label)
        if point["kind"] in ("top", "random"):
            ax.annotate(f"k={point['k']}" + (f" {point['mode']}" if len(result.get("modes") or []) > 1 else ""),
                        (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour)
    if trade.get("majority") is not None:
        ax.axvline(trade["majority"], color=GREY, linestyle=":", linewidth=1, label="majority class")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(trade["x_label"])
    ax.set_ylabel(trade["y_label"] + " over no intervention")
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"Removing {result['attribute']} at {result['layer']} of {result['encoder']}:\n"
                 "left = removed, up = costly", fontsize=10)
    return save_figure(fig, path)


def _series(result: dict) -> list[tuple[str, str, dict, list]]:
    """(label, kind, target condition, null conditions) per comparison, after the no-intervention line."""
    by_name = {c["name"]: c for c in result["conditions"]}
    none = next(c for c in result["conditions"] if c["kind"] == "none")
    out = [("no intervention", "none", none, [])]
    for comp in result["comparisons"]:
        label = "LEACE" if comp["what"] == "erasure" else \
            f"top {comp['k']}{' (minimal)' if comp['minimal'] else ''}, {comp['mode']}"
        out.append((label, "leace" if comp["what"] == "erasure" else "top", by_name[comp["target"]],
                    [by_name[n] for n in comp["null"]]))
    return out


def draw_layers(result: dict, path: Path) -> Path:
    """The attribute's test accuracy at every layer from L on, for each condition: retrained on the intervened
    store (left: is it still there?) and read by the plain store's probes unchanged (right: does a fixed reader
    still find it?); random neurons / directions as mean ± SD of their draws."""
    layers = result["layers"]
    fig, (left, right) = panels(2, width=PANEL_W + 0.6)
    x = np.arange(len(layers))
    palette = [RED, "C1", "C4", "C5", "C6", "C8", "C9"]
    colours = iter(palette * 4)
    for label, kind, target, null in _series(result):
        colour = "black" if kind == "none" else "C2" if kind == "leace" else next(colours)
        for ax, key in ((left, "retrained"), (right, "fixed")):
            def read(c: dict) -> list[float]:
                return [as_float(row["accuracy"]["value"] if key == "retrained" else row.get("fixed_probe_accuracy"))
                        for row in c["attribute"]]
            ax.plot(x, read(target), marker="o", color=colour, label=label,
                    linewidth=2 if kind == "none" else 1.5)
            if null:
                values = np.array([read(c) for c in null])
                mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
                ax.plot(x, mean, marker=".", color=colour, linestyle="--",
                        label=f"  its null ({'random directions' if kind == 'leace' else 'random neurons'})")
                ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.12, linewidth=0)
    majority = [as_float(row["majority_accuracy"]) for row in result["conditions"][0]["attribute"]]
    for ax, title in ((left, "retrained on the intervened store"), (right, "plain probes, not retrained")):
        ax.plot(x, majority, color=GREY, linestyle=":", label="majority class")
        ax.set_xticks(x, layers)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(f"layer (intervention at {result['layer']})")
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=9)
    left.set_ylabel(f"{result['attribute']} test accuracy")
    right.legend(fontsize=6, loc="lower left")
    fig.suptitle(f"{result['attribute']} after removal at {result['layer']} ({result['encoder']})", fontsize=10)
    return save_figure(fig, path)
