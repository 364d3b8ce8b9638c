"""`speechprobe neurons`: the chosen probe of one layer (or of all layers concatenated) ranks its neurons;
the ranking checked against random neurons, the smallest top-k that keeps `--target` of the validation
accuracy (beside random rankings'), and ablation curves (mean ablation unless `--ablation-mode zero`: raw
zeros, an out-of-distribution shift); writes `neurons.json` and the probe."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from speechprobe.experiments.arguments import (check_out, library_call, open_store, parse_grid, parse_memory,
                                               parse_target, parse_training_options, progress, resolve_layers)
from speechprobe.experiments.layout import ALL_LAYERS, NEURONS, PROBE_DIR
from speechprobe.experiments.runner import command_task
from speechprobe.experiments.writing import compact_number
from speechprobe.io import write_directory, write_json

def cmd_neurons(args: argparse.Namespace) -> int:
    grid = parse_grid(args)
    target = parse_target(args.target)
    options = parse_training_options(args)
    memory = parse_memory(args)
    out = check_out(args.out)
    store = open_store(args.store)
    if args.layer == ALL_LAYERS:
        layer_names = store.layer_names
    else:
        layer_names = resolve_layers(store, [args.layer])
    data = command_task(store, args.task, seed=args.seed, control=False)

    from speechprobe.experiments.studies.ablation.compute import analyse_neurons
    from speechprobe.probing.ranking import layer_locations
    from speechprobe.probing.sweep import DEFAULT_GRID, probe_layers

    label = ALL_LAYERS if args.layer == ALL_LAYERS else layer_names[0]
    blocks = [np.asarray(store.layer(name)) for name in layer_names]
    X = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
    y = data.labels

    sweep = library_call(f"layer {label}", lambda: probe_layers(
        {label: X}, y, data.split, grid=DEFAULT_GRID if grid is None else grid, groups=data.groups,
        options=options, seed=args.seed, memory=memory, progress=progress(args)))
    probe, score = sweep.probes[label], sweep.layers[0]
    mode = args.ablation_mode
    analysis = library_call("neurons", lambda: analyse_neurons(
        probe, X, y, data.split, method=args.method, target=target, mode=mode, tell=progress(args)))

    result: dict[str, Any] = {
        "store": str(store.path),
        "encoder": store.manifest.get("encoder"),
        "task": data.task.name,
        "layer": label,
        "method": args.method,
        "ablation_mode": mode,
        "seed": args.seed,
        "n_neurons": int(X.shape[1]),
        "split": data.sizes(),
        "l1": float(probe.l1),
        "l2": float(probe.l2),
        "grid": sweep.as_dict()["grid"],
        "probe_params": probe.get_params(),
        "validation_accuracy": score.validation_accuracy,
        "test_accuracy": score.accuracy.value,
        "test_accuracy_interval": [score.accuracy.low, score.accuracy.high],
        "majority_accuracy": score.majority_accuracy,
        **analysis,
    }
    if label == ALL_LAYERS:
        result.update(layer_locations(list(layer_names), [b.shape[1] for b in blocks], np.asarray(analysis["ranking"])))

    def fill(tmp: Path) -> None:
        probe.save(tmp / PROBE_DIR)
        write_json(tmp / NEURONS, result)

    write_directory(out, fill)
    print(neurons_summary(result))
    print(f"wrote {out / NEURONS} and the probe in {out / PROBE_DIR}")
    return 0


def neurons_summary(result: dict) -> str:
    low, high = result["test_accuracy_interval"]
    m, a = result["minimal_subset"], result["ablation"]
    lines = [
        f"task {result['task']}, layer {result['layer']} of {result['encoder']} ({result['n_neurons']} neurons): "
        f"probe l1={compact_number(result['l1'])} l2={compact_number(result['l2'])}, test accuracy {result['test_accuracy']:.3f} "
        f"[{low:.3f}, {high:.3f}] (majority {result['majority_accuracy']:.3f})",
        f"minimal subset ({result['method']} ranking): k={m['k']} ({m['fraction']:.1%} of the neurons), "
        f"validation accuracy {m['accuracy']:.3f} vs {m['full_accuracy']:.3f} with all "
        f"(target {m['target']:.0%}: {m['threshold']:.3f})"
        + ("" if m["reached"] else "; the target was not reached, so it is every neuron"),
    ]
    if m.get("summary"):
        lines.append(f"against random: {m['summary']}")
    if result.get("check"):
        lines.append(f"ranking check: {result['check']['summary']}")
    at = int(np.argmax(a["fractions"]))
    from speechprobe.experiments.writing import ablation_mode_words

    lines.append(
        f"ablation, {a['fractions'][at]:.0%} of the neurons ({a['ks'][at]}) removed by "
        f"{ablation_mode_words(a.get('mode'))}, test accuracy "
        f"(full {a['full_accuracy']:.3f}): top {a['removed_top'][at]:.3f}, "
        f"random {a['removed_random_mean'][at]:.3f} +- {a['removed_random_std'][at]:.3f}, "
        f"bottom {a['removed_bottom'][at]:.3f}")
    if result.get("top_counts"):
        lines.append(f"top {result['top_k']} neurons by layer: "
                     + ", ".join(f"{name} {n}" for name, n in result["top_counts"].items()))
    return "\n".join(lines)
