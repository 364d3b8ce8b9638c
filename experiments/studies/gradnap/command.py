"""`speechprobe gradnap`: gradient-adjusted neuron activation profiles (GradNAPs) of groups of utterances.

For every layer: a probe for the task is trained on each cross-validation split (early stopping on its
validation part), and every utterance's relevance (activation x gradient of the log-probability of the
probe's prediction, :mod:`probing.gradnap`) is taken under the probe that never saw it (nor, for
speaker-disjoint tasks, its speaker). Profiles per group (a label column: the task's own by default),
their distances, average-linkage clustering, and a permutation test of how well the layer separates the
groups (whole speakers shuffled when a group holds whole speakers). Writes DIR/gradnap.json,
DIR/profiles.npz (every layer's full profile matrix) and DIR/gradnap.png.

The store is the one `speechprobe sweep` would use: ``<stores>/<encoder>``, extracted once and reused.
The per-layer computation is :func:`probing.gradnap.gradnap_layers`, shared with the sweep's optional
GradNAP units. Imported lazily by the CLI; numpy and torch load only when the command runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import cmd_lazy
from speechprobe.experiments.layout import (GRADNAP_FIGURE as FIGURE, GRADNAP_PROFILES as PROFILES,
                                            GRADNAP_RESULTS as RESULTS)
from speechprobe.io import write_directory
DEFAULT_L1, DEFAULT_L2 = 1e-3, 1e-3


def resolve_groups(index: Any, column: str, source: str) -> Any:
    if column not in index.columns:
        choices = ", ".join(c for c in index.columns if c not in ("utt_id", "file_name", "text", "duration",
                                                                     "channel_params", "row"))
        raise SpeechprobeError(f"{source}: no label column {column!r} for --groups; its columns: {choices}")
    values = index[column]
    if values.isna().any():
        raise SpeechprobeError(f"{source}: column {column!r} has {int(values.isna().sum())} missing values; "
                           "GradNAP groups need a value for every utterance")
    if values.astype(str).nunique() < 2:
        raise SpeechprobeError(f"{source}: column {column!r} has a single value; GradNAPs compare at least 2 groups")
    return values.astype(str).to_numpy()


def cmd_gradnap(args: argparse.Namespace) -> int:
    import time

    from speechprobe.experiments.arguments import load_source
    from speechprobe.experiments.studies.gradnap.figures import draw_gradnap
    from speechprobe.experiments.arguments import (check_out, library_call, parse_strength, parse_training_options,
                                                        progress, resolve_layers)
    from speechprobe.experiments.runner import encoder_store
    from speechprobe.io import write_json
    from speechprobe.probing.gradnap import gradnap_layers

    started = time.perf_counter()
    l1 = parse_strength("--l1", args.l1)
    l2 = parse_strength("--l2", args.l2)
    options = parse_training_options(args).replace(seed=args.seed)  # --seed seeds the probes too
    if args.folds < 3:
        raise SpeechprobeError(f"--folds {args.folds} must be at least 3 (train, validation and test parts)")
    if args.permutations < 99:
        raise SpeechprobeError(f"--permutations {args.permutations} must be at least 99 (a p-value of 0.01 needs 99)")
    out = check_out(args.out)
    tell = progress(args) or (lambda message: None)

    from speechprobe.encoders.registry import check_name
    from speechprobe.tasks.splits import cross_validation_splits
    from speechprobe.tasks.tasks import get_task, task_labels

    check_name(args.encoder)
    corpus = load_source(args, args.corpus)
    task = get_task(args.task, corpus.metadata)
    task_labels(corpus.metadata, task)
    column = args.groups or task.label_column
    resolve_groups(corpus.metadata, column, args.corpus)  # checked before the (long) extraction
    store = encoder_store(corpus, args.encoder, args.stores, tell, progress=not args.quiet)
    index = store.index
    names = resolve_layers(store, args.layers)
    labels = task_labels(index, task)
    groups = resolve_groups(index, column, str(store.path))
    splits = cross_validation_splits(index, task, folds=args.folds, seed=args.seed)
    blocks = index["speaker"].astype(str).to_numpy() if "speaker" in index.columns else None
    layers = {name: store.layer(name) for name in names}
    tell(f"gradnap {args.encoder} / {task.name}, groups: {column} ({len(set(groups))}), {len(names)} layers, "
         f"{len(splits)} folds, {len(labels)} utterances")
    results, profiles = library_call("gradnap", lambda: gradnap_layers(
        layers, labels, groups, splits, blocks=blocks, settings={name: (l1, l2) for name in names},
        options=options, seed=args.seed, n_permutations=args.permutations, tell=tell))
    results = {"encoder": args.encoder, "task": task.name, "groups_column": column, "store": str(store.path),
               "corpus": args.corpus, "folds": args.folds, "seed": args.seed, "n_utterances": int(len(labels)),
               "relevance": "activation x d log p(predicted class) / d activation, cross-fitted over the folds",
               **results}

    def fill(tmp: Path) -> None:
        import numpy as np

        write_json(tmp / RESULTS, results)
        np.savez_compressed(tmp / PROFILES, **{f"layer{i}": profiles[n] for i, n in enumerate(names)},
                            layers=np.array(names), groups=np.array(results["layers"][0]["groups"]))
        draw_gradnap(results, tmp / FIGURE)

    write_directory(out, fill)
    for layer in results["layers"]:
        left, right = layer["root_split"]
        print(f"{layer['layer']:<12} probe accuracy {layer['probe_accuracy']:.3f}, separation {layer['separation']:.3f} (null {layer['null_mean']:.3f}, "
              f"p {layer['p_value']:.3f}{', separates' if layer['separates'] else ''}); "
              f"root split {{{', '.join(left)}}} | {{{', '.join(right)}}}")
    best = results["most_separating"]
    print(f"most separating layer: {best}" if best else "no layer separates the groups above chance")
    print(f"wrote {out / RESULTS}, {out / PROFILES} and {out / FIGURE} in {time.perf_counter() - started:.0f} s")
    return 0


def add_parser(sub: Any) -> None:
    from speechprobe.experiments.arguments import add_compute_options, add_corpus_source

    parser = sub.add_parser(
        "gradnap", help="gradient-adjusted neuron activation profiles of groups (dialects, genders, ...) per layer",
        description="Per layer: probes for TASK cross-fitted over speaker folds, each utterance's neuron relevance "
                    "(activation x gradient of the probe's predicted log-probability), one profile per group of "
                    "--groups (default: the task's labels), distances, average-linkage clustering and a "
                    "permutation test of whether the layer separates the groups. Writes DIR/gradnap.json, "
                    "DIR/profiles.npz and DIR/gradnap.png.")
    parser.add_argument("--corpus", required=True, metavar="SOURCE", help="corpus folder, CSV or HF dataset")
    parser.add_argument("--encoder", required=True, help="a name from `speechprobe encoders`, hf:PATH or random:ARCH")
    parser.add_argument("--task", required=True, help="speaker, gender, dialect, channel or a label column")
    parser.add_argument("--groups", metavar="COLUMN", help="label column whose values are the groups (default: the task's)")
    parser.add_argument("--layers", nargs="+", metavar="LAYER", help="layer names or positions (default: all)")
    parser.add_argument("--stores", default="data/stores", metavar="DIR",
                        help="representation stores, one per encoder, extracted once (default data/stores)")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder for the results")
    parser.add_argument("--l1", default=str(DEFAULT_L1), metavar="X", help=f"L1 strength of the probes (default {DEFAULT_L1:g})")
    parser.add_argument("--l2", default=str(DEFAULT_L2), metavar="Y", help=f"L2 strength of the probes (default {DEFAULT_L2:g})")
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default 5)")
    parser.add_argument("--permutations", type=int, default=200, help="permutations of the separation test (default 200)")
    parser.add_argument("--max-epochs", metavar="N", help="training epochs per probe at most (default 100)")
    add_compute_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="splits, probes and permutations (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_corpus_source(parser)
    parser.set_defaults(func=cmd_lazy("speechprobe.experiments.studies.gradnap.command", "cmd_gradnap"))
