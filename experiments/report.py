"""The report of a run: ``report.md``, a self-contained ``report.html`` and a terminal summary.

Every sentence is computed from the results (the dict that becomes ``results.json``): a claim such as
"above chance", "disadvantages" or "beats its random twin" is made only when the numbers printed beside
it support it, so a report of another run (or of the same run after a fix) never carries stale wording.
The HTML is the Markdown rendered by markdown-it-py, with each figure embedded as a data URI, so the one
file can be mailed or archived without its folder.
"""
from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional
from urllib.parse import quote, unquote

from speechprobe.io import write_text

from speechprobe.experiments.figures import (ablation_mode_words, attribution_figure_name, gradnap_figure_name, model_encoders,
                                 model_units, safe_name, selectivity_note, similarity_figure_name, sweep_tasks,
                                 twin_unit, unit_of)

ALPHA = 0.05  # an overlap is "above chance" when its hypergeometric p-value is below this
N_SD = 2.0  # an ablation differs from random removal when it is more than this many SDs of it away

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;line-height:1.5;color:#222}
h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;height:auto;display:block;margin:1em 0}code{background:#f3f3f3;padding:0 .2em}
blockquote{border-left:4px solid #9ab;margin:1em 0;padding:.2em 1em;background:#f6f8fa}
"""


# --------------------------------------------------------------------------------------------------
# numbers as text


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, digits: int = 2) -> str:
    """A number to ``digits`` decimals; a missing one (None / NaN in results.json) as a dash."""
    return f"{x:.{digits}f}" if _finite(x) else "–"


def signed(x: Any, digits: int = 2) -> str:
    return f"{x:+.{digits}f}".replace("-", "−") if _finite(x) else "–"


def pct(x: Any, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%" if _finite(x) else "–"


def value(interval: Any) -> Optional[float]:
    return interval.get("value") if isinstance(interval, dict) else interval


def ival(interval: Any, digits: int = 2) -> str:
    """'0.93 [0.90, 0.95]' (the interval's point estimate and bounds)."""
    if not isinstance(interval, dict):
        return num(interval, digits)
    return f"{num(interval.get('value'), digits)} [{num(interval.get('low'), digits)}, {num(interval.get('high'), digits)}]"


def _first_interval(results: dict) -> Optional[dict]:
    stack: list[Any] = [results.get("sweep"), results.get("audit")]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            if {"value", "low", "high", "confidence"} <= set(item):
                return item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


# --------------------------------------------------------------------------------------------------
# run header


def _probe_config(results: dict) -> dict:
    return (results.get("config") or {}).get("probe") or {}


def _encoders(results: dict) -> list[str]:
    sweep, audit, ablation = results.get("sweep"), results.get("audit"), results.get("ablation")
    names = model_encoders(sweep) if sweep else []
    names += [s["encoder"] for s in (audit, ablation) if s and s.get("encoder")]
    return list(dict.fromkeys(names))


def _split_note(sweep: Optional[dict], folds: Any) -> str:
    """Folds over speakers, and the tasks split another way (e.g. speaker identity: within speakers)."""
    units = model_units(sweep) if sweep else []
    odd = {}
    for unit in units:
        if unit.get("split_policy") not in (None, "speaker_disjoint"):
            odd[unit["task"]] = (unit["split_policy"].replace("_", "-"), unit.get("n_folds"))
    text = f"{folds}-fold cross-validation over speakers (no test speaker seen in training)" if folds else \
        "cross-validation over speakers"
    for task, (policy, n) in odd.items():
        text += f"; {task} is split {policy} ({n} fold{'s' if n != 1 else ''})"
    return text


def header(results: dict) -> str:
    """Title and one paragraph: corpus, encoders, settings."""
    name = results.get("name", "run")
    corpus = results.get("corpus") or {}
    source = corpus.get("source") or (results.get("config") or {}).get("corpus")
    parts = [f"Run **{name}**" + (f" (speechprobe {results['speechprobe']})" if results.get("speechprobe") else "")]
    if source:
        size = []
        if corpus.get("utterances") is not None:
            size.append(f"{corpus['utterances']} utterances")
        if corpus.get("speakers") is not None:
            size.append(f"{corpus['speakers']} speakers")
        parts.append(f"on corpus `{source}`" + (f" ({', '.join(size)})" if size else ""))
    text = " ".join(parts) + "."
    sweep = results.get("sweep")
    baselines = (sweep or {}).get("baselines") or {}
    encoders = [f"{e} (random-weights twin: {baselines[e]})" if e in baselines else e for e in _encoders(results)]
    if encoders:
        text += f" Encoders: {_join(encoders)}."
    probe = _probe_config(results)
    grid = probe.get("grid")
    grid_text = "the default (l1, l2) grid" if not grid else \
        "the (l1, l2) grid " + ", ".join(f"({a:g}, {b:g})" for a, b in grid)
    settings = [f"elastic-net probes, {_split_note(sweep, probe.get('folds'))}",
                f"regularisation chosen on validation from {grid_text}"]
    if probe.get("max_epochs"):
        settings.append(f"at most {probe['max_epochs']} epochs")
    if probe.get("n_resamples"):
        settings.append(f"{probe['n_resamples']} bootstrap resamples")
    if probe.get("method"):
        settings.append(f"neurons ranked by {probe['method']}")
    if probe.get("target"):
        settings.append(f"minimal subsets keep {pct(probe['target'], 0)} of the full probe's validation accuracy")
    text += " Settings: " + "; ".join(settings) + "."
    return f"# Report: {name}\n\n{text}"


def how_to_read(results: dict) -> str:
    """The reading note, with the interval kind taken from the results."""
    first = _first_interval(results)
    if first:
        unit = "whole speakers" if first.get("resampled") == "groups" else "single utterances"
        ci = (f"Intervals in brackets are {pct(first['confidence'], 0)} bootstrap intervals resampling {unit} "
              f"({first.get('n_resamples')} resamples): one speaker's utterances are not independent.")
    else:
        ci = "Intervals in brackets are bootstrap intervals."
    return ("> **How to read this.** " + ci + " The best layer of each encoder and task is chosen on "
            "validation accuracy; the test folds are touched once, by the chosen probes, and test accuracy is "
            "pooled over the folds (every utterance tested once). Selectivity is test accuracy minus the "
            "accuracy of a probe trained on a control task (labels that carry no property): high selectivity "
            "means the probe reads the property rather than memorising. Majority is the accuracy of always "
            "answering the training folds' most frequent class.")


# --------------------------------------------------------------------------------------------------
# figures in markdown


def figure_link(path: Path, out: Path) -> str:
    """The figure's path relative to the report folder, URL-quoted."""
    return quote(Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix())


def figure_md(name: str, figures: dict[str, Path], out: Path, caption: str) -> str:
    """An image link relative to the report (empty when the figure was not drawn)."""
    path = figures.get(name)
    if path is None:
        return ""
    return f"![{caption}]({figure_link(path, out)})\n\n*{caption}*"


def _figures_block(names: list[str], figures: dict[str, Path], out: Path, captions: dict[str, str]) -> str:
    return "\n\n".join(block for n in names if (block := figure_md(n, figures, out, captions.get(n, n))))


# --------------------------------------------------------------------------------------------------
# sweep


def _by_layer(unit: Optional[dict]) -> dict[str, dict]:
    return {s["layer"]: s for s in unit["layers"]} if unit else {}


def _best(unit: dict) -> Optional[dict]:
    return _by_layer(unit).get(unit.get("best_layer"))


def vs_majority(interval: dict, majority: Any) -> str:
    """Where the accuracy interval lies relative to the majority baseline."""
    low, high = interval.get("low"), interval.get("high")
    if not _finite(majority):
        return ""
    if _finite(low) and low > majority:
        return f"above the majority baseline {num(majority)} (its interval excludes it)"
    if _finite(high) and high < majority:
        return f"below the majority baseline {num(majority)}"
    return f"not distinguishable from the majority baseline {num(majority)} (its interval includes it)"


def peak_sentence(unit: dict) -> str:
    layers = [s["layer"] for s in unit["layers"]]
    best = _best(unit)
    if best is None:
        return f"**{unit['encoder']} / {unit['task']}**: no best layer recorded."
    position = f"layer {layers.index(best['layer']) + 1} of {len(layers)}"
    accs = [value(s["accuracy"]) for s in unit["layers"]]
    finite = [a for a in accs if _finite(a)]
    spread = f"; across layers it ranges {num(min(finite))}–{num(max(finite))}" if len(finite) > 1 else ""
    return (f"**{unit['encoder']} / {unit['task']}** peaks at **{best['layer']}** ({position}, chosen on validation): "
            f"test accuracy {ival(best['accuracy'])}, {vs_majority(best['accuracy'], best.get('majority_accuracy'))}"
            f"{spread}.")


def gains(unit: dict, twin: dict) -> dict[str, tuple[float, bool]]:
    """Layer -> (pretrained minus random-weights test accuracy, whether the two intervals are disjoint)."""
    random = _by_layer(twin)
    out = {}
    for s in unit["layers"]:
        r = random.get(s["layer"])
        if r is None or not (_finite(value(s["accuracy"])) and _finite(value(r["accuracy"]))):
            continue
        a, b = s["accuracy"], r["accuracy"]
        disjoint = (_finite(a.get("low")) and _finite(b.get("high")) and a["low"] > b["high"]) or \
                   (_finite(a.get("high")) and _finite(b.get("low")) and a["high"] < b["low"])
        out[s["layer"]] = (a["value"] - b["value"], bool(disjoint))
    return out


def gain_sentence(unit: dict, twin: Optional[dict]) -> str:
    """How the pretrained encoder compares with its random-weights twin, layer by layer."""
    encoder, task = unit["encoder"], unit["task"]
    if twin is None:
        return f"No random-weights twin of {encoder} was probed, so its gain over random weights is not measured."
    g = gains(unit, twin)
    if not g:
        return f"{encoder} and its random twin ({twin['encoder']}) share no layer, so no gain is computed."
    values = {layer: d for layer, (d, _) in g.items()}
    low, high = min(values.values()), max(values.values())
    top = max(values, key=values.get)
    disjoint = sum(1 for _, sep in g.values() if sep)
    separated = f" (the two intervals are disjoint at {disjoint} of {len(g)} layers)"
    better = [layer for layer, d in values.items() if d > 0]
    if len(better) == len(values):
        text = (f"{encoder} beats its random-weights twin ({twin['encoder']}) for {task} at every layer, by "
                f"{num(low)}–{num(high)}; largest at {top}")
    elif not better:
        worst = min(values, key=values.get)
        text = (f"{encoder} is **worse than** its random-weights twin ({twin['encoder']}) for {task} at every layer, "
                f"by {num(-high)}–{num(-low)}; most at {worst}")
    else:
        text = (f"{encoder} beats its random-weights twin ({twin['encoder']}) for {task} at {len(better)} of "
                f"{len(values)} layers ({_join(better)}) and not at the others; the difference ranges "
                f"{signed(low)} to {signed(high)}, largest at {top}")
    return text + separated + "."


NA = "n/a"  # selectivity of a task whose control task means nothing (speaker identity); the reason is said once


def selectivity_sentence(unit: dict) -> str:
    best = _best(unit)
    if selectivity_note(unit) is not None:
        return f"Selectivity: {NA} (see the note on the control task below)."
    if best is None or not _finite(best.get("selectivity")):
        return ""
    sel = best["selectivity"]
    finite = [s for s in unit["layers"] if _finite(s.get("selectivity"))]
    most = max(finite, key=lambda s: s["selectivity"])
    if most["selectivity"] <= 0:
        where = f"; no layer is selective (the highest selectivity is {num(most['selectivity'])}, at {most['layer']})"
    elif most["layer"] == best["layer"]:
        where = ""
    else:
        where = f"; the most selective layer is {most['layer']} ({num(most['selectivity'])})"
    if sel > 0:
        return (f"Selectivity at {best['layer']}: {num(sel)} (control task {num(best.get('control_accuracy'))})"
                f"{where}.")
    return (f"At {best['layer']} the probe is **not selective**: the control task reaches "
            f"{num(best.get('control_accuracy'))}, {num(-sel)} above the task's accuracy{where}.")


def salient_sentence(unit: dict) -> str:
    salient = unit.get("salient") or {}
    counts, shares = salient.get("counts") or {}, salient.get("share_of_layer") or {}
    if not counts:
        return ""
    most = max(counts.values())
    holders = [layer for layer, c in counts.items() if c == most]
    total = sum(counts.values())
    text = (f"Its salient neurons (top {pct(salient.get('top_fraction'), 0)} of a probe on all layers at once, "
            f"{salient.get('top_k', total)} neurons) are mostly in {_join(holders)} ({most} of {total}")
    text += " each)" if len(holders) > 1 else ")"
    if shares:
        densest = max(shares, key=lambda k: shares[k] if _finite(shares[k]) else -1)
        if densest not in holders:
            text += f"; relative to layer size the densest is {densest} ({pct(shares[densest])} of its neurons)"
    return text + "."


def selectivity_notes(sweep: dict) -> list[str]:
    """One sentence per reason a task's selectivity is n/a (the speaker task's), naming its tasks."""
    notes: dict[str, list[str]] = {}
    for unit in model_units(sweep):
        note = selectivity_note(unit)
        if note is not None and unit["task"] not in notes.setdefault(note, []):
            notes[note].append(unit["task"])
    return [f"**Selectivity {NA} for {_join(tasks)}**: {note}." for note, tasks in notes.items()]


def sweep_findings(sweep: dict) -> list[str]:
    out = []
    for encoder in model_encoders(sweep):
        for task in sweep_tasks(sweep):
            unit = unit_of(sweep, encoder, task)
            if unit is None:
                continue
            parts = [peak_sentence(unit), gain_sentence(unit, twin_unit(sweep, encoder, task)),
                     selectivity_sentence(unit), salient_sentence(unit)]
            out.append(" ".join(p for p in parts if p))
    return out + selectivity_notes(sweep)


def sweep_table(sweep: dict, encoder: str) -> str:
    rows = []
    for task in sweep_tasks(sweep):
        unit = unit_of(sweep, encoder, task)
        if unit is None:
            continue
        random = _by_layer(twin_unit(sweep, encoder, task))
        na = selectivity_note(unit) is not None
        for s in unit["layers"]:
            r = random.get(s["layer"])
            mark = " (best)" if s["layer"] == unit.get("best_layer") else ""
            rows.append([task, s["layer"] + mark, ival(s["accuracy"], 3), num(value(s.get("macro_f1")), 3),
                         NA if na else num(s.get("control_accuracy"), 3), NA if na else num(s.get("selectivity"), 3),
                         ival(r["accuracy"], 3) if r else "–", num(s.get("majority_accuracy"), 3)])
    return md_table(["task", "layer", "test accuracy [CI]", "macro-F1", "control", "selectivity",
                     "random weights", "majority"], rows)


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


def similarity_block(sweep: dict, figures: dict[str, Path], out: Path) -> list[str]:
    matrices = sweep.get("similarity") or []
    if not matrices:
        return []
    captions = {}
    for m in matrices:
        what = (f"between the layers of {m['encoder_a']}" if m["within"]
                else f"between the layers of {m['encoder_a']} (rows) and {m['encoder_b']} (columns)")
        captions[similarity_figure_name(m)] = f"{_measure_name(m['measure'])} {what}"
    parts = ["### Layer similarity", bullets([s for m in matrices if (s := similarity_sentence(m))])]
    block = _figures_block([*captions], figures, out, captions)
    return parts + ([block] if block else [])


def sweep_section(sweep: dict, figures: dict[str, Path], out: Path) -> str:
    parts = ["## Layer sweep", "### Findings", bullets(sweep_findings(sweep))]
    for encoder in model_encoders(sweep):
        parts += [f"### {encoder}: per-layer results", sweep_table(sweep, encoder)]
    captions = {f"sweep_{safe_name(t)}": f"{t}: test accuracy per layer (band: CI), random-weights twin dashed, "
                                           f"control task dotted, majority grey, star: best layer on validation"
                for t in sweep_tasks(sweep)}
    captions["selectivity"] = "Selectivity per layer, one line per task"
    captions["salient_layers"] = "Share of each layer's neurons among the salient neurons, per task"
    names = [*captions]
    block = _figures_block(names, figures, out, captions)
    if block:
        parts += ["### Figures", block]
    parts += similarity_block(sweep, figures, out)
    if sweep.get("gradnap"):
        parts.append(gradnap_subsection(sweep["gradnap"], figures, out))
    if sweep.get("attribution"):
        parts += attribution_section(sweep["attribution"], figures, out)
    return "\n\n".join(parts)


def _set(groups: list[str]) -> str:
    return "{" + ", ".join(groups) + "}"


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
                   f"{num(best['p_value'], 3)})" + (f"; also above chance: {_join(others)}" if others else "")
                   + (f". In {best['layer']} the dendrogram's first split is {_set(left)} vs {_set(right)}, and "
                      f"{best['closest_pair'][0]} and {best['closest_pair'][1]} have the most similar profiles."
                      if len(best["groups"]) > 2 else "."))


def gradnap_table(unit: dict) -> str:
    return md_table(["layer", "probe accuracy", "separation", "shuffled", "p", "separates", "first split", "closest pair"],
                    [[l["layer"], pct(l.get("probe_accuracy")), num(l["separation"], 3), num(l["null_mean"], 3), num(l["p_value"], 3),
                      "yes" if l["separates"] else "no", f"{_set(l['root_split'][0])} vs {_set(l['root_split'][1])}" if len(l["groups"]) > 2 else "–",
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


ATTRIBUTION_TITLES = {"saliency": "saliency", "input_x_gradient": "gradient x input",
                      "integrated_gradients": "integrated gradients", "gradient_shap": "GradientSHAP", "lrp": "LRP"}


def attribution_sentence(entry: dict) -> str:
    """One finding per encoder x task: the randomisation correlations and where the |attribution| mass lies."""
    records, means = entry.get("utterances") or [], entry.get("mean") or {}
    if not records:
        return ""
    n = len(records)
    head = (f"**{entry['encoder']} / {entry['task']}** (best layer {entry['layer']}, {n} test utterance{'s' * (n > 1)}, "
            f"attributed to the true class):")
    rhos = [f"{ATTRIBUTION_TITLES.get(m, m)} {num(v.get('randomisation_spearman'))}"
            for m, v in means.items() if v.get("randomisation_spearman") is not None]
    text = head
    if rhos:
        text += (" rank correlation of |attribution| between the trained probe and a probe with re-drawn weights: "
                 f"{', '.join(rhos)} (1 = the same ranking whatever the probe learned)")
        high = [ATTRIBUTION_TITLES.get(m, m) for m, v in means.items() if _finite(v.get("randomisation_spearman"))
                and v["randomisation_spearman"] > 0.8]
        if high:
            text += (f"; {_join(high)} keep{'s' if len(high) == 1 else ''} most of {'its' if len(high) == 1 else 'their'} "
                     f"ranking under randomisation, so much of {'that map' if len(high) == 1 else 'each map'} comes "
                     "from the encoder and the input, "
                     "not from what the probe learned")
    main = next((m for m in ("integrated_gradients", "gradient_shap", "input_x_gradient", "saliency")
                 if (means.get(m) or {}).get("band_fractions")), None)
    if main:
        bands = means[main]["band_fractions"]
        text += (f". Of the {ATTRIBUTION_TITLES[main]} mass, {pct(bands['low'], 0)} lies in the lowest third of the "
                 f"frequency bands, {pct(bands['mid'], 0)} in the middle and {pct(bands['high'], 0)} in the top third")
    errors = [v["error"] for v in means.values() if v.get("error")]
    if errors:
        text += f". {errors[0]}"
    return text + "."


def attribution_section(entries: list[dict], figures: dict[str, Path], out: Path) -> list[str]:
    parts = ["### Input attribution", bullets([s for e in entries if (s := attribution_sentence(e))])]
    captions = {attribution_figure_name(e): f"{e['encoder']} / {e['task']}: |attribution| of the best layer's probe "
                                            f"over the input features of {e['utterances'][0]['utterance']} "
                                            "(one panel per method)"
                for e in entries if e.get("utterances")}
    block = _figures_block([*captions], figures, out, captions)
    if block:
        parts.append(block)
    return parts


# --------------------------------------------------------------------------------------------------
# audit


def encoding_sentence(audit: dict) -> str:
    encoding = audit.get("encoding") or {}
    layers = encoding.get("layers") or []
    best = next((s for s in layers if s["layer"] == encoding.get("best_layer")), None)
    attribute, encoder = audit.get("attribute"), audit.get("encoder")
    text = ""
    if best is not None:
        accs = [value(s["accuracy"]) for s in layers if _finite(value(s["accuracy"]))]
        text = (f"**Where**: {attribute} is decoded best from {encoder} at **{best['layer']}** (chosen on validation): "
                f"test accuracy {ival(best['accuracy'])}, {vs_majority(best['accuracy'], best.get('majority_accuracy'))}"
                f"; across layers {num(min(accs))}–{num(max(accs))}. ")
    layer = audit.get("layer")
    chosen = "" if best is None or layer == best["layer"] else " (set in the config, not the best layer)"
    return text + f"The audit works at {layer}{chosen}, {audit.get('n_neurons')} neurons."


def subset_sentence(audit: dict, target: Any) -> str:
    attribute = audit.get("attribute")
    salient = audit.get("salient") or {}
    mine = salient.get(attribute)
    if not mine:
        return ""
    keep = f"keep {pct(target, 0)} of" if _finite(target) else "reach the target share of"
    if mine.get("reached", True):
        text = (f"**How many neurons**: the top {mine['k']} of {audit.get('n_neurons')} ({pct(mine['fraction'])}) "
                f"{keep} the full probe's validation accuracy ({num(mine.get('accuracy'))} vs "
                f"{num(mine.get('full_accuracy'))}).")
    else:
        text = (f"**How many neurons**: no top-ranked subset reached the target; the search stopped at "
                f"{mine['k']} neurons ({pct(mine['fraction'])}, validation accuracy {num(mine.get('accuracy'))} vs "
                f"{num(mine.get('full_accuracy'))} with all).")
    if mine.get("summary"):
        text += f" Against random neurons: {mine['summary']}."
    others = [f"{t} {m['k']} ({pct(m['fraction'])}{_versus_random(m)})" for t, m in salient.items() if t != attribute]
    if others:
        text += f" The other tasks' minimal subsets: {_join(others)}."
    return text


def _versus_random(m: dict) -> str:
    """', random 40: minimal' beside a subset size, when the random rankings' k is known."""
    if not _finite(m.get("random_k_median")):
        return ""
    return f"; random neurons {m['random_k_median']:g}: " + ("minimal" if m.get("is_minimal") else "not a finding")


def check_sentences(checks: dict) -> list[str]:
    """One sentence per ranking check, those that do not beat random first (they must not go unnoticed)."""
    ordered = sorted(checks.items(), key=lambda item: bool(item[1].get("beats_random")))
    return [f"**{task}**: {check.get('summary')}" for task, check in ordered if check.get("summary")]


def _overlap_phrase(cell: dict) -> str:
    p = cell.get("p_value")
    stats = f"J = {num(cell.get('jaccard'))} vs chance {num(cell.get('chance'))}, p = {_p(p)}"
    if _finite(p) and p < ALPHA:
        return f"above chance ({stats})"
    return f"not above chance ({stats})"


def _p(p: Any) -> str:
    if not _finite(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def overlap_sentences(audit: dict) -> list[str]:
    tasks, matrix = audit.get("overlap_tasks") or [], audit.get("overlap") or []
    attribute = audit.get("attribute")
    if attribute not in tasks or not matrix:
        return []
    i = tasks.index(attribute)
    parts = [f"{t}: {_overlap_phrase(matrix[i][j])}" for j, t in enumerate(tasks) if j != i]
    text = f"**Shared neurons**: the {attribute} subset overlaps the other tasks' subsets — " + "; ".join(parts) + "."
    pairs = [f"{tasks[a]} and {tasks[b]} overlap {_overlap_phrase(matrix[a][b])}"
             for a in range(len(tasks)) for b in range(a + 1, len(tasks))
             if i not in (a, b) and _finite(matrix[a][b].get("p_value")) and matrix[a][b]["p_value"] < ALPHA]
    if pairs:
        text += f" Among the other tasks, {'; '.join(pairs)}."
    return [text]


def group_sentence(task: str, g: dict, attribute: str) -> str:
    """The gap of one task; the disadvantaged group is named only when the gap is flagged."""
    gap = g["gap"]
    accs = "; ".join(f"{k} {ival(g['accuracy'][k])}" for k in g["groups"])
    if g.get("flagged"):
        worst, best = g["worst_group"], g["best_group"]
        return (f"**{task}** (probe at {g.get('layer')}) **disadvantages the {worst}** group ({attribute}): "
                f"{ival(g['accuracy'][worst])} vs {ival(g['accuracy'][best])} for {best}; the gap "
                f"{ival(gap)} excludes 0, so it is more than chance variation between speakers.")
    return (f"**{task}** (probe at {g.get('layer')}): accuracy {accs}; the gap between {attribute} groups, "
            f"{ival(gap)}, is within chance variation (its interval includes 0), so no group is singled out.")


def removal_verdict(removed: Any, mean: Any, std: Any) -> str:
    """Whether removing the attribute's neurons hurts more than removing as many random ones."""
    if not (_finite(removed) and _finite(mean)):
        return "not comparable with random removal"
    margin = N_SD * (std if _finite(std) else 0.0)
    if removed < mean - margin:
        return f"a larger drop than random removal (more than {N_SD:g} SD below it)"
    if removed > mean + margin:
        return f"less harm than random removal (more than {N_SD:g} SD above it)"
    return f"no different from random removal (within {N_SD:g} SD)"


def audit_ablation_sentences(audit: dict) -> list[str]:
    ablation = audit.get("ablation") or {}
    k = len(ablation.get("neurons") or [])
    attribute = audit.get("attribute")
    out = []
    for task, e in (ablation.get("tasks") or {}).items():
        full, removed = e.get("full"), e.get("removed_attribute_neurons")
        drop = removed - full if _finite(full) and _finite(removed) else None
        out.append(f"**{task}**: {num(full)} → {num(removed)} ({signed(drop)}) without the {k} {attribute} neurons, "
                   f"vs {num(e.get('removed_random_mean'))} ± {num(e.get('removed_random_std'))} without {k} random "
                   f"ones: {removal_verdict(removed, e.get('removed_random_mean'), e.get('removed_random_std'))}.")
    return out


def audit_findings(audit: dict, target: Any) -> list[str]:
    items = [encoding_sentence(audit), subset_sentence(audit, target)]
    checks = audit.get("checks") or {}
    if checks:
        failing = [t for t, c in checks.items() if not c.get("beats_random")]
        lead = (f"**Ranking checks** ({audit.get('method', 'weight')} ranking; top k kept alone and retrained vs k "
                f"random neurons): " + (f"the ranking does not beat random neurons at small k for {_join(failing)}, "
                                        "so its subsets and overlaps there are not findings."
                                        if failing else "every task's ranking beats random neurons at small k."))
        items.append(lead + "\n" + "\n".join(f"  - {s}" for s in check_sentences(checks)))
    items += overlap_sentences(audit)
    groups = audit.get("groups") or {}
    if groups:
        flagged = [t for t, g in groups.items() if g.get("flagged")]
        lead = (f"**Who is disadvantaged**: {len(flagged)} of {len(groups)} tasks show a gap between "
                f"{audit.get('attribute')} groups beyond chance" + (f" ({_join(flagged)})." if flagged else "."))
        items.append(lead + "\n" + "\n".join(f"  - {group_sentence(t, g, audit.get('attribute'))}"
                                              for t, g in groups.items()))
    removal = audit_ablation_sentences(audit)
    if removal:
        mode = ablation_mode_words((audit.get("ablation") or {}).get("mode", "mean"))  # the audit always recorded it
        items.append(f"**Removing the {audit.get('attribute')} neurons** by {mode}, at {audit.get('layer')}, "
                     f"no retraining, first fold's test split:\n" + "\n".join(f"  - {s}" for s in removal))
    return [i for i in items if i]


def audit_tables(audit: dict) -> list[str]:
    parts = []
    salient = audit.get("salient") or {}
    if salient:
        parts += ["### Minimal subsets", md_table(
            ["task", "k", "% of layer", "validation accuracy (subset)", "validation accuracy (all)", "target reached",
             "random neurons' k (median)", "minimal (well below random)"],
            [[t, m["k"], pct(m.get("fraction")), num(m.get("accuracy"), 3), num(m.get("full_accuracy"), 3),
              "yes" if m.get("reached") else "no",
              f"{m['random_k_median']:g}" if _finite(m.get("random_k_median")) else "–",
              ("yes" if m.get("is_minimal") else "no") if "is_minimal" in m else "–"] for t, m in salient.items()])]
    checks = audit.get("checks") or {}
    if checks:
        parts += [check_table(checks, "### Ranking checks: test accuracy of the top k neurons kept alone "
                                      "(random: mean ± SD of 5 draws)")]
    tasks, matrix = audit.get("overlap_tasks") or [], audit.get("overlap") or []
    if matrix:
        def cell(c: dict, diagonal: bool) -> str:
            if diagonal:  # a set against itself has no chance level to beat: its size is what matters
                return f"k = {c.get('size_a')}"
            return f"{num(c.get('jaccard'))} / {num(c.get('chance'))} (p {_p(c.get('p_value'))})"

        parts += ["### Overlap of the minimal subsets (J / chance, p; diagonal: subset size)", md_table(
            ["", *tasks], [[a, *(cell(c, i == j) for j, c in enumerate(row))]
                           for i, (a, row) in enumerate(zip(tasks, matrix))])]
    groups = audit.get("groups") or {}
    if groups:
        names = list(dict.fromkeys(k for g in groups.values() for k in g["groups"]))
        parts += [f"### Accuracy per {audit.get('attribute')} group", md_table(
            ["task", "layer", *names, "gap [CI]", "flagged"],
            [[t, g.get("layer"), *(ival(g["accuracy"][k], 3) if k in g["accuracy"] else "–" for k in names),
              ival(g["gap"], 3), "yes" if g.get("flagged") else "no"] for t, g in groups.items()])]
    tasks_ab = (audit.get("ablation") or {}).get("tasks") or {}
    if tasks_ab:
        mode = ablation_mode_words((audit.get("ablation") or {}).get("mode", "mean"))
        parts += [f"### Removing the {audit.get('attribute')} neurons by {mode}", md_table(
            ["task", "all neurons", f"{audit.get('attribute')} neurons removed", "random removed (mean ± SD)"],
            [[t, num(e.get("full"), 3), num(e.get("removed_attribute_neurons"), 3),
              f"{num(e.get('removed_random_mean'), 3)} ± {num(e.get('removed_random_std'), 3)}"]
             for t, e in tasks_ab.items()])]
    return parts


def _section(title: str, findings: list[str], tables: list[str], captions: dict[str, str],
             figures: dict[str, Path], out: Path) -> str:
    """A study's section: its findings in words, its tables, then its figures."""
    parts = [title, "### Findings", bullets(findings), *tables]
    block = _figures_block(list(captions), figures, out, captions)
    if block:
        parts += ["### Figures", block]
    return "\n\n".join(parts)


def audit_section(audit: dict, figures: dict[str, Path], out: Path, target: Any) -> str:
    title = f"## Bias audit: {audit.get('attribute')} in {audit.get('encoder')}"
    mode = ablation_mode_words((audit.get("ablation") or {}).get("mode", "mean"))
    captions = {"audit_groups": "The other tasks' test accuracy per group, with intervals; red: gap beyond chance",
                "overlap": "Jaccard overlap of the tasks' minimal subsets, each cell J / chance",
                "audit_checks": "Each task's ranking at the audited layer: top k kept alone vs k random and the bottom k",
                "audit_ablation": "Accuracy with all neurons, without the attribute's neurons, without random ones; "
                                  f"removal by {mode}"}
    return _section(title, audit_findings(audit, target), audit_tables(audit), captions, figures, out)


# --------------------------------------------------------------------------------------------------
# ablation


def _closest(fractions: list[float], target: Any) -> int:
    if not _finite(target):
        return len(fractions) // 2
    return min(range(len(fractions)), key=lambda i: abs(math.log(fractions[i]) - math.log(max(target, 1e-12))))


def kept_verdict(top: Any, mean: Any, std: Any) -> str:
    if not (_finite(top) and _finite(mean)):
        return "not comparable"
    margin = N_SD * (std if _finite(std) else 0.0)
    if top > mean + margin:
        return "the top neurons alone do better than as many random ones"
    if top < mean - margin:
        return "the top neurons alone do worse than as many random ones"
    return f"the top neurons alone do no better than random ones (within {N_SD:g} SD)"


def ablation_findings(ablation: dict, target: Any) -> list[str]:
    items = []
    where = "every layer concatenated" if ablation.get("layer") == "all" else f"layer {ablation.get('layer')}"
    items.append(f"A probe for {ablation.get('task')} on {ablation.get('encoder')} ({where}, "
                 f"{ablation.get('n_neurons')} neurons) reaches test accuracy {num(ablation.get('test_accuracy'))} "
                 f"(first fold); neurons are ranked by {ablation.get('method', 'weight')}.")
    m = ablation.get("minimal_subset") or {}
    if m:
        keep = f"keep {pct(m.get('target', target), 0)} of" if _finite(m.get("target", target)) else "reach the target of"
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
        i = _closest(fractions, m.get("fraction"))
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
        items.append(f"Removing the top neurons by {mode} hurts more than removing random ones at " + _join(harmful)
                     + " of the neurons." if harmful else
                     f"At no fraction does removing the top neurons by {mode} hurt more than removing random ones.")
    sentence = layers_sentence(ablation)
    if sentence:
        items.append(sentence)
    return items


def _even_share(ablation: dict, layer: str, dims: dict) -> str:
    """What a spread in proportion to layer size would put in ``layer``, as a yardstick."""
    total = sum(d for d in dims.values() if d)
    if not total or not dims.get(layer) or not _finite(ablation.get("top_k")):
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
    text = (f"**Which layers**: of the top {ablation.get('top_k')} neurons, {_join(holders)} "
            f"{'holds' if len(holders) == 1 else 'hold'} the most ({most}{' each' if len(holders) > 1 else ''}"
            f"{_even_share(ablation, holders[0], dims)}); per layer "
            + ", ".join(f"{n} {c}" for n, c in counts.items()))
    if densest is not None and densest not in holders:
        text += f"; relative to layer size the densest is {densest} ({pct(share[densest])})"
    return text + "."


def check_table(checks: dict, title: str) -> str:
    """Top / random / bottom test accuracy per k, one row per (task, k)."""
    rows = []
    for task, c in checks.items():
        for i, k in enumerate(c["ks"]):
            rows.append([task, k, num(c["top_test"][i], 3),
                         f"{num(c['random_test_mean'][i], 3)} ± {num(c['random_test_std'][i], 3)}",
                         num(c["bottom_test"][i], 3), (c.get("verdicts") or ["–"] * len(c["ks"]))[i]])
    return title + "\n\n" + md_table(["task", "k", "top k", "random k", "bottom k", "top vs random"], rows)


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
    return _section(title, ablation_findings(ablation, target), ablation_tables(ablation), captions, figures, out)


# --------------------------------------------------------------------------------------------------
# documents


def report_markdown(results: dict, figures: dict[str, Path], out: Path) -> str:
    """The whole report as Markdown (figure links relative to ``out``)."""
    target = _probe_config(results).get("target")
    parts = [header(results), how_to_read(results)]
    if results.get("sweep") and model_units(results["sweep"]):
        parts.append(sweep_section(results["sweep"], figures, out))
    if results.get("audit"):
        parts.append(audit_section(results["audit"], figures, out, target))
    if results.get("ablation"):
        parts.append(ablation_section(results["ablation"], figures, out, target))
    placed = "\n".join(parts)
    others = [n for n in figures if f"({figure_link(figures[n], out)})" not in placed]
    if others:
        parts.append("## Other figures\n\n" + _figures_block(others, figures, out, {}))
    return "\n\n".join(parts) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_to_html(markdown: str, out: Path, title: str) -> str:
    """Render with markdown-it-py (tables on, raw HTML off) and embed every local image as a data URI."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        path = Path(out) / unquote(src)
        if src.startswith("data:"):
            return match.group(0)
        if not path.is_file():
            return 'src=""'
        return f'src="{_data_uri(path)}"'

    body = re.sub(r'src="([^"]*)"', embed, body)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}</main>\n"
            f"</body>\n</html>\n")




def write_report(results: dict, figures: dict[str, Path], out: Path) -> tuple[Path, Path]:
    """Write ``out/report.md`` and the self-contained ``out/report.html``; returns their paths."""
    out = Path(out)
    markdown = report_markdown(results, {k: Path(v) for k, v in figures.items()}, out)
    md_path = write_text(out / "report.md", markdown)
    html_path = write_text(out / "report.html", markdown_to_html(markdown, out, f"speechprobe report: {results.get('name', 'run')}"))
    return md_path, html_path


# --------------------------------------------------------------------------------------------------
# terminal


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def summary_table(results: dict) -> str:
    """Per encoder x task: best layer, test accuracy [CI], random twin there, selectivity; audit; ablation."""
    lines = []
    sweep = results.get("sweep")
    if sweep and model_units(sweep):
        rows = []
        for encoder in model_encoders(sweep):
            for task in sweep_tasks(sweep):
                unit = unit_of(sweep, encoder, task)
                best = _best(unit) if unit else None
                if best is None:
                    continue
                twin = _by_layer(twin_unit(sweep, encoder, task)).get(best["layer"])
                rows.append([encoder, task, best["layer"], ival(best["accuracy"], 3),
                             num(value(twin["accuracy"]), 3) if twin else "–",
                             NA if selectivity_note(unit) is not None else num(best.get("selectivity"), 3)])
        lines.append(_text_table(["encoder", "task", "best layer", "test accuracy [CI]", "random twin", "selectivity"],
                                 rows))
    audit = results.get("audit")
    if audit:
        mine = (audit.get("salient") or {}).get(audit.get("attribute")) or {}
        flagged = [f"{t} (worse for {g.get('worst_group')}, gap {ival(g['gap'])})"
                   for t, g in (audit.get("groups") or {}).items() if g.get("flagged")]
        lines.append(f"audit: {audit.get('attribute')} in {audit.get('encoder')} at {audit.get('layer')}: "
                     f"minimal subset k={mine.get('k', '–')} ({pct(mine.get('fraction'))}{_versus_random(mine)}); "
                     "flagged gaps: " + (", ".join(flagged) if flagged else "none"))
        failing = [t for t, c in (audit.get("checks") or {}).items() if not c.get("beats_random")]
        if failing:
            lines.append(f"audit: the {audit.get('method')} ranking does not beat random neurons at small k for "
                         f"{', '.join(failing)}")
    ablation = results.get("ablation")
    if ablation:
        m = ablation.get("minimal_subset") or {}
        lines.append(f"ablation: {ablation.get('task')} in {ablation.get('encoder')} (layer {ablation.get('layer')}): "
                     f"minimal subset k={m.get('k', '–')} of {ablation.get('n_neurons')} ({pct(m.get('fraction'))}"
                     f"{_versus_random(m)})"
                     + (f"; the {ablation.get('method')} ranking does not beat random neurons at small k"
                        if ablation.get("check") and not ablation["check"].get("beats_random") else "")
                     + (f"; curves by {ablation_mode_words(ablation['ablation'].get('mode'))}"
                        if ablation.get("ablation") else ""))
    return "\n".join(lines) if lines else "(no results)"
