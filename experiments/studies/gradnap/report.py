"""The GradNAP subsection of the sweep's report."""
from __future__ import annotations

from pathlib import Path

from speechprobe.experiments.studies.gradnap.figures import gradnap_figure_name
from speechprobe.experiments.writing import bullets, figure_md, join_words, md_table, num, pct, set_text

def gradnap_sentence(unit: dict) -> str:
    """Which layer separates the unit's groups most (above the permutation null), and how the groups cluster."""
    layers = unit.get("layers") or []
    if not layers:
        return f"{unit.get('encoder')} / {unit.get('task')}: no GradNAPs"
    first = layers[0]
    head = (f"**{unit['encoder']} / {unit['task']}** ({len(first['groups'])} {unit.get('groups_column')} groups, "
            f"{unit.get('n_utterances')} utterances, alpha {first.get('alpha')}, {first.get('n_permutations')} "
            f"permutations of {'whole speakers' if first.get('permuted') == 'blocks' else 'utterances'}): ")
    best = next((l for l in layers if l["layer"] == unit.get("most_separating")), None)
    if best is None:
        low = min(layers, key=lambda l: l["p_value"])
        return head + (f"no layer separates the groups above chance (smallest p = {num(low['p_value'], 3)}, at "
                       f"{low['layer']}; separation {num(low['separation'], 3)} vs {num(low['null_mean'], 3)} shuffled).")
    others = [l["layer"] for l in layers if l["separates"] and l is not best]
    left, right = best["root_split"]
    return head + (f"{best['layer']} separates them most (its probes: {pct(best.get('probe_accuracy'))} accuracy): the groups explain {pct(best['separation'])} of its "
                   f"relevance variance against {pct(best['null_mean'])} with shuffled groups (p = "
                   f"{num(best['p_value'], 3)})" + (f"; also above chance: {join_words(others)}" if others else "")
                   + (f". In {best['layer']} the dendrogram's first split is {set_text(left)} vs {set_text(right)}, and "
                      f"{best['closest_pair'][0]} and {best['closest_pair'][1]} have the most similar profiles."
                      if len(best["groups"]) > 2 else "."))


def gradnap_table(unit: dict) -> str:
    return md_table(["layer", "probe accuracy", "separation", "shuffled", "p", "separates", "first split", "closest pair"],
                    [[l["layer"], pct(l.get("probe_accuracy")), num(l["separation"], 3), num(l["null_mean"], 3), num(l["p_value"], 3),
                      "yes" if l["separates"] else "no", f"{set_text(l['root_split'][0])} vs {set_text(l['root_split'][1])}" if len(l["groups"]) > 2 else "–",
                      " & ".join(l["closest_pair"]) if len(l["groups"]) > 2 else "–"] for l in unit.get("layers") or []])


def gradnap_subsection(units: list[dict], figures: dict[str, Path], out: Path) -> str:
    parts = ["### GradNAPs",
             "Gradient-adjusted neuron activation profiles (Krug & Stober 2020): per layer, each utterance's neuron "
             "relevance (activation x gradient of the log-probability the task's probe gives its prediction, from "
             "a probe that never saw the utterance) averaged per label group, relative to all utterances, in units "
             "of the spread. *Separation*: the share of the relevance variance that the groups explain (mean over "
             "neurons); a layer *separates* the groups only when the permutation test says so.",
             bullets([gradnap_sentence(unit) for unit in units])]
    for unit in units:
        if unit.get("layers"):
            parts += [f"#### {unit['encoder']} / {unit['task']}", gradnap_table(unit)]
            name = gradnap_figure_name(unit)
            block = figure_md(name, figures, out, f"GradNAPs of the {unit['task']} groups in {unit['encoder']}: "
                                                  "a dendrogram per layer, the profiles of the most separating layer")
            if block:
                parts.append(block)
    return "\n\n".join(parts)
