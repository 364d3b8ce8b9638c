"""The checkpoint comparison's report section: where the weights moved, where the representations diverge and
which tasks' accuracy moved, each against its reference (identical checkpoints: change 0 and CKA 1; accuracy:
the majority class, and whether A's and B's intervals overlap)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from speechprobe.experiments.studies.compare.figures import figure_name
from speechprobe.experiments.writing import (finite, ival, join_words, md_table, num, section_md, sig, signed,
                                             vs_majority)

SMALL_N = 200  # below this many utterances, linear CKA (biased) reads unrelated representations well above 0


def _place(index: int, count: int) -> str:
    if count < 3:
        return f"layer {index + 1} of {count}"
    where = "the first layer" if index == 0 else "the last layer" if index == count - 1 else "an inner layer"
    return f"{where}, {index + 1} of {count}"


def _extreme(rows: list[dict], key: str, largest: bool) -> Optional[tuple[int, dict]]:
    found = [(i, row) for i, row in enumerate(rows) if finite(row.get(key))]
    if not found:
        return None
    return (max if largest else min)(found, key=lambda item: item[1][key])


def weight_words(result: dict) -> str:
    rows, count = result["layers"], len(result["layers"])
    per_layer = ", ".join(f"{row['layer']} {sig(row.get('relative'))}" for row in rows)
    top = _extreme(rows, "relative", largest=True)
    if top is None:
        return (f"**Weights**: no layer has weights of its own to compare ({per_layer}); identical checkpoints would "
                "read 0.")
    low = _extreme(rows, "relative", largest=False)
    (i, row), (j, least) = top, low
    words = (f"**Weights** (relative change ‖W_B − W_A‖ / ‖W_A‖ of the parameters computing each layer; identical "
             f"checkpoints: 0): they moved most at {row['layer']} ({sig(row['relative'])}, {_place(i, count)}) and "
             f"least at {least['layer']} ({sig(least['relative'])}, {_place(j, count)}); per layer: {per_layer}.")
    if all(r["relative"] == 0 for r in rows if finite(r.get("relative"))):
        words += " Every layer's weights are bit-identical."
    elif count >= 3:
        inner = [r["relative"] for r in rows[1:-1] if finite(r.get("relative"))]
        outer = [r["relative"] for r in (rows[0], rows[-1]) if finite(r.get("relative"))]
        if inner and outer:
            mean_inner, mean_outer = sum(inner) / len(inner), sum(outer) / len(outer)
            close = abs(mean_inner - mean_outer) <= 0.1 * max(mean_inner, mean_outer)
            how = "about as much as" if close else "more than" if mean_inner > mean_outer else "less than"
            words += (f" Inner layers moved {how} the first and last (mean {sig(mean_inner)} vs "
                      f"{sig(mean_outer)}).")
    tensors = row.get("top_tensors") or []
    if tensors and row.get("n_tensors", 0) > 1:
        words += (f" At {row['layer']} the largest change is in {tensors[0]['name']} (‖B − A‖ "
                  f"{sig(tensors[0]['change'])}, relative {sig(tensors[0].get('relative'))}).")
    missing = [f"{r['layer']} ({r['reason']})" for r in rows if not finite(r.get("relative")) and r.get("reason")]
    if missing:
        words += f" No relative change for {join_words(missing)}."
    fixed = result.get("fixed")
    if fixed:
        how = "are bit-identical" if fixed.get("change") == 0 else f"moved by {sig(fixed.get('relative'))}"
        words += (f" Fixed parameters, part of the architecture and not learned (e.g. Whisper's sinusoidal "
                  f"positions; {fixed['n_parameters']}), are counted in no layer: they {how}.")
    rest = result.get("unassigned")
    if rest:
        words += (f" Parameters that compute no stored layer ({rest['n_parameters']} in {rest.get('n_tensors')} "
                  f"tensors, e.g. a head) moved by {sig(rest.get('relative'))}.")
    return words


def cka_words(result: dict) -> str:
    rows, count, n = result["layers"], len(result["layers"]), result["n_utterances"]
    per_layer = ", ".join(f"{row['layer']} {num(row.get('cka'), 3)}" for row in rows)
    low, high = _extreme(rows, "cka", largest=False), _extreme(rows, "cka", largest=True)
    if low is None:
        return f"**Representations**: no CKA could be computed ({per_layer})."
    (i, row), (j, top) = low, high
    words = (f"**Representations** (linear CKA of A's and B's vectors of the same {n} utterances; identical "
             f"representations: 1): they diverge most at {row['layer']} ({num(row['cka'], 3)}, {_place(i, count)}) "
             f"and are most alike at {top['layer']} ({num(top['cka'], 3)}, {_place(j, count)}); per layer: "
             f"{per_layer}.")
    if all(abs(r["cka"] - 1.0) <= 1e-6 for r in rows if finite(r.get("cka"))):
        words += " At every layer the two representations are the same up to rotation and scale."
    if n < SMALL_N:
        words += (f" With {n} utterances CKA is biased upward: unrelated representations read well above 0, so "
                  "compare layers with each other rather than with 0.")
    return words


def _acc(interval: dict) -> str:
    return ival(interval)


def task_words(result: dict, task: dict) -> str:
    rows = task["layers"]
    by_layer = {row["layer"]: row for row in rows}
    name = task["task"]
    parts = []
    for key, label, best in (("a", "A", task["best_layer_a"]), ("b", "B", task["best_layer_b"])):
        row = by_layer.get(best)
        if row is None:
            continue
        parts.append(f"{label} peaks at {best} with {_acc(row[key])}, "
                     f"{vs_majority(row[key], row['majority_' + key])}")
    words = f"**{name}**: " + "; ".join(parts) + "."
    apart = [row for row in rows if row.get("overlap") is False]
    if not apart:
        words += " A's and B's accuracy intervals overlap at every layer: no layer where the accuracy moved " \
                 "distinguishably."
    else:
        moved = [f"{row['layer']} ({signed(row['difference'])}: A {_acc(row['a'])}, B {_acc(row['b'])})" for row in apart]
        higher = sum(1 for row in apart if (row.get("difference") or 0) > 0)
        words += (f" The intervals do not overlap at {len(apart)} of {len(rows)} layers, where B − A is "
                  f"{join_words(moved)}: B is {'higher' if higher == len(apart) else 'lower' if higher == 0 else 'higher at some, lower at others'}.")
    differences = [row for row in rows if finite(row.get("difference"))]
    if differences:
        largest = max(differences, key=lambda row: abs(row["difference"]))
        words += f" The largest difference is at {largest['layer']} ({signed(largest['difference'])})."
    return words


def compare_findings(result: dict) -> list[str]:
    items = [weight_words(result), cka_words(result)]
    items += [task_words(result, task) for task in result.get("tasks") or []]
    if result.get("tasks"):
        items.append("Overlapping intervals do not show that A and B are equal, and A and B are scored on the same "
                     "test utterances (their errors are not independent): read overlap as \"not distinguishable "
                     "here\".")
    return items


def compare_tables(result: dict) -> list[str]:
    layers = md_table(["layer", "parameters", "‖W_A‖", "‖W_B − W_A‖", "relative change", "linear CKA"],
                      [[row["layer"], row.get("n_parameters", "–"), num(row.get("norm_a"), 3),
                        sig(row.get("change"), 3), sig(row.get("relative")), num(row.get("cka"), 3)]
                       for row in result["layers"]])
    rows = []
    for task in result.get("tasks") or []:
        for row in task["layers"]:
            rows.append([task["task"], row["layer"], _acc(row["a"]), _acc(row["b"]), signed(row.get("difference")),
                         {True: "yes", False: "no"}.get(row.get("overlap"), "–"), num(row["majority_a"])])
    tables = ["### Weights and representations per layer", layers]
    if rows:
        tables += ["### Probe test accuracy per task and layer (A, B)",
                   md_table(["task", "layer", f"A: {result['encoder_a']}", f"B: {result['encoder_b']}", "B − A",
                             "intervals overlap", "majority"], rows)]
    return tables


def compare_section(result: dict, figures: dict[str, Path], out: Path) -> str:
    title = f"## Checkpoint comparison: {result['encoder_a']} (A) vs {result['encoder_b']} (B)"
    captions = {figure_name(result): "Per layer: the relative weight change (bars; 0 for identical weights) and "
                                     "linear CKA of A's and B's representations (line; 1 for identical), then per "
                                     "task the probe test accuracy of A and B with intervals and the majority class"}
    return section_md(title, compare_findings(result), compare_tables(result), captions, figures, out)


def summary_lines(result: dict) -> list[str]:
    rows = result["layers"]
    top, low = _extreme(rows, "relative", largest=True), _extreme(rows, "cka", largest=False)
    head = f"compare: {result['encoder_a']} vs {result['encoder_b']}:"
    lines = [head + (f" weights moved most at {top[1]['layer']} ({sig(top[1]['relative'])})" if top else
                     " no weights to compare")
             + (f", CKA lowest at {low[1]['layer']} ({num(low[1]['cka'], 3)})" if low else "")]
    for task in result.get("tasks") or []:
        apart = [row["layer"] for row in task["layers"] if row.get("overlap") is False]
        lines.append(f"compare: {task['task']}: best layer A {task['best_layer_a']}, B {task['best_layer_b']}; "
                     + (f"intervals apart at {', '.join(apart)}" if apart else "intervals overlap at every layer"))
    return lines
