"""`speechprobe topomap`: a run with one ``topomap`` section built from flags (as `speechprobe compare` builds
its section), so it gets the same checks, run folder, cached units, report and dashboards as ``speechprobe run
CONFIG.yaml`` with that section.

``--store STORE``: a representation store folder names its encoder and corpus in its manifest, and the folder it
sits in is the run's ``stores`` (a run reads the store of encoder E as ``<stores>/<E's folder name>``, so the
folder must carry that name). Or, as the other study commands, ``--corpus SOURCE --encoder NAME`` (``--stores``).
Imported lazily by the CLI."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import cmd_lazy


def default_name(encoder: str, tasks: list[str]) -> str:
    """`topomap-ge2e-gender`: a run name (letters, digits, . _ -) from the encoder and tasks."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]", "-", "-".join(["topomap", encoder, *tasks]))).strip("-.")


def store_source(text: str) -> tuple[str, str, str, list[str]]:
    """(encoder, corpus source, stores folder, layer names) of the store folder ``text``."""
    from speechprobe.encoders.store import MANIFEST, RepresentationStore
    from speechprobe.experiments.runner import store_dir_name

    path = Path(text)
    if not path.is_dir():
        raise SpeechprobeError(f"--store {text}: no such store folder")
    if not (path / MANIFEST).is_file():
        raise SpeechprobeError(f"--store {text}: not a complete representation store (no {MANIFEST}); extract it "
                               "first (speechprobe extract) or give --corpus and --encoder")
    store = RepresentationStore(path)  # validates the manifest and arrays' headers (one line naming the problem)
    manifest = store.manifest
    if manifest.get("intervention"):
        raise SpeechprobeError(f"--store {text}: a store of an intervened forward pass; give a plain store")
    encoder, corpus = manifest.get("encoder"), manifest.get("corpus_source")
    if not encoder or not corpus:
        raise SpeechprobeError(f"--store {text}: its manifest does not name its encoder and corpus; give --corpus "
                               "and --encoder")
    if path.resolve().name != store_dir_name(encoder):
        raise SpeechprobeError(f"--store {text}: a run reads the store of {encoder} as <stores>/"
                               f"{store_dir_name(encoder)}, but this folder is named {path.resolve().name}; rename it "
                               "or give --corpus, --encoder and --stores")
    return str(encoder), str(corpus), str(path.parent), list(store.layer_names)


def cmd_topomap(args: argparse.Namespace) -> int:
    from speechprobe.experiments.run_commands import run_section

    if args.store:
        encoder, corpus, stores, layers = store_source(args.store)
        if args.encoder is not None and args.encoder != encoder:
            raise SpeechprobeError(f"--encoder {args.encoder}: the store {args.store} holds {encoder}; leave --encoder out")
        if args.stores is not None and Path(args.stores).resolve() != Path(stores).resolve():
            raise SpeechprobeError(f"--stores {args.stores}: the store {args.store} sits in {stores}; leave --stores out")
        if args.layer not in ("best", "all") and args.layer not in layers:
            raise SpeechprobeError(f"--layer {args.layer!r} is not a layer of {args.store} ({', '.join(layers)}; "
                                   "or best, all)")
        if args.corpus is None:
            if not Path(corpus).exists():
                raise SpeechprobeError(f"--store {args.store}: its corpus {corpus} is not found from here; give "
                                       "--corpus")
            args.corpus = corpus
        args.stores = stores
    elif not args.corpus or not args.encoder:
        raise SpeechprobeError("give --store STORE, or --corpus SOURCE and --encoder NAME")
    else:
        encoder = args.encoder
    tasks = list(dict.fromkeys(args.task))
    section: dict[str, Any] = {"encoders": [encoder], "tasks": tasks, "layer": args.layer}
    if args.top_fraction is not None:
        section["top_fraction"] = args.top_fraction
    if args.permutations is not None:
        section["permutations"] = args.permutations
    return run_section(args, "topomap", default_name(encoder, tasks), "topomap", section)


def add_parser(sub: Any) -> None:
    from speechprobe.experiments.config import default_of, TopomapSection
    from speechprobe.experiments.run_commands import add_common_options

    parser = sub.add_parser(
        "topomap", help="topographic maps of a layer's neurons: where a task's groups and salient neurons lie",
        description="Lay one layer's neurons out on a grid so that neighbours correlate over the corpus (built on "
                    "the first fold's training utterances, judged on its test utterances against random placement, "
                    "stability over half-samples), and paint it with each label group's profile, the task probe's "
                    "weight magnitude and its top-ranked neurons; permutation tests say whether the salient neurons "
                    "gather and which maps are smooth (Moran's I). Reuses the sweep's probes (computed when "
                    "missing). Writes the run folder: results.json, figures/, report.md, report.html.")
    parser.add_argument("--store", metavar="STORE",
                        help="a representation store folder: its manifest gives the encoder and corpus, its parent "
                             "folder the stores (instead of --corpus and --encoder)")
    parser.add_argument("--encoder", help="with --corpus instead of --store: a name from `speechprobe encoders`")
    parser.add_argument("--task", nargs="+", required=True, metavar="TASK",
                        help="the task(s) painted on the map (gender, dialect, ... or a label column)")
    parser.add_argument("--layer", default=default_of(TopomapSection, "layer"),
                        help="a layer name, best (each task's best layer in the sweep; default) or all")
    parser.add_argument("--top-fraction", type=float, metavar="F",
                        help=f"share of the neurons counted salient (default {default_of(TopomapSection, 'top_fraction')})")
    parser.add_argument("--permutations", type=int, metavar="N",
                        help=f"permutations per test (default {default_of(TopomapSection, 'permutations')})")
    add_common_options(parser, name_help="run name (default topomap-<encoder>-<tasks>)")
    for action in parser._actions:  # the store names its corpus: --corpus only without --store
        if action.dest == "corpus":
            action.required = False
            action.help = "corpus folder, CSV or HF dataset (default with --store: the store's corpus)"
    parser.set_defaults(func=cmd_lazy("speechprobe.experiments.studies.topomap.command", "cmd_topomap"))
