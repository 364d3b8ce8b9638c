"""`speechprobe probe`: one probe per layer of a store for a task, its (l1, l2) chosen on validation from a
grid, scored once on test (cluster-bootstrap intervals over speakers), with a control task for selectivity
(not for speaker identity, whose control task is itself learnt by recognising speakers: selectivity n/a, with
the reason in `selectivity_note`); writes `results.json` and every chosen probe. Every check that can fail on
user input runs before any probe is trained; the results folder is renamed into place whole."""
from __future__ import annotations

import argparse
from pathlib import Path

from speechprobe.experiments.arguments import (check_out, library_call, open_store, parse_grid, parse_memory,
                                               parse_training_options, progress, resolve_layers)
from speechprobe.experiments.layout import CONTROL_PROBES_DIR, probe_dir_names, PROBES_DIR, RESULTS
from speechprobe.experiments.runner import command_task
from speechprobe.experiments.writing import compact_number, num_or_dash
from speechprobe.io import write_directory, write_json

def cmd_probe(args: argparse.Namespace) -> int:
    grid = parse_grid(args)
    options = parse_training_options(args)
    memory = parse_memory(args)
    out = check_out(args.out)
    store = open_store(args.store)
    layer_names = resolve_layers(store, args.layers)
    data = command_task(store, args.task, seed=args.seed, control=not args.no_control)

    from speechprobe.probing.sweep import DEFAULT_GRID, probe_layers

    layers = {name: store.layer(name) for name in layer_names}
    sweep = library_call(f"task {data.task.name}", lambda: probe_layers(
        layers, data.labels, data.split, grid=DEFAULT_GRID if grid is None else grid, groups=data.groups,
        control_labels=data.control_labels, control_split=data.control_split, options=options,
        seed=args.seed, memory=memory, progress=progress(args)))

    dirs = probe_dir_names(layer_names)
    results = {
        "store": str(store.path),
        "encoder": store.manifest.get("encoder"),
        "task": data.task.name,
        "label_column": data.task.label_column,
        "split_policy": data.task.split_policy,
        "seed": args.seed,
        "n_utterances": len(data.labels),
        "split": data.sizes(),
        "control": data.control_labels is not None,
        "probe_params": sweep.probes[layer_names[0]].get_params(),  # the first layer's probe: l1, l2 and options
        "training_options": options.as_dict(),
        **sweep.as_dict(),
        **({"selectivity_note": data.control_note} if data.control_note else {}),
        "probe_dirs": {name: f"{PROBES_DIR}/{dirs[name]}" for name in layer_names},
    }
    if sweep.control_probes:
        results["control_probe_dirs"] = {name: f"{CONTROL_PROBES_DIR}/{dirs[name]}" for name in sweep.control_probes}

    def fill(tmp: Path) -> None:
        for name, probe in sweep.probes.items():
            probe.save(tmp / PROBES_DIR / dirs[name])
        for name, probe in sweep.control_probes.items():
            probe.save(tmp / CONTROL_PROBES_DIR / dirs[name])
        write_json(tmp / RESULTS, results)

    write_directory(out, fill)
    print(probe_table(results))
    print(f"wrote {out / RESULTS} and the probes in {out / PROBES_DIR}")
    return 0


def probe_table(results: dict) -> str:
    """The per-layer scores as a compact table, then the layer chosen on validation."""
    scores = results["layers"]
    split = results["split"]
    first = scores[0]["accuracy"]
    lines = [
        f"task {results['task']} on {results['encoder']}: {results['n_utterances']} utterances "
        f"(train {split['train']}, validation {split['validation']}, test {split['test']}), "
        f"majority baseline {num_or_dash(scores[0]['majority_accuracy'])}; "
        f"test intervals: {first['confidence']:.0%} bootstrap over {first['resampled']}",
    ]
    width = max(5, *(len(s["layer"]) for s in scores))
    header = (f"{'layer':<{width}}  {'l1':>7}  {'l2':>7}  {'accuracy [low, high]':<22}  {'macro-F1':>8}  "
              f"{'control':>7}  {'select.':>7}  {'sparsity':>8}")
    lines += [header, "-" * len(header)]
    na = "n/a" if results.get("selectivity_note") else None
    for s in scores:
        acc = f"{s['accuracy']['value']:.3f} [{s['accuracy']['low']:.3f}, {s['accuracy']['high']:.3f}]"
        control, select = (na, na) if na else (num_or_dash(s["control_accuracy"]), num_or_dash(s["selectivity"]))
        lines.append(f"{s['layer']:<{width}}  {compact_number(s['l1']):>7}  {compact_number(s['l2']):>7}  {acc:<22}  "
                     f"{s['macro_f1']['value']:>8.3f}  {control:>7}  {select:>7}  "
                     f"{s['sparsity']:>8.2f}")
    if results.get("selectivity_note"):
        lines.append(f"control and selectivity n/a for {results['task']}: {results['selectivity_note']}")
    best = next(s for s in scores if s["layer"] == results["best_layer"])
    lines.append(f"best layer (chosen on validation accuracy {best['validation_accuracy']:.3f}): "
                 f"{results['best_layer']}, test accuracy {best['accuracy']['value']:.3f}")
    return "\n".join(lines)
