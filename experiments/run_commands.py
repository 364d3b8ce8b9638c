"""`speechprobe run CONFIG.yaml` and `speechprobe sweep|audit|ablation`: a whole study, one command.

The three flag commands build the same config a YAML file would give (and so the same checks), run it,
and write the run folder (:mod:`experiments.runner`): units, ``results.json`` (every number of the
report), ``figures/*.png``, ``report.md`` and a self-contained ``report.html``; the run is logged to the
dashboards named by ``--logger``. Imported lazily by :mod:`experiments.cli`.
"""
from __future__ import annotations

import argparse
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import add_compute_options, add_corpus_source, column_map, compute_settings
from speechprobe.experiments.config import (DEFAULT_LOGGERS, load_config, LOGGER_NAMES, parse_config, PRESET_NAMES,
                                            SIMILARITY_MEASURES)


# --------------------------------------------------------------------------------------------------
# commands


def _common(args: argparse.Namespace, default_name: str) -> dict[str, Any]:
    data: dict[str, Any] = {"name": args.name or default_name, "corpus": args.corpus, "seed": args.seed,
                            "logger": [part for part in args.logger.split(",") if part.strip()]}
    if args.corpus_preset:
        data["corpus_preset"] = args.corpus_preset
    if args.column:
        data["columns"] = column_map(args.column)
    if args.hf_split != "train":
        data["corpus_split"] = args.hf_split
    if args.stores:
        data["stores"] = args.stores
    if args.out:
        data["out"] = args.out
    probe = {}
    if args.folds is not None:
        probe["folds"] = args.folds
    if args.max_epochs is not None:
        probe["max_epochs"] = args.max_epochs
    if probe:
        data["probe"] = probe
    if compute_settings(args):
        data["compute"] = compute_settings(args)
    return data


def _baselines(text: str | None) -> Any:
    if text is None or text in ("auto", "none"):
        return text or "auto"
    pairs = {}
    for item in text.split(","):
        encoder, sep, baseline = item.partition("=")
        if not sep or not encoder.strip() or not baseline.strip():
            raise SpeechprobeError(f"--baselines {item!r} is not ENCODER=BASELINE (or auto, none)")
        pairs[encoder.strip()] = baseline.strip()
    return pairs


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    compute = compute_settings(args)
    if args.out or compute:
        plain = config.as_plain()
        config = parse_config({**plain, **({"out": args.out} if args.out else {}),
                               "compute": {**plain.get("compute", {}), **compute}}, args.config)
    from speechprobe.experiments.execute import execute

    execute(config, quiet=args.quiet)
    return 0


def run_section(args: argparse.Namespace, command: str, default_name: str, key: str, section: dict[str, Any]) -> int:
    """A run with one study section built from flags (the common flags fill the rest), executed like
    ``speechprobe run``: every study command ends here."""
    from speechprobe.experiments.execute import execute

    data = _common(args, default_name)
    data[key] = section
    execute(parse_config(data, f"speechprobe {command}"), quiet=args.quiet)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    return run_section(args, "sweep", "sweep", "sweep",
                       {"encoders": args.encoders, "baselines": _baselines(args.baselines),
                        **({"tasks": args.tasks} if args.tasks else {}),
                        **({"similarity": args.similarity} if args.similarity else {})})


def cmd_audit(args: argparse.Namespace) -> int:
    return run_section(args, "audit", f"audit-{args.attribute}", "audit",
                       {"encoder": args.encoder, "attribute": args.attribute, "layer": args.layer,
                        **({"tasks": args.tasks} if args.tasks else {})})


def cmd_ablation(args: argparse.Namespace) -> int:
    return run_section(args, "ablation", f"ablation-{args.task}", "ablation",
                       {"encoder": args.encoder, "task": args.task, "layer": args.layer})


def add_common_options(parser: argparse.ArgumentParser, *,
                       name_help: str = "run name (default: the command and its task)",
                       seed_help: str = "splits, control task, bootstrap (default 0)",
                       folds_help: str = "speaker folds of the cross-validation (default 5)") -> None:
    """The flags every one-section study command shares (sweep, audit, ablation, intervene): the corpus, the
    stores, the run folder, seed, folds, training, compute and logging (what `_common` turns into a config)."""
    parser.add_argument("--corpus", required=True, metavar="SOURCE", help="corpus folder, CSV or HF dataset")
    parser.add_argument("--corpus-preset", choices=PRESET_NAMES,
                        help="build the synthetic corpus of this size at --corpus if it is missing")
    add_corpus_source(parser)
    parser.add_argument("--stores", metavar="DIR", help="representation stores, one per encoder (default data/stores)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default data/runs/<name>)")
    parser.add_argument("--name", help=name_help)
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--folds", type=int, help=folds_help)
    parser.add_argument("--max-epochs", type=int, help="training epochs per probe at most (default 100)")
    add_compute_options(parser)
    parser.add_argument("--logger", default=",".join(DEFAULT_LOGGERS),
                        help=f"none, or any of {','.join(LOGGER_NAMES[1:])} (default {','.join(DEFAULT_LOGGERS)})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines and no summary table")


def add_parsers(sub: Any) -> None:
    """The run/sweep/audit/ablation subcommands (called by experiments.cli.build_parser)."""
    from speechprobe.experiments.arguments import cmd_lazy

    run = sub.add_parser("run", help="run the studies of a YAML config (sweep, audit, ablation) and write the report",
                         description="Run every section of CONFIG (see experiments/configs/) into its run folder: "
                                     "results.json, figures/, report.md, report.html, logs/. A rerun reuses the "
                                     "finished parts.")
    run.add_argument("config", metavar="CONFIG.yaml")
    run.add_argument("--out", metavar="DIR", help="run folder (default: the config's out, or data/runs/<name>)")
    add_compute_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress lines and no summary table")
    run.set_defaults(func=cmd_lazy("speechprobe.experiments.run_commands", "cmd_run"))

    sweep = sub.add_parser("sweep", help="layer-wise probing of encoders x tasks, with random-weights baselines",
                           description="Probe every layer of every encoder for every task (cross-validated over "
                                       "speaker folds), beside each encoder's random-weights twin.")
    add_common_options(sweep)
    sweep.add_argument("--encoders", nargs="+", required=True, metavar="ENCODER")
    sweep.add_argument("--tasks", nargs="+", metavar="TASK", help="default: speaker gender dialect channel")
    sweep.add_argument("--baselines", metavar="auto|none|ENC=BASE,...", help="random-weights baselines (default auto)")
    sweep.add_argument("--similarity", choices=SIMILARITY_MEASURES, metavar="MEASURE",
                       help="also compare layers within each encoder and against its baseline "
                            f"({', '.join(SIMILARITY_MEASURES)})")
    sweep.set_defaults(func=cmd_lazy("speechprobe.experiments.run_commands", "cmd_sweep"))

    audit = sub.add_parser("audit", help="bias audit of an attribute (gender by default) in one encoder",
                           description="Where and how strongly the attribute is encoded, how many neurons carry "
                                       "it and how they overlap the other tasks' neurons, the other tasks' "
                                       "accuracy per attribute group, and what removing its neurons does.")
    add_common_options(audit)
    audit.add_argument("--encoder", required=True)
    audit.add_argument("--attribute", default="gender")
    audit.add_argument("--tasks", nargs="+", metavar="TASK", help="the other tasks (default speaker dialect channel)")
    audit.add_argument("--layer", default="best", help="a layer name, or best (default)")
    audit.set_defaults(func=cmd_lazy("speechprobe.experiments.run_commands", "cmd_audit"))

    ablation = sub.add_parser("ablation", help="neuron ablation curves and the minimal subset for a task",
                              description="Rank a layer's neurons (or all layers'), find the minimal subset and "
                                          "measure top / random / bottom ablation with and without retraining.")
    add_common_options(ablation)
    ablation.add_argument("--encoder", required=True)
    ablation.add_argument("--task", default="gender")
    ablation.add_argument("--layer", default="all", help="a layer name, best, or all (default: every layer concatenated)")
    ablation.set_defaults(func=cmd_lazy("speechprobe.experiments.run_commands", "cmd_ablation"))
