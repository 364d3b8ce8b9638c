"""Layer-similarity heatmaps."""
from __future__ import annotations

from pathlib import Path

from speechprobe.experiments.plotting import as_float, pyplot, rotate_if_crowded, safe_name, save_figure

def draw_similarity(similarity: dict, path: Path) -> Path:
    """Layer x layer heatmap (rows: the first store's layers, columns: the second's), values printed."""
    plt = pyplot()
    rows, cols = list(similarity["layers_a"]), list(similarity["layers_b"])
    values = [[as_float(v) for v in row] for row in similarity["matrix"]]
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * len(cols), 1.3 + 0.6 * len(rows)), layout="constrained")
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    if len(rows) * len(cols) <= 400:  # numbers stay readable up to 20 x 20
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    rotate_if_crowded(ax, cols)
    ax.set_xlabel(f"{similarity['encoder_b']} layer")
    ax.set_ylabel(f"{similarity['encoder_a']} layer")
    name = similarity["measure"].replace("_", " ").replace("cka", "CKA").replace("svcca", "SVCCA").replace("pwcca", "PWCCA")
    fig.colorbar(image, ax=ax, label=name)
    title = (f"{name} between the layers of {similarity['encoder_a']}" if similarity["within"]
             else f"{name}: {similarity['encoder_a']} vs {similarity['encoder_b']}")
    ax.set_title(f"{title}\n({similarity['n_utterances']} utterances)", fontsize=10)
    return save_figure(fig, path)


def similarity_figure_name(similarity: dict) -> str:
    name = f"similarity_{safe_name(similarity['encoder_a'])}"
    return name if similarity["within"] else f"{name}_vs_{safe_name(similarity['encoder_b'])}"
