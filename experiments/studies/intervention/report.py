"""The intervention study's report section: where removing the attribute inside the network is cheap and where it
is not, in words with the numbers, each against its null (random neurons or directions, the majority class)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from speechprobe.experiments.writing import finite, ival, join_words, md_table, num, pct, section_md, signed

MODE_WORDS = {"mean": "mean ablation (each neuron held at its mean over real frames: in distribution)",
              "zero": "raw-zero ablation (out of distribution)",
              "resample": "resampling (values of frames of other utterances)"}


def _name(comp: dict) -> str:
    if comp["what"] == "erasure":
        return f"LEACE erasure (rank {comp['k']})"
    return f"the top {comp['k']} neurons{' (the minimal subset)' if comp['minimal'] else ''}, {comp['mode']} ablation"


def _null(part: dict, digits: int = 2, sign: bool = False) -> str:
    show = signed if sign else num
    mean, std, values = part.get("null_mean"), part.get("null_std"), [v for v in part.get("null") or [] if v is not None]
    if mean is None:
        return "–"
    return f"{show(mean, digits)}" + (f" ± {num(std, digits)}" if len(values) > 1 else "")


def _job_words(result: dict) -> str:
    none = _none(result)
    job = none.get("job") or {}
    if job.get("metric") == "eer":
        return "speaker-verification EER"
    if job.get("metric") == "wer":
        return "word error rate"
    return "own-job metric"


def _none(result: dict) -> dict:
    return next(c for c in result["conditions"] if c["kind"] == "none")


def _is_cheap(comp: dict) -> Optional[bool]:
    """Removed (at chance at the last layer) and its own-job cost no larger than its null's; None when unknown."""
    cost = comp["cost"]
    if cost.get("target") is None:
        return None
    null_mean, null_std = cost.get("null_mean"), cost.get("null_std") or 0.0
    return cost["target"] <= (null_mean if null_mean is not None else 0.0) + 2.0 * null_std + 1e-12


def _recovery_words(comp: dict, layer: str) -> str:
    rows = comp.get("recovery") or []
    later = rows[1:]
    first = rows[0] if rows else None
    at_chance_later = [r["layer"] for r in later if r["at_chance"]]
    kept = ", ".join(f"{r['layer']} {pct(r['kept'], 0)}" for r in later if finite(r.get("kept")))
    if not later and first:
        return "not above chance there" if first["at_chance"] else f"nothing comes after {layer} to recover it"
    if first and first["at_chance"] and not at_chance_later:
        return (f"it is gone at {layer} itself but the network recovers it after: share of the no-intervention "
                f"accuracy above the majority class kept at {kept}")
    if len(at_chance_later) == len(later):
        return f"it stays at chance in every later layer ({join_words(at_chance_later)})"
    return f"share of the no-intervention accuracy above the majority class kept at {kept}" + (
        f" (at chance at {join_words(at_chance_later)})" if at_chance_later else "")


def intervention_findings(result: dict) -> list[str]:
    none = _none(result)
    attribute, layer, last = result["attribute"], result["layer"], result["last_layer"]
    items = []
    frames, eraser, m = result.get("frames") or {}, result.get("eraser"), result.get("minimal_subset") or {}
    split = result.get("split") or {}
    items.append(
        f"{attribute} is removed from {result['encoder']}'s forward pass at {layer} ({result['n_neurons']} neurons; "
        f"{result.get('layer_chosen_by')}) and probes are retrained on the intervened store's layers "
        f"{join_words(result['layers'])} on the same {str(result.get('split_policy', '')).replace('_', '-')} split "
        f"({split.get('train')} training, {split.get('test')} test utterances). Neurons are ranked by "
        f"{result.get('method')}; the minimal subset keeps {pct(m.get('target'), 0)} of the validation accuracy with "
        f"{m.get('k')} neuron{'' if m.get('k') == 1 else 's'} ({num(m.get('accuracy'))} vs {num(m.get('full_accuracy'))})"
        + ("" if m.get("reached", True) else " (target not reached)") + "."
        + (f" Mean ablation holds each neuron at its mean over {frames.get('frames')} real frames of "
           f"{frames.get('utterances')} training utterances." if "mean" in (result.get("modes") or []) else "")
        + (f" Resampling draws from a bank of {frames.get('bank')} of the {frames.get('frames')} real frames of the "
           "training utterances (every class mixed)." if "resample" in (result.get("modes") or []) else "")
        + (f" LEACE is fitted on {eraser.get('fitted_on')} (rank {eraser.get('rank')}); its null erases as many "
           "random directions." if eraser else ""))
    plain_last = none["attribute"][-1]
    items.append(f"Without intervention {attribute} is read at {last} with {ival(plain_last['accuracy'])} "
                 f"(majority class {num(plain_last['majority_accuracy'])}); the {_job_words(result)} is "
                 f"{num((none.get('job') or {}).get('value'), 3)}" + _group_words(none) + _transcript_words(none) + ".")
    control = result.get("control") or {}
    items.append(f"**Controls**: an intervention on no neuron leaves every layer equal to the plain store (largest "
                 f"difference {control.get('none_max_abs_difference', float('nan')):.2g}); every intervention "
                 f"leaves the layers before {layer} unchanged (largest difference "
                 f"{control.get('earlier_layers_max_abs_difference', float('nan')):.2g}).")
    for comp in result.get("comparisons") or []:
        items.append(_comparison_words(result, comp))
    agreement = [c["at_layer"] for c in result["conditions"] if c["at_layer"].get("difference") is not None]
    if agreement:
        worst = max(agreement, key=lambda a: abs(a["difference"]))
        vectors = [a["vector_max_abs_difference"] for a in agreement if a.get("vector_max_abs_difference") is not None]
        items.append(f"**In the forward pass vs on stored vectors** at {layer}: the plain probe's accuracy under the "
                     f"in-forward intervention and under the same edit of the stored vectors (`ablate`, or the eraser "
                     f"applied to them) differ by at most {num(abs(worst['difference']), 3)}"
                     + (f"; the intervened vectors differ from the edited stored ones by at most {max(vectors):.2g}"
                        if vectors else "")
                     + (" (mean ablation fills frame means, `ablate` the pooled training means, so the two agree "
                        "closely rather than exactly)" if "mean" in (result.get("modes") or []) else "") + ".")
    items.append(_verdict_words(result))
    job = none.get("job") or {}
    if not job.get("available") and job.get("note"):
        items.append(f"Own job: {job['note']}.")
    if job.get("kind") == "verification" and job.get("speaker_disjoint") is False:
        items.append(f"Caution: {attribute}'s split is not speaker-disjoint, so the verification trials' speakers were "
                     "seen when the probes and the intervention were fitted.")
    return items


def _transcript_words(condition: dict) -> str:
    """Which utterances a WER is over, and how many transcripts loop (Whisper's compression-ratio test)."""
    job = condition.get("job") or {}
    if job.get("metric") != "wer":
        return ""
    return (f", over {job.get('n_rows')} of {job.get('rows', 'the test utterances')} ({job.get('n_reference_words')} "
            f"reference words; {job.get('looping', 0)} transcript{'' if job.get('looping') == 1 else 's'} looping)")


def _group_words(condition: dict) -> str:
    groups = (condition.get("job") or {}).get("by_group") or {}
    if not groups:
        return ""
    key = (condition.get("job") or {}).get("metric") or "eer"
    parts = [f"{g} {num(v.get(key), 3)}" if v.get(key) is not None else
             f"{g} – ({v.get('n_speakers')} test speaker{'' if v.get('n_speakers') == 1 else 's'}: too few for trials)"
             for g, v in groups.items()]
    return f" ({(condition.get('job') or {}).get('group_column')}: {', '.join(parts)})"


def _comparison_words(result: dict, comp: dict) -> str:
    layer, last, attribute = result["layer"], result["last_layer"], result["attribute"]
    null = comp["null_kind"]
    at, lastp, cost = comp["at_layer"], comp["last_layer"], comp["cost"]
    none = _none(result)
    base_at = none["at_layer"]["in_forward_accuracy"]
    name = _name(comp) if comp["what"] == "erasure" else \
        f"the top {comp['k']} neurons{' (the minimal subset)' if comp['minimal'] else ''} by " \
        f"{MODE_WORDS.get(comp['mode'], comp['mode'])}"
    words = (f"**{name[0].upper() + name[1:]}**: "
             f"at {layer} the plain probe goes from {num(base_at)} to {num(at['target'])} ({null}: "
             f"{_null(at)}; {at['verdict']}). Retrained, {attribute} is read "
             + (f"at {layer} with {num(comp['retrained_at_layer']['target'])} ({null}: "
                f"{_null(comp['retrained_at_layer'])}) and " if last != layer else "")
             + f"at {last} with {num(lastp['target'])} ({null}: {_null(lastp)}; majority {num(lastp['majority'])}; "
             + ("not above chance" if lastp["at_chance"] else "above chance") + f"): {_recovery_words(comp, layer)}.")
    if cost.get("target") is not None:
        words += (f" The {_job_words(result)} changes by {signed(cost['target'], 3)} ({null}: "
                  f"{_null(cost, 3, sign=True)})")
        groups = [f"{g} {signed(v['target'], 3)} (null {_null(v, 3, sign=True)})"
                  for g, v in (comp.get("cost_by_group") or {}).items() if v.get("target") is not None]
        words += (f"; per group {', '.join(groups)}" if groups else "") + "."
    tasks = [f"{t} {signed(v['target'])} (null {_null(v, sign=True)})" for t, v in (comp.get("tasks") or {}).items()
             if v.get("target") is not None]
    if tasks:
        words += f" Other tasks at {last}: " + ", ".join(tasks) + "."
    return words


def _verdict_words(result: dict) -> str:
    cheap, costly, survives = [], [], []
    comparisons = result.get("comparisons") or []
    if comparisons and comparisons[0]["last_layer"].get("none_at_chance"):
        return (f"**Where removal is cheap**: not measurable here: even without intervention {result['attribute']}'s "
                f"accuracy interval at {result['last_layer']} reaches the majority class, so there is nothing "
                "distinguishable from chance to remove (too few test utterances, or the attribute is not there).")
    for comp in comparisons:
        name = _name(comp)
        if not comp["last_layer"]["at_chance"]:
            survives.append(f"{name} ({result['attribute']} {num(comp['last_layer']['target'])} at "
                            f"{result['last_layer']} vs majority {num(comp['last_layer']['majority'])})")
            continue
        verdict = _is_cheap(comp)
        cost = comp["cost"]
        text = f"{name} ({signed(cost.get('target'), 3)} vs null {_null(cost, 3, sign=True)})"
        (cheap if verdict or verdict is None else costly).append(text)
    parts = []
    if cheap:
        parts.append(f"removal is cheap (the attribute at chance at {result['last_layer']}, the {_job_words(result)} "
                     f"no worse than under its null) for {join_words(cheap)}")
    if costly:
        parts.append(f"removal works but costs more than its null for {join_words(costly)}")
    if survives:
        parts.append(f"the attribute survives (kept or recovered after {result['layer']}) for {join_words(survives)}")
    return "**Where removal is cheap**: " + "; ".join(parts) + "." if parts else "No removal was compared."


def intervention_tables(result: dict) -> list[str]:
    none = _none(result)
    tasks = list(none.get("tasks") or {})
    header = ["condition", "k", f"plain probe at {result['layer']}", "stored-vector edit",
              *[f"retrained at {row['layer']}" for row in none["attribute"]], _job_words(result), *tasks]
    rows = []
    for c in result["conditions"]:
        job = c.get("job") or {}
        rows.append([c["name"], c.get("k"), num(c["at_layer"]["in_forward_accuracy"], 3),
                     num(c["at_layer"].get("stored_accuracy"), 3),
                     *[num(row["accuracy"]["value"], 3) for row in c["attribute"]],
                     num(job.get("value"), 3) if job.get("available") else "–",
                     *[num(c["tasks"][t]["accuracy"]["value"], 3) if t in c["tasks"] else "–" for t in tasks]])
    majority = [num(row["majority_accuracy"], 3) for row in none["attribute"]]
    rows.append(["majority class", "", num(none["attribute"][0]["majority_accuracy"], 3), "", *majority, "",
                 *[num(none["tasks"][t]["majority_accuracy"], 3) for t in tasks]])
    return [f"### Test accuracy of {result['attribute']} (and the other tasks at {result['last_layer']}) per condition",
            md_table(header, rows), *transcript_table(result)]


def transcript_table(result: dict, clips: int = 2) -> list[str]:
    """What the recogniser says: the first clean test clips' transcripts under no intervention, each removal and
    the first draw of its null (WER alone hides whether words were lost, changed or looped)."""
    none = _none(result)
    examples = ((none.get("job") or {}).get("examples") or [])[:clips]
    if (none.get("job") or {}).get("metric") != "wer" or not examples:
        return []
    shown = [c for c in result["conditions"]
             if c["kind"] in ("none", "top", "leace") or c.get("draw") == 0]
    rows = [["reference", *[e["reference"] for e in examples]]]
    for c in shown:
        said = {e["row"]: e["transcript"] for e in ((c.get("job") or {}).get("examples") or [])}
        rows.append([c["name"], *[said.get(e["row"], "–") or "(nothing)" for e in examples]])
    return [f"### Transcripts of the first {len(examples)} clean test clips",
            md_table(["condition", *[f"clip {e['row']}" for e in examples]], rows)]


def intervention_section(result: dict, suffix: str, figures: dict[str, Path], out: Path) -> str:
    """The section of one intervention; its figures are ``intervention_tradeoff_<suffix>`` and
    ``intervention_layers_<suffix>``."""
    title = (f"## Causal intervention: removing {result['attribute']} from {result['encoder']} at layer "
             f"{result['layer']}")
    captions = {f"intervention_tradeoff_{suffix}": "Attribute accuracy at the last layer after removal (x, retrained) against "
                                         "the own job's cost (y): top-k vs random-k neurons, LEACE vs random "
                                         "directions, and the no-intervention point",
                f"intervention_layers_{suffix}": "The attribute's test accuracy at every layer from the intervened one on: "
                                       "retrained (left) and the plain probes unchanged (right)"}
    return section_md(title, intervention_findings(result), intervention_tables(result), captions, figures, out)


def summary_lines(result: dict) -> list[str]:
    lines = []
    for comp in result.get("comparisons") or []:
        cost = comp["cost"]
        lines.append(f"intervention: {result['attribute']} in {result['encoder']} at {result['layer']}, {_name(comp)}: "
                     f"{result['attribute']} at {result['last_layer']} {num(comp['last_layer']['target'])} "
                     f"({comp['null_kind']} {_null(comp['last_layer'])}, majority {num(comp['last_layer']['majority'])})"
                     + (f", {_job_words(result)} {signed(cost['target'], 3)} (null {_null(cost, 3, sign=True)})"
                        if cost.get("target") is not None else ""))
    return lines
