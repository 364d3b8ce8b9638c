"""The topographic maps' report section: per encoder / task, the layer, whether the layout beats random placement
on held-out utterances, how stable it is, whether the salient neurons gather on it and which maps are smooth,
each against its permutation null."""
from __future__ import annotations

from pathlib import Path

from speechprobe.experiments.studies.topomap.figures import figure_name
from speechprobe.experiments.writing import (finite, ival, join_words, md_table, num, p_value_text, section_md,
                                             vs_majority)

N_SD = 2.0  # the layout beats random placement when its held-out gain is this many SDs above the random gain's mean


def p_words(p: object) -> str:
    """"p = 0.03" or "p < 0.001"."""
    text = p_value_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _chosen(entry: dict) -> str:
    if entry.get("chosen") == "best":
        return "the sweep's best layer for the task"
    if entry.get("chosen") == "all":
        return "one of every layer"
    return "the layer asked for" + ("" if entry.get("best_layer") in (None, entry["layer"]) else
                                    f"; the sweep's best is {entry['best_layer']}")


def quality_words(entry: dict) -> str:
    summary = entry["layout_summary"]
    q, q_in = summary["quality"], summary["quality_in_sample"]
    beats = (finite(q.get("gain")) and finite(q.get("random_gain")) and finite(q.get("random_gain_std"))
             and q["gain"] > q["random_gain"] + N_SD * q["random_gain_std"])
    verdict = ("better than random placement" if beats else
               "no better than random placement: the map's structure may be sampling noise")
    return (f"on {summary['n_test']} held-out utterances grid neighbours correlate {num(q.get('gain'), 3)} more than "
            f"the average pair of neurons (random placement: {num(q.get('random_gain'), 3)} ± "
            f"{num(q.get('random_gain_std'), 3)}, z = {num(q.get('z'), 1)}), {verdict}; in sample (the "
            f"{summary['n_train']} training utterances it was built from) {num(q_in.get('gain'), 3)}")


def stability_words(entry: dict) -> str:
    s = entry["layout_summary"]["stability"]
    return (f"layouts from {len(s.get('seeds') or [])} seeds, each on a random half of the training utterances, "
            f"agree with Spearman {num(s.get('mean'), 2)} (lowest pair {num(s.get('min'), 2)}; 1 = the same map up to "
            "rotation and reflection, 0 = unrelated)")


def salient_words(entry: dict, alpha: float) -> str:
    t = entry["salient"]
    head = (f"the top {entry['k']} neurons of the {entry['method']} ranking ({100 * entry['top_fraction']:g}%) "
            f"lie {num(t.get('nn_distance'), 2)} cells from their nearest salient neighbour against "
            f"{num(t.get('nn_null_mean'), 2)} for as many neurons placed at random (ratio {num(t.get('nn_ratio'), 2)}, "
            f"{p_words(t.get('nn_p_value'))})")
    p = t.get("nn_p_value")
    if finite(p) and p < alpha:
        return head + ": they **gather** on the map"
    if finite(t.get("nn_ratio")) and t["nn_ratio"] > 1:
        return head + ": they do not gather (if anything they are spread out)"
    return head + ": no evidence that they gather more than random neurons"


def _smooth(row: dict, alpha: float) -> bool:
    return (finite(row.get("moran_p_value")) and row["moran_p_value"] < alpha and finite(row.get("moran_i"))
            and finite(row.get("moran_expected")) and row["moran_i"] > row["moran_expected"])


def smooth_words(entry: dict, alpha: float) -> str:
    w = entry["weight_moran"]
    weight = (f"the probe-weight map is {'spatially smooth' if _smooth(w, alpha) else 'not smoother than shuffled'} "
              f"(Moran's I {num(w.get('moran_i'), 2)}, {p_words(w.get('moran_p_value'))})")
    groups = entry.get("groups") or []
    smooth = [f"{g['group']} (I {num(g.get('moran_i'), 2)}, {p_words(g.get('moran_p_value'))})"
              for g in groups if _smooth(g, alpha)]
    rough = [f"{g['group']} (I {num(g.get('moran_i'), 2)}, {p_words(g.get('moran_p_value'))})"
             for g in groups if not _smooth(g, alpha)]
    kind = "GradNAP" if entry.get("profile_kind") == "gradnap" else "activation"
    parts = [weight]
    if smooth:
        parts.append(f"smooth {kind} profiles: {join_words(smooth)}")
    if rough:
        parts.append(f"not smoother than shuffled: {join_words(rough)}")
    return "; ".join(parts)


def entry_words(entry: dict, alpha: float) -> str:
    summary = entry["layout_summary"]
    rows, cols = summary["shape"]
    accuracy = entry.get("accuracy")
    score = ""
    if isinstance(accuracy, dict):
        against = vs_majority(accuracy, entry.get("majority_accuracy"))
        score = f"; the probe there: {ival(accuracy)}" + (f", {against}" if against else "")
    return (f"**{entry['encoder']} / {entry['task']} at {entry['layer']}** ({_chosen(entry)}; {entry['n_neurons']} "
            f"neurons on a {rows} x {cols} grid{score}). Layout: {quality_words(entry)}; {stability_words(entry)}. "
            f"Clustering: {salient_words(entry, alpha)}; {smooth_words(entry, alpha)}.")


def method_words(result: dict) -> str:
    maps = result.get("maps") or []
    splits = sorted({m["layout_summary"]["split_task"] for m in maps})
    n_tests = sum(2 + len(m.get("groups") or []) for m in maps)
    kinds = {m.get("profile_kind") for m in maps}
    colours = []
    if "activation" in kinds or None in kinds:
        colours.append("on activation maps, red: the group's utterances activate the neuron more than the average "
                       "utterance, blue: less")
    if "gradnap" in kinds:
        colours.append("on GradNAP maps (the run's sweep computes GradNAPs), red: the neuron matters more to the "
                       "probe's prediction for the group's utterances than on average (activation x gradient, "
                       "in SD units), blue: less")
    return (f"How the maps are made: each layer's neurons are placed one per grid cell so that neighbours correlate "
            f"over the utterances (spectral embedding, one-to-one gridding, refinement), built from the first fold's "
            f"training utterances of the {join_words(splits)} split and judged on its test utterances. "
            f"{_first_upper('; '.join(colours))}. Every p-value is "
            f"one-sided against {result.get('permutations')} seeded permutations that condition on the layout "
            f"(salient neurons placed at random among its cells; values shuffled over its neurons), uncorrected for "
            f"the {n_tests} tests of this section (alpha {result.get('alpha')}). The layout puts correlated neurons "
            "side by side, so any value that follows the layer's correlation structure (a group's mean activation "
            "does) is smooth on it: a smooth profile says the map is readable, not that the network stores the "
            "property in one place.")


def topomap_tables(result: dict) -> list[str]:
    maps = result.get("maps") or []
    layout_rows, group_rows = [], []
    for m in maps:
        s = m["layout_summary"]
        q, t, w = s["quality"], m["salient"], m["weight_moran"]
        layout_rows.append([m["encoder"], m["task"], m["layer"], f"{s['shape'][0]} x {s['shape'][1]}",
                            num(q.get("gain"), 3), f"{num(q.get('random_gain'), 3)} ± {num(q.get('random_gain_std'), 3)}",
                            num(s["quality_in_sample"].get("gain"), 3),
                            f"{num(s['stability'].get('mean'), 2)} ({num(s['stability'].get('min'), 2)})",
                            m["k"], num(t.get("nn_distance"), 2), num(t.get("nn_null_mean"), 2), num(t.get("nn_ratio"), 2),
                            p_value_text(t.get("nn_p_value")), num(w.get("moran_i"), 2),
                            p_value_text(w.get("moran_p_value"))])
        for g in m.get("groups") or []:
            group_rows.append([m["encoder"], m["task"], m["layer"], g["group"], g["size"], num(g.get("moran_i"), 3),
                               num(g.get("moran_expected"), 3), p_value_text(g.get("moran_p_value")),
                               "yes" if _smooth(g, result.get("alpha", 0.05)) else "no"])
    tables = ["### Layouts and salient neurons",
              md_table(["encoder", "task", "layer", "grid", "held-out gain", "random gain", "in-sample gain",
                        "stability (min)", "salient k", "NN distance", "random NN", "NN ratio", "p (gather)",
                        "weights Moran's I", "p (smooth)"], layout_rows)]
    if group_rows:
        tables += ["### Group profiles on the maps",
                   md_table(["encoder", "task", "layer", "group", "utterances", "Moran's I", "expected", "p",
                             "smooth"], group_rows)]
    return tables


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _profile_caption(entry: dict) -> str:
    if entry.get("profile_kind") == "gradnap":
        return "its GradNAP profile: red where the neuron matters more to the probe for the group than on average"
    return "its profile on the map, red above the average utterance, blue below"


def topomap_section(result: dict, figures: dict[str, Path], out: Path) -> str:
    alpha = result.get("alpha", 0.05)
    maps = result.get("maps") or []
    findings = [method_words(result)] + [entry_words(m, alpha) for m in maps]
    captions = {figure_name(m): (f"{m['encoder']} / {m['task']} at {m['layer']}: one panel per {m['task']} group "
                                 f"({_profile_caption(m)}), then the probe's weight magnitude; the salient neurons "
                                 "are outlined")
                for m in maps}
    return section_md("## Topographic neuron maps", findings, topomap_tables(result), captions, figures, out)


def summary_lines(result: dict) -> list[str]:
    lines = []
    for m in result.get("maps") or []:
        q, t = m["layout_summary"]["quality"], m["salient"]
        lines.append(f"topomap: {m['encoder']} / {m['task']} at {m['layer']}: held-out neighbour gain "
                     f"{num(q.get('gain'), 3)} (random {num(q.get('random_gain'), 3)}); salient neurons NN ratio "
                     f"{num(t.get('nn_ratio'), 2)}, p {p_value_text(t.get('nn_p_value'))}")
    return lines
