"""The sweep's report section: where each task peaks, the gain over random weights, selectivity, tables."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from speechprobe.experiments.plotting import safe_name
from speechprobe.experiments.studies.sweep.results import (best_layer_of, by_layer, model_encoders, model_units,
                                                           selectivity_note, sweep_tasks, twin_unit, unit_of)
from speechprobe.experiments.writing import (bullets, figures_block, finite, ival, join_words, md_table, NA, num,
                                             pct, signed, value, vs_majority)


def peak_sentence(unit: dict) -> str:
    layers = [s["layer"] for s in unit["layers"]]
    best = best_layer_of(unit)
    if best is None:
        return f"**{unit['encoder']} / {unit['task']}**: no best layer recorded."
    position = f"layer {layers.index(best['layer']) + 1} of {len(layers)}"
    accs = [value(s["accuracy"]) for s in unit["layers"]]
    known = [a for a in accs if finite(a)]
    spread = f"; across layers it ranges {num(min(known))}–{num(max(known))}" if len(known) > 1 else ""
    return (f"**{unit['encoder']} / {unit['task']}** peaks at **{best['layer']}** ({position}, chosen on validation): "
            f"test accuracy {ival(best['accuracy'])}, {vs_majority(best['accuracy'], best.get('majority_accuracy'))}"
            f"{spread}.")


def gains(unit: dict, twin: dict) -> dict[str, tuple[float, bool]]:
    """Layer -> (pretrained minus random-weights test accuracy, whether the two intervals are disjoint)."""
    random = by_layer(twin)
    out = {}
    for s in unit["layers"]:
        r = random.get(s["layer"])
        if r is None or not (finite(value(s["accuracy"])) and finite(value(r["accuracy"]))):
            continue
        a, b = s["accuracy"], r["accuracy"]
        disjoint = (finite(a.get("low")) and finite(b.get("high")) and a["low"] > b["high"]) or \
                   (finite(a.get("high")) and finite(b.get("low")) and a["high"] < b["low"])
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
                f"{len(values)} layers ({join_words(better)}) and not at the others; the difference ranges "
                f"{signed(low)} to {signed(high)}, largest at {top}")
    return text + separated + "."


def selectivity_sentence(unit: dict) -> str:
    best = best_layer_of(unit)
    if selectivity_note(unit) is not None:
        return f"Selectivity: {NA} (see the note on the control task below)."
    if best is None or not finite(best.get("selectivity")):
        return ""
    sel = best["selectivity"]
    known = [s for s in unit["layers"] if finite(s.get("selectivity"))]
    most = max(known, key=lambda s: s["selectivity"])
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
            f"{salient.get('top_k', total)} neurons) are mostly in {join_words(holders)} ({most} of {total}")
    text += " each)" if len(holders) > 1 else ")"
    if shares:
        densest = max(shares, key=lambda k: shares[k] if finite(shares[k]) else -1)
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
    return [f"**Selectivity {NA} for {join_words(tasks)}**: {note}." for note, tasks in notes.items()]


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
        random = by_layer(twin_unit(sweep, encoder, task))
        na = selectivity_note(unit) is not None
        for s in unit["layers"]:
            r = random.get(s["layer"])
            mark = " (best)" if s["layer"] == unit.get("best_layer") else ""
            rows.append([task, s["layer"] + mark, ival(s["accuracy"], 3), num(value(s.get("macro_f1")), 3),
                         NA if na else num(s.get("control_accuracy"), 3), NA if na else num(s.get("selectivity"), 3),
                         ival(r["accuracy"], 3) if r else "–", num(s.get("majority_accuracy"), 3)])
    return md_table(["task", "layer", "test accuracy [CI]", "macro-F1", "control", "selectivity",
                     "random weights", "majority"], rows)


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
    block = figures_block(names, figures, out, captions)
    if block:
        parts += ["### Figures", block]
    return "\n\n".join(parts)
