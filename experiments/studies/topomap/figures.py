"""The topographic map figure: one per encoder x task x layer, small multiples on one layout.

One panel per label group (its profile: red where the group's utterances activate the neuron more than the
average utterance, blue where less; one diverging scale centred at 0, shared by the groups), then a panel of the
probe's weight magnitude with the salient neurons (the top of the probe's ranking) outlined. The salient neurons
are outlined on the group panels too, so a reader sees whether they sit where a group lights up."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speechprobe.experiments.plotting import as_float, pyplot, safe_name, save_figure

PANEL = 3.0  # inches per map panel
COLUMNS = 4


def figure_name(entry: dict) -> str:
    return f"topomap_{safe_name(entry['encoder'])}_{safe_name(entry['task'])}_{safe_name(entry['layer'])}"


def _p(p: object) -> str:
    value = as_float(p)
    return "–" if not np.isfinite(value) else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def _image(layout: dict, values: list) -> np.ndarray:
    from speechprobe.probing.topography import NeuronLayout

    return NeuronLayout.from_dict(layout).image(np.array([as_float(v) for v in values]))


def _outline(ax: object, layout: dict, neurons: list[int], colour: str, width: float) -> None:
    """A square around each of ``neurons``' cells (about a cell wide at the panel's size)."""
    positions = np.asarray(layout["positions"], dtype=float).reshape(-1, 2)
    if neurons:
        chosen = positions[np.asarray(neurons, dtype=int)]
        side = 0.7 * PANEL * 72 / max(layout["shape"])  # points per cell, less the margins the colorbars take
        ax.scatter(chosen[:, 1], chosen[:, 0], marker="s", s=side ** 2, facecolors="none", edgecolors=colour,
                   linewidths=width)


def _bare(ax: object) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def draw_topomap(entry: dict, path: Path) -> Path:
    import matplotlib.colors as colors

    plt = pyplot()
    layout = entry["layout"]
    groups = entry["groups"]
    n = len(groups) + 1
    cols = min(n, COLUMNS)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL * cols + 1.2, PANEL * rows + 1.0), squeeze=False,
                             layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    salient = [int(i) for i in entry.get("salient_neurons") or []]

    images = [_image(layout, g["profile"]) for g in groups]
    finite = np.concatenate([im[np.isfinite(im)] for im in images]) if images else np.zeros(1)
    limit = float(np.max(np.abs(finite))) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    diverging = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    norm = colors.TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    shown = None
    for ax, group, image in zip(flat, groups, images):
        shown = ax.imshow(image, cmap=diverging, norm=norm, interpolation="nearest")
        _outline(ax, layout, salient, "black", 0.6)
        _bare(ax)
        ax.set_title(f"{group['group']} ({group['size']} utt.)\n"
                     f"Moran's I {as_float(group['moran_i']):.2f}, p {_p(group['moran_p_value'])}", fontsize=8)
    unit = "GradNAP (SD units)" if entry.get("profile_kind") == "gradnap" else "group mean − overall mean (SD units)"
    if shown is not None:
        fig.colorbar(shown, ax=flat[:len(groups)], shrink=0.8, label=unit)

    ax = flat[len(groups)]
    sequential = plt.get_cmap("viridis").with_extremes(bad="white")
    weights = ax.imshow(_image(layout, entry["weights"]), cmap=sequential, interpolation="nearest")
    _outline(ax, layout, salient, "#ff3b30", 1.2)
    _bare(ax)
    test = entry["salient"]
    ax.set_title(f"probe |w| (top {entry['k']} of {entry['method']} ranking outlined)\n"
                 f"NN ratio {as_float(test.get('nn_ratio')):.2f}, p {_p(test.get('nn_p_value'))}; "
                 f"Moran's I {as_float(entry['weight_moran']['moran_i']):.2f}", fontsize=8)
    # below its panel, so that the panel's column stays as wide as the others
    fig.colorbar(weights, ax=ax, shrink=0.8, location="bottom", label="probe |w| (standardised units)")
    quality = entry["layout_summary"]["quality"]
    rows_, cols_ = entry["layout_summary"]["shape"]
    fig.suptitle(f"{entry['encoder']} / {entry['task']} at {entry['layer']}: {entry['n_neurons']} neurons on a "
                 f"{rows_} x {cols_} grid, neighbours correlate (held-out gain {as_float(quality['gain']):.3f}, "
                 f"random {as_float(quality['random_gain']):.3f})", fontsize=9)
    return save_figure(fig, path)
