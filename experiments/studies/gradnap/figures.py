"""GradNAP figures: a dendrogram of the group profiles per layer, and one layer's profiles."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from speechprobe.experiments.plotting import as_float, GREY, pyplot, RED, safe_name, save_figure

def gradnap_figure_name(unit: dict) -> str:
    return f"gradnap_{safe_name(unit['encoder'])}_{safe_name(unit['task'])}"


def gradnap_focus(result: dict) -> Optional[dict]:
    """The layer whose profiles a heatmap shows: the most separating one, else the largest excess over chance."""
    layers = result.get("layers") or []
    if not layers:
        return None
    best = result.get("most_separating")
    return next((l for l in layers if l["layer"] == best), None) or max(layers, key=lambda l: as_float(l.get("excess")))


def draw_gradnap(result: dict, path: Path, title: Optional[str] = None) -> Path:
    """A dendrogram of the group profiles per layer (top row) and one layer's profiles on its top neurons."""
    import numpy as np
    from scipy.cluster.hierarchy import dendrogram

    plt = pyplot()
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
        accuracy = f"probe acc {100 * as_float(layer['probe_accuracy']):.0f}%, " if layer.get("probe_accuracy") is not None else ""
        ax.set_title(f"{layer['layer']}\n{accuracy}p {as_float(layer['p_value']):.3f} ({mark})\n"
                     f"separation {as_float(layer['separation']):.3f} vs {as_float(layer['null_mean']):.3f}", fontsize=8,
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
    return save_figure(fig, path)
