"""`speechprobe probe` and `speechprobe neurons`: probes and neuron analyses on a representation store.

`probe`: one probe per layer for a task, its (l1, l2) chosen on validation from a grid, scored once on
test (cluster-bootstrap intervals over speakers), with a control task for selectivity (not for speaker
identity, whose control task is itself learnt by recognising speakers: selectivity n/a, with the reason
in `selectivity_note`); writes `results.json` and every chosen probe.

`neurons`: the chosen probe of one layer (or of all layers concatenated) ranks its neurons; the smallest
top-k that keeps `--target` of the validation accuracy, and ablation curves (top vs random vs bottom;
mean ablation unless `args.ablation_mode` is "zero": raw-zero ablation, an out-of-distribution shift);
writes `neurons.json` and the probe.

Every check that can fail on user input (grid, layers, task, output folder) runs before any probe is
trained; results are written into a temporary sibling folder that is renamed into place, so `--out` is
either complete or absent. Imported lazily by `experiments.cli` (this module pulls in numpy and torch).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.layout import probe_dir_names
from speechprobe.io import check_writable, write_directory, write_json
from speechprobe.tasks.errors import CorpusError

RESULTS, NEURONS = "results.json", "neurons.json"
PROBES_DIR, CONTROL_PROBES_DIR, PROBE_DIR = "probes", "control_probes", "probe"
ALL_LAYERS = "all"


# --------------------------------------------------------------------------------------------------
# argument checks (no store opened yet)


def parse_strength(flag: str, text: str) -> float:
    """A regularisation strength: a finite number >= 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SpeechprobeError(f"{flag} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SpeechprobeError(f"{flag} {text!r} must be a finite number >= 0")
    return value


def parse_grid(args: argparse.Namespace) -> list[tuple[float, float]] | None:
    """--l1/--l2 (one setting) or --grid "l1:l2,l1:l2" (several); None for the sweep's default grid."""
    l1, l2, grid = args.l1, args.l2, args.grid
    if (l1 is None) != (l2 is None):
        given = "--l1" if l1 is not None else "--l2"
        raise SpeechprobeError(f"{given} needs {'--l2' if l1 is not None else '--l1'} too: give both, or --grid L1:L2,...")
    if l1 is not None and grid is not None:
        raise SpeechprobeError("give either --l1/--l2 or --grid, not both")
    if l1 is not None:
        return [(parse_strength("--l1", l1), parse_strength("--l2", l2))]
    if grid is None:
        return None
    pairs = []
    for item in grid.split(","):
        a, sep, b = item.strip().partition(":")
        if not sep or not a.strip() or not b.strip() or ":" in b:
            raise SpeechprobeError(f"--grid {item.strip()!r} is not L1:L2 (e.g. --grid 0:0,0.001:0.001)")
        try:
            pair = (float(a), float(b))
        except ValueError:
            raise SpeechprobeError(f"--grid {item.strip()!r}: L1 and L2 must be numbers") from None
        if not all(math.isfinite(v) and v >= 0 for v in pair):
            raise SpeechprobeError(f"--grid {item.strip()!r}: L1 and L2 must be finite numbers >= 0")
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def parse_target(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SpeechprobeError(f"--target {text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise SpeechprobeError(f"--target {text!r} must be a fraction in (0, 1] of the full probe's accuracy")
    return value


def parse_probe_params(args: argparse.Namespace) -> dict[str, Any]:
    """Training parameters of every probe trained (passed to probe_layers; the others reuse the probe's)."""
    if args.max_epochs is None:
        return {}
    try:
        epochs = int(args.max_epochs)
    except ValueError:
        raise SpeechprobeError(f"--max-epochs {args.max_epochs!r} is not a whole number") from None
    if epochs < 1:
        raise SpeechprobeError(f"--max-epochs {args.max_epochs!r} must be at least 1")
    return {"max_epochs": epochs}


def check_out(out: str) -> Path:
    """--out must be absent or an empty folder (results are never written over others), and writable: the
    results are written beside it and renamed into place, so its parent must take a file, and so must the
    folder itself where it exists (a read-only mount). Checked before any probe is trained."""
    path = Path(out)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise SpeechprobeError(f"--out {path} exists and is not a folder; choose another --out")
        if any(path.iterdir()):
            raise SpeechprobeError(f"--out {path} exists and is not empty; choose another --out or remove it")
    check_writable(path.parent, path)
    return path


# --------------------------------------------------------------------------------------------------
# store, task, layers


def open_store(path: str):
    from speechprobe.encoders.store import RepresentationStore

    return RepresentationStore(path)


def resolve_layers(store, requested: Sequence[str] | None) -> list[str]:
    """Layer names (or positions, as `extract --layers`) -> store layer names, in the order given."""
    names = store.layer_names
    if not requested:
        return list(names)
    chosen: list[str] = []
    for layer in requested:
        if layer in names:
            name = layer
        elif layer.lstrip("-").isdigit() and -len(names) <= int(layer) < len(names):
            name = names[int(layer)]
        else:
            raise SpeechprobeError(f"{store.path}: no layer {layer!r}; its layers: {', '.join(names)}")
        if name not in chosen:
            chosen.append(name)
    return chosen


class TaskData:
    """A task's labels and split over a store's index (every corpus check runs here)."""

    def __init__(self, store, task_name: str, seed: int, control: bool) -> None:
        from speechprobe.tasks.splits import control_labels, control_split, make_split
        from speechprobe.tasks.tasks import get_task, task_labels

        index = store.index
        self.task = get_task(task_name, index)
        self.labels = task_labels(index, self.task)
        self.split = make_split(index, self.task, seed=seed)
        self.groups = index["speaker"].astype(str).to_numpy() if "speaker" in index.columns else None
        self.control_labels = self.control_split = None
        self.control_note = self.task.control_note  # why the control task means nothing here (speaker identity)
        if control and self.control_note is None:
            try:
                self.control_labels = control_labels(index, self.task, seed=seed)
                self.control_split = control_split(index, seed=seed)
            except CorpusError as error:
                raise CorpusError(f"{error} (or skip it with --no-control)") from error

    def sizes(self) -> dict[str, int]:
        return {part: int(len(rows)) for part, rows in self.split.parts().items()}


def library_call(what: str, call: Callable[[], Any]) -> Any:
    """Run a probing function; its ValueError (a clear one-line message on bad input) is a user error."""
    try:
        return call()
    except ValueError as error:
        raise SpeechprobeError(f"{what}: {error}") from error


def progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    if args.quiet:
        return None
    return lambda message: print(f"speechprobe: {message}", file=sys.stderr, flush=True)


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _g(value: float) -> str:
    return "0" if value == 0 else f"{value:g}"


# --------------------------------------------------------------------------------------------------
# speechprobe probe


def cmd_probe(args: argparse.Namespace) -> int:
    grid = parse_grid(args)
    probe_params = parse_probe_params(args)
    out = check_out(args.out)
    store = open_store(args.store)
    layer_names = resolve_layers(store, args.layers)
    data = TaskData(store, args.task, args.seed, control=not args.no_control)

    from speechprobe.probing.sweep import DEFAULT_GRID, probe_layers

    layers = {name: store.layer(name) for name in layer_names}
    sweep = library_call(f"task {data.task.name}", lambda: probe_layers(
        layers, data.labels, data.split, grid=DEFAULT_GRID if grid is None else grid, groups=data.groups,
        control_labels=data.control_labels, control_split=data.control_split, probe_params=probe_params,
        seed=args.seed, progress=progress(args)))

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
        "probe_params": sweep.probes[layer_names[0]].get_params(),
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
        f"majority baseline {_f(scores[0]['majority_accuracy'])}; "
        f"test intervals: {first['confidence']:.0%} bootstrap over {first['resampled']}",
    ]
    width = max(5, *(len(s["layer"]) for s in scores))
    header = (f"{'layer':<{width}}  {'l1':>7}  {'l2':>7}  {'accuracy [low, high]':<22}  {'macro-F1':>8}  "
              f"{'control':>7}  {'select.':>7}  {'sparsity':>8}")
    lines += [header, "-" * len(header)]
    na = "n/a" if results.get("selectivity_note") else None
    for s in scores:
        acc = f"{s['accuracy']['value']:.3f} [{s['accuracy']['low']:.3f}, {s['accuracy']['high']:.3f}]"
        control, select = (na, na) if na else (_f(s["control_accuracy"]), _f(s["selectivity"]))
        lines.append(f"{s['layer']:<{width}}  {_g(s['l1']):>7}  {_g(s['l2']):>7}  {acc:<22}  "
                     f"{s['macro_f1']['value']:>8.3f}  {control:>7}  {select:>7}  "
                     f"{s['sparsity']:>8.2f}")
    if results.get("selectivity_note"):
        lines.append(f"control and selectivity n/a for {results['task']}: {results['selectivity_note']}")
    best = next(s for s in scores if s["layer"] == results["best_layer"])
    lines.append(f"best layer (chosen on validation accuracy {best['validation_accuracy']:.3f}): "
                 f"{results['best_layer']}, test accuracy {best['accuracy']['value']:.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# speechprobe neurons


def cmd_neurons(args: argparse.Namespace) -> int:
    grid = parse_grid(args)
    target = parse_target(args.target)
    probe_params = parse_probe_params(args)
    out = check_out(args.out)
    store = open_store(args.store)
    if args.layer == ALL_LAYERS:
        layer_names = store.layer_names
    else:
        layer_names = resolve_layers(store, [args.layer])
    data = TaskData(store, args.task, args.seed, control=False)

    from speechprobe.experiments.neuron_ablation import analyse_neurons
    from speechprobe.probing.ranking import layer_locations
    from speechprobe.probing.sweep import DEFAULT_GRID, probe_layers

    label = ALL_LAYERS if args.layer == ALL_LAYERS else layer_names[0]
    blocks = [np.asarray(store.layer(name)) for name in layer_names]
    X = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
    y = data.labels

    sweep = library_call(f"layer {label}", lambda: probe_layers(
        {label: X}, y, data.split, grid=DEFAULT_GRID if grid is None else grid, groups=data.groups,
        probe_params=probe_params, seed=args.seed, progress=progress(args)))
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
        f"probe l1={_g(result['l1'])} l2={_g(result['l2'])}, test accuracy {result['test_accuracy']:.3f} "
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
    from speechprobe.experiments.figures import ablation_mode_words

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
