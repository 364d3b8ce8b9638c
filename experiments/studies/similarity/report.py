"""The layer-similarity subsection of the sweep's report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from speechprobe.experiments.studies.similarity.figures import similarity_figure_name
from speechprobe.experiments.writing import bullets, figures_block, num

def _measure_name(measure: str) -> str:
    return {"linear_cka": "linear CKA", "rbf_cka": "RBF CKA", "svcca": "SVCCA", "pwcca": "PWCCA"}.get(measure, measure)


def _diagonal(matrix: dict) -> Optional[list[tuple[str, float]]]:
    """Layer-by-layer similarity of two encoders with the same layer names (a model and its twin)."""
    if matrix["within"] or matrix["layers_a"] != matrix["layers_b"]:
        return None
    return [(name, matrix["matrix"][i][i]) for i, name in enumerate(matrix["layers_a"])]


def _adjacent(matrix: dict) -> list[tuple[str, str, float]]:
    """Similarity of each layer to the next within one encoder (where the representation changes most)."""
    names = matrix["layers_a"]
    return [(names[i], names[i + 1], matrix["matrix"][i][i + 1]) for i in range(len(names) - 1)]


def similarity_sentence(matrix: dict) -> str:
    """What one similarity matrix says, in words: where an encoder changes, or where it departs from random."""
    measure = _measure_name(matrix["measure"])
    if matrix["within"]:
        steps = _adjacent(matrix)
        if not steps:
            return ""
        low, high = min(steps, key=lambda s: s[2]), max(steps, key=lambda s: s[2])
        names = matrix["layers_a"]
        return (f"Within {matrix['encoder_a']} ({measure}, {matrix['n_utterances']} utterances), consecutive layers "
                f"are least alike from {low[0]} to {low[1]} ({num(low[2])}), where the representation changes most, "
                f"and most alike from {high[0]} to {high[1]} ({num(high[2])}); first vs last layer: "
                f"{num(matrix['matrix'][0][len(names) - 1])}.")
    pairs = _diagonal(matrix)
    if not pairs:
        best = max(range(len(matrix["layers_a"])), key=lambda i: max(matrix["matrix"][i]))
        j = max(range(len(matrix["layers_b"])), key=lambda j: matrix["matrix"][best][j])
        return (f"{matrix['encoder_a']} vs {matrix['encoder_b']} ({measure}): the closest pair is "
                f"{matrix['layers_a'][best]} and {matrix['layers_b'][j]} ({num(matrix['matrix'][best][j])}).")
    low, high = min(pairs, key=lambda p: p[1]), max(pairs, key=lambda p: p[1])
    return (f"{matrix['encoder_a']} against {matrix['encoder_b']}, layer by layer ({measure}): most alike at "
            f"{high[0]} ({num(high[1])}), least at {low[0]} ({num(low[1])}), the layer training moved furthest "
            f"from what the architecture computes with random weights.")


def similarity_block(matrices: list[dict], figures: dict[str, Path], out: Path) -> list[str]:
    if not matrices:
        return []
    captions = {}
    for m in matrices:
        what = (f"between the layers of {m['encoder_a']}" if m["within"]
                else f"between the layers of {m['encoder_a']} (rows) and {m['encoder_b']} (columns)")
        captions[similarity_figure_name(m)] = f"{_measure_name(m['measure'])} {what}"
    parts = ["### Layer similarity", bullets([s for m in matrices if (s := similarity_sentence(m))])]
    block = figures_block([*captions], figures, out, captions)
    return parts + ([block] if block else [])
