"""`speechprobe run CONFIG.yaml` and `speechprobe sweep|audit|ablation`: a whole study, one command.

The three flag commands build the same config a YAML file would give (and so the same checks), run it,
and write the run folder (:mod:`experiments.runner`): units, ``results.json`` (every number of the
report), ``figures/*.png``, ``report.md`` and a self-contained ``report.html``; the run is logged to the
dashboards named by ``--logger``. Imported lazily by :mod:`experiments.cli`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.io import check_writable, naming
from speechprobe.experiments.arguments import add_corpus_source, column_map
from speechprobe.experiments.config import (DEFAULT_LOGGERS, LOGGER_NAMES, PRESET_NAMES, SIMILARITY_MEASURES, RunConfig,
                                           load_config, parse_config)

RESULTS, FIGURES_DIR, LOGS_DIR = "results.json", "figures", "logs"


def execute(config: RunConfig, *, quiet: bool = False) -> dict[str, Any]:
    """Run every section of ``config``; returns the results (also written to the run folder)."""
    from importlib.metadata import version

    from speechprobe.experiments.dashboard import Dashboard, parse_loggers
    from speechprobe.experiments.runner import Run, check_names, check_stores_writable, prepare_corpus, reporter
    from speechprobe.io import write_json

    try:
        loggers = parse_loggers(list(config.logger))
    except ValueError as error:
        raise SpeechprobeError(f"logger: {error}") from None
    started = time.perf_counter()
    check_writable(config.out_dir)  # before any work: a read-only or forbidden folder fails here, in one line
    corpus = prepare_corpus(config, reporter(quiet))
    check_names(config, corpus)
    check_stores_writable(config)
    run = Run.open(config, quiet=quiet, corpus=corpus)  # only now is anything written
    results: dict[str, Any] = {
        "name": config.name,
        "config": config.as_plain(),
        "speechprobe": version("speechprobe"),
        "corpus": {"source": str(config.corpus), "utterances": len(corpus),
                   "speakers": int(corpus.metadata["speaker"].nunique()) if "speaker" in corpus.metadata else None},
    }
    if config.sweep:
        from speechprobe.experiments.layer_sweep import run_sweep

        results["sweep"] = run_sweep(run, config.sweep)
    if config.audit:
        from speechprobe.experiments.bias_audit import run_audit

        results["audit"] = run_audit(run, config.audit)
    if config.ablation:
        from speechprobe.experiments.neuron_ablation import run_ablation

        results["ablation"] = run_ablation(run, config.ablation)
    results["units_computed"] = list(run.computed)

    from speechprobe.experiments.figures import make_figures
    from speechprobe.experiments.report import summary_table, write_report

    run.tell("drawing the figures and writing the report")
    with naming(run.out):  # a write that fails without naming its file (a full disk) names the run folder
        figures = make_figures(results, run.out / FIGURES_DIR)
        write_json(run.out / RESULTS, results)
        report_md, report_html = write_report(results, figures, run.out)
        where = {}
        if loggers:
            run.tell(f"logging to {', '.join(loggers)}")
            with Dashboard(loggers, run.out / LOGS_DIR, config.name, config.as_plain()) as dashboard:
                log_to_dashboard(dashboard, results, figures)
                where = dashboard.close()
    results["_report"] = {"markdown": str(report_md), "html": str(report_html), "logs": where,
                          "seconds": time.perf_counter() - started}
    if not quiet:
        print(summary_table(results))
    print(f"report: {report_html} (and {report_md.name}); numbers in {run.out / RESULTS}")
    if "wandb_sync" in where:
        print(f"wandb: logged offline; upload with `{where['wandb_sync']}`")
    return results


def log_to_dashboard(dashboard: Any, results: dict, figures: dict[str, Path]) -> None:
    """Per-layer metrics (step = layer position), the tables behind the figures, and the figures."""
    sweep = results.get("sweep")
    if sweep:
        rows = []
        for unit in sweep["results"]:
            prefix = f"sweep/{unit['encoder']}/{unit['task']}"
            for position, layer in enumerate(unit["layers"]):
                dashboard.log_metrics({f"{prefix}/accuracy": layer["accuracy"]["value"],
                                       f"{prefix}/macro_f1": layer["macro_f1"]["value"],
                                       f"{prefix}/control_accuracy": layer["control_accuracy"],
                                       f"{prefix}/selectivity": layer["selectivity"]}, step=position)
                rows.append({"encoder": unit["encoder"], "role": unit["role"], "task": unit["task"],
                             "layer": layer["layer"], "accuracy": layer["accuracy"]["value"],
                             "low": layer["accuracy"]["low"], "high": layer["accuracy"]["high"],
                             "macro_f1": layer["macro_f1"]["value"], "control_accuracy": layer["control_accuracy"],
                             "selectivity": layer["selectivity"], "majority": layer["majority_accuracy"]})
        dashboard.log_table("sweep", rows)
    audit = results.get("audit")
    if audit:
        rows = [{"task": task, "layer": g["layer"], "group": group, "accuracy": g["accuracy"][group]["value"],
                 "low": g["accuracy"][group]["low"], "high": g["accuracy"][group]["high"],
                 "gap": g["gap"]["value"], "flagged": g["flagged"]}
                for task, g in audit["groups"].items() for group in g["groups"]]
        dashboard.log_table("audit_groups", rows)
    ablation = results.get("ablation")
    if ablation:
        curve = ablation["ablation"]
        rows = [{"fraction": f, "k": k, "removed_top": t, "removed_random": r, "removed_bottom": b,
                 "kept_top": kt, "kept_random": kr, "kept_bottom": kb}
                for f, k, t, r, b, kt, kr, kb in zip(curve["fractions"], curve["ks"], curve["removed_top"],
                                                     curve["removed_random_mean"], curve["removed_bottom"],
                                                     curve["kept_top"], curve["kept_random_mean"], curve["kept_bottom"])]
        dashboard.log_table("ablation", rows)
    for name, path in figures.items():
        dashboard.log_figure(name, path)


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
    if args.out:
        config = parse_config({**config.as_plain(), "out": args.out}, args.config)
    execute(config, quiet=args.quiet)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    data = _common(args, "sweep")
    data["sweep"] = {"encoders": args.encoders, "baselines": _baselines(args.baselines),
                     **({"tasks": args.tasks} if args.tasks else {}),
                     **({"similarity": args.similarity} if args.similarity else {})}
    execute(parse_config(data, "speechprobe sweep"), quiet=args.quiet)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    data = _common(args, f"audit-{args.attribute}")
    data["audit"] = {"encoder": args.encoder, "attribute": args.attribute, "layer": args.layer,
                     **({"tasks": args.tasks} if args.tasks else {})}
    execute(parse_config(data, "speechprobe audit"), quiet=args.quiet)
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    data = _common(args, f"ablation-{args.task}")
    data["ablation"] = {"encoder": args.encoder, "task": args.task, "layer": args.layer}
    execute(parse_config(data, "speechprobe ablation"), quiet=args.quiet)
    return 0


def add_parsers(sub: Any) -> None:
    """The run/sweep/audit/ablation subcommands (called by experiments.cli.build_parser)."""
    from speechprobe.experiments.arguments import cmd_lazy

    run = sub.add_parser("run", help="run the studies of a YAML config (sweep, audit, ablation) and write the report",
                         description="Run every section of CONFIG (see experiments/configs/) into its run folder: "
                                     "results.json, figures/, report.md, report.html, logs/. A rerun reuses the "
                                     "finished parts.")
    run.add_argument("config", metavar="CONFIG.yaml")
    run.add_argument("--out", metavar="DIR", help="run folder (default: the config's out, or data/runs/<name>)")
    run.add_argument("--quiet", action="store_true", help="no progress lines and no summary table")
    run.set_defaults(func=cmd_lazy("speechprobe.experiments.run_commands", "cmd_run"))

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--corpus", required=True, metavar="SOURCE", help="corpus folder, CSV or HF dataset")
        parser.add_argument("--corpus-preset", choices=PRESET_NAMES,
                            help="build the synthetic corpus of this size at --corpus if it is missing")
        add_corpus_source(parser)
        parser.add_argument("--stores", metavar="DIR", help="representation stores, one per encoder (default data/stores)")
        parser.add_argument("--out", metavar="DIR", help="run folder (default data/runs/<name>)")
        parser.add_argument("--name", help="run name (default: the command and its task)")
        parser.add_argument("--seed", type=int, default=0, help="splits, control task, bootstrap (default 0)")
        parser.add_argument("--folds", type=int, help="speaker folds of the cross-validation (default 5)")
        parser.add_argument("--max-epochs", type=int, help="training epochs per probe at most (default 100)")
        parser.add_argument("--logger", default=",".join(DEFAULT_LOGGERS),
                            help=f"none, or any of {','.join(LOGGER_NAMES[1:])} (default {','.join(DEFAULT_LOGGERS)})")
        parser.add_argument("--quiet", action="store_true", help="no progress lines and no summary table")

    sweep = sub.add_parser("sweep", help="layer-wise probing of encoders x tasks, with random-weights baselines",
                           description="Probe every layer of every encoder for every task (cross-validated over "
                                       "speaker folds), beside each encoder's random-weights twin.")
    common(sweep)
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
    common(audit)
    audit.add_argument("--encoder", required=True)
    audit.add_argument("--attribute", default="gender")
    audit.add_argument("--tasks", nargs="+", metavar="TASK", help="the other tasks (default speaker dialect channel)")
    audit.add_argument("--layer", default="best", help="a layer name, or best (default)")
    audit.set_defaults(func=cmd_lazy("speechprobe.experiments.run_commands", "cmd_audit"))

    ablation = sub.add_parser("ablation", help="neuron ablation curves and the minimal subset for a task",
                              description="Rank a layer's neurons (or all layers'), find the minimal subset and "
                                          "measure top / random / bottom ablation with and without retraining.")
    common(ablation)
    ablation.add_argument("--encoder", required=True)
    ablation.add_argument("--task", default="gender")
    ablation.add_argument("--layer", default="all", help="a layer name, best, or all (default: every layer concatenated)")
    ablation.set_defaults(func=cmd_lazy("speechprobe.experiments.run_commands", "cmd_ablation"))
