"""The ablation study's report section: the minimal subset, ablation curves, the ranking check."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from speechprobe.experiments.writing import (ablation_mode_words, check_table, closest_index, finite, join_words,
                                             kept_verdict, md_table, num, pct, removal_verdict, section_md)

def ablation_findings(ablation: dict, target: Any) -> list[str]:
    items = []
    where = "every layer concatenated" if ablation.get("layer") == "all" else f"layer {ablation.get('layer')}"
    items.append(f"A probe for {ablation.get('task')} on {ablation.get('encoder')} ({where}, "
                 f"{ablation.get('n_neurons')} neurons) reaches test accuracy {num(ablation.get('test_accuracy'))} "
                 f"(first fold); neurons are ranked by {ablation.get('method', 'weight')}.")
    m = ablation.get("minimal_subset") or {}
    if m:
        keep = f"keep {pct(m.get('target', target), 0)} of" if finite(m.get("target", target)) else "reach the target of"
        items.append((f"**Minimal subset**: the top {m['k']} neurons ({pct(m.get('fraction'))}) {keep} the full "
                      if m.get("reached", True) else
                      f"**Minimal subset**: the target was not reached; the search stopped at {m['k']} neurons "
                      f"({pct(m.get('fraction'))}) for ")
                     + f"probe's validation accuracy ({num(m.get('accuracy'))} vs {num(m.get('full_accuracy'))})."
                     + (f" Against random neurons: {m['summary']}." if m.get("summary") else ""))
    check = ablation.get("check")
    if check:
        items.append(f"**Ranking check** ({ablation.get('method', 'weight')} ranking, top k kept alone and retrained "
                     f"vs k random neurons): {check.get('summary')}.")
    c = ablation.get("ablation") or {}
    fractions = c.get("fractions") or []
    if fractions:
        i = closest_index(fractions, m.get("fraction"))
        f, k = fractions[i], (c.get("ks") or [None] * len(fractions))[i]
        mode = ablation_mode_words(c.get("mode"))
        items.append(
            f"**Top vs random vs bottom** at {pct(f, 0)} of the neurons ({k}; the fraction nearest the minimal subset): "
            f"removing them without retraining, by {mode}, gives top {num(c['removed_top'][i])}, random "
            f"{num(c['removed_random_mean'][i])} ± {num(c['removed_random_std'][i])}, bottom "
            f"{num(c['removed_bottom'][i])} (all neurons {num(c.get('full_accuracy'))}): removing the top ones is "
            f"{removal_verdict(c['removed_top'][i], c['removed_random_mean'][i], c['removed_random_std'][i])}. "
            f"Keeping only them and retraining gives top {num(c['kept_top'][i])}, random {num(c['kept_random_mean'][i])}"
            f" ± {num(c['kept_random_std'][i])}, bottom {num(c['kept_bottom'][i])}: "
            f"{kept_verdict(c['kept_top'][i], c['kept_random_mean'][i], c['kept_random_std'][i])}.")
        harmful = [pct(fr, 0) for fr, t, mu, sd in zip(fractions, c["removed_top"], c["removed_random_mean"],
                                                        c["removed_random_std"])
                   if removal_verdict(t, mu, sd).startswith("a larger drop")]
        items.append(f"Removing the top neurons by {mode} hurts more than removing random ones at " + join_words(harmful)
                     + " of the neurons." if harmful else
                     f"At no fraction does removing the top neurons by {mode} hurt more than removing random ones.")
    sentence = layers_sentence(ablation)
    if sentence:
        items.append(sentence)
    return items


def _even_share(ablation: dict, layer: str, dims: dict) -> str:
    """What a spread in proportion to layer size would put in ``layer``, as a yardstick."""
    total = sum(d for d in dims.values() if d)
    if not total or not dims.get(layer) or not finite(ablation.get("top_k")):
        return ""
    return f", vs {ablation['top_k'] * dims[layer] / total:.1f} expected from its size"


def layers_sentence(ablation: dict) -> str:
    counts, layers = ablation.get("top_counts") or {}, ablation.get("layers") or []
    if not counts or not layers:
        return ""
    dims = {layer["name"]: layer.get("dim") for layer in layers}
    most = max(counts.values())
    holders = [n for n, c in counts.items() if c == most]
    share = {n: c / dims[n] for n, c in counts.items() if dims.get(n)}
    densest = max(share, key=share.get) if share else None
    text = (f"**Which layers**: of the top {ablation.get('top_k')} neurons, {join_words(holders)} "
            f"{'holds' if len(holders) == 1 else 'hold'} the most ({most}{' each' if len(holders) > 1 else ''}"
            f"{_even_share(ablation, holders[0], dims)}); per layer "
            + ", ".join(f"{n} {c}" for n, c in counts.items()))
    if densest is not None and densest not in holders:
        text += f"; relative to layer size the densest is {densest} ({pct(share[densest])})"
    return text + "."


def ablation_tables(ablation: dict) -> list[str]:
    parts = []
    if ablation.get("check"):
        parts += [check_table({ablation.get("task"): ablation["check"]},
                              "### Ranking check: test accuracy of the top k neurons kept alone (random: mean ± SD "
                              "of 5 draws)")]
    c = ablation.get("ablation") or {}
    if c.get("fractions"):
        rows = [[pct(f, 0), k, num(t, 3), f"{num(rm, 3)} ± {num(rs, 3)}", num(b, 3), num(kt, 3),
                 f"{num(km, 3)} ± {num(ks, 3)}", num(kb, 3)]
                for f, k, t, rm, rs, b, kt, km, ks, kb in zip(
                    c["fractions"], c.get("ks") or [""] * len(c["fractions"]), c["removed_top"],
                    c["removed_random_mean"], c["removed_random_std"], c["removed_bottom"], c["kept_top"],
                    c["kept_random_mean"], c["kept_random_std"], c["kept_bottom"])]
        mode = ablation_mode_words(c.get("mode"))
        parts += [f"### Ablation curves: test accuracy; removal by {mode}, no retraining", md_table(
            ["% neurons", "k", "removed: top", "removed: random", "removed: bottom", "kept: top", "kept: random",
             "kept: bottom"], rows)]
    if ablation.get("top_counts") and ablation.get("layers"):
        parts += [f"### Top {ablation.get('top_k')} neurons per layer", md_table(
            ["layer", "neurons", "top neurons", "% of layer"],
            [[layer["name"], layer.get("dim"), ablation["top_counts"].get(layer["name"], 0),
              pct(ablation["top_counts"].get(layer["name"], 0) / layer["dim"]) if layer.get("dim") else "–"]
             for layer in ablation["layers"]])]
    return parts


def ablation_section(ablation: dict, figures: dict[str, Path], out: Path, target: Any) -> str:
    title = f"## Neuron ablation: {ablation.get('task')} in {ablation.get('encoder')} (layer {ablation.get('layer')})"
    mode = ablation_mode_words((ablation.get("ablation") or {}).get("mode"))
    captions = {"ablation_curves": f"Left: top / random / bottom neurons removed by {mode}, without retraining; right: "
                                   "kept alone and retrained; dotted: minimal subset",
                "ranking_check": "The ranking's top k neurons kept alone and retrained, against k random and the bottom "
                                 "k (test accuracy); dotted: the minimal subset's k and random neurons' k",
                "minimal_subset": "Validation accuracy of a probe on the top k neurons, with the threshold",
                "ablation_layers": "Where the top neurons live, relative to each layer's size"}
    return section_md(title, ablation_findings(ablation, target), ablation_tables(ablation), captions, figures, out)
