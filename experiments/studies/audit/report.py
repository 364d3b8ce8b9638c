"""The bias audit's report section: how and where the attribute is encoded, its neurons, who is disadvantaged."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from speechprobe.experiments.writing import (ablation_mode_words, check_sentences, check_table, finite, ival,
                                             join_words, md_table, num, p_value_text, pct, removal_verdict,
                                             section_md, signed, value, versus_random, vs_majority)

ALPHA = 0.05  # an overlap is "above chance" when its hypergeometric p-value is below this


def encoding_sentence(audit: dict) -> str:
    encoding = audit.get("encoding") or {}
    layers = encoding.get("layers") or []
    best = next((s for s in layers if s["layer"] == encoding.get("best_layer")), None)
    attribute, encoder = audit.get("attribute"), audit.get("encoder")
    text = ""
    if best is not None:
        accs = [value(s["accuracy"]) for s in layers if finite(value(s["accuracy"]))]
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
    keep = f"keep {pct(target, 0)} of" if finite(target) else "reach the target share of"
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
    others = [f"{t} {m['k']} ({pct(m['fraction'])}{versus_random(m)})" for t, m in salient.items() if t != attribute]
    if others:
        text += f" The other tasks' minimal subsets: {join_words(others)}."
    return text


def _overlap_phrase(cell: dict) -> str:
    p = cell.get("p_value")
    stats = f"J = {num(cell.get('jaccard'))} vs chance {num(cell.get('chance'))}, p = {p_value_text(p)}"
    if finite(p) and p < ALPHA:
        return f"above chance ({stats})"
    return f"not above chance ({stats})"


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
             if i not in (a, b) and finite(matrix[a][b].get("p_value")) and matrix[a][b]["p_value"] < ALPHA]
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


def audit_ablation_sentences(audit: dict) -> list[str]:
    ablation = audit.get("ablation") or {}
    k = len(ablation.get("neurons") or [])
    attribute = audit.get("attribute")
    out = []
    for task, e in (ablation.get("tasks") or {}).items():
        full, removed = e.get("full"), e.get("removed_attribute_neurons")
        drop = removed - full if finite(full) and finite(removed) else None
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
                f"random neurons): " + (f"the ranking does not beat random neurons at small k for {join_words(failing)}, "
                                        "so its subsets and overlaps there are not findings."
                                        if failing else "every task's ranking beats random neurons at small k."))
        items.append(lead + "\n" + "\n".join(f"  - {s}" for s in check_sentences(checks)))
    items += overlap_sentences(audit)
    groups = audit.get("groups") or {}
    if groups:
        flagged = [t for t, g in groups.items() if g.get("flagged")]
        lead = (f"**Who is disadvantaged**: {len(flagged)} of {len(groups)} tasks show a gap between "
                f"{audit.get('attribute')} groups beyond chance" + (f" ({join_words(flagged)})." if flagged else "."))
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
              f"{m['random_k_median']:g}" if finite(m.get("random_k_median")) else "–",
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
            return f"{num(c.get('jaccard'))} / {num(c.get('chance'))} (p {p_value_text(c.get('p_value'))})"

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


def audit_section(audit: dict, figures: dict[str, Path], out: Path, target: Any) -> str:
    title = f"## Bias audit: {audit.get('attribute')} in {audit.get('encoder')}"
    mode = ablation_mode_words((audit.get("ablation") or {}).get("mode", "mean"))
    captions = {"audit_groups": "The other tasks' test accuracy per group, with intervals; red: gap beyond chance",
                "overlap": "Jaccard overlap of the tasks' minimal subsets, each cell J / chance",
                "audit_checks": "Each task's ranking at the audited layer: top k kept alone vs k random and the bottom k",
                "audit_ablation": "Accuracy with all neurons, without the attribute's neurons, without random ones; "
                                  f"removal by {mode}"}
    return section_md(title, audit_findings(audit, target), audit_tables(audit), captions, figures, out)
