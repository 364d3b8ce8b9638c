"""Running a config: check everything that can be checked before any work, compute each study the config
asks for (in registry order; each reuses the cached units of earlier runs), then draw the figures, write
`results.json` and the report, and log to the dashboards."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.config import RunConfig
from speechprobe.experiments import registry
from speechprobe.experiments.layout import FIGURES_DIR, LOGS_DIR, RESULTS
from speechprobe.io import check_writable, naming

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
    compute_studies(config, run, results)
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


def compute_studies(config: RunConfig, run: Any, results: dict) -> dict:
    """Each registered study whose config section is present, in registry order, into ``results``."""
    for study in registry.STUDIES:
        section = study.section(config)
        if section is not None:
            study.store_in(results, study.compute(run, section, results))
    return results


def log_to_dashboard(dashboard: Any, results: dict, figures: dict[str, Path]) -> None:
    """Each study's metrics and tables, then every figure."""
    for study in registry.STUDIES:
        result = study.result_in(results)
        if result:
            study.dashboard(result, dashboard)
    for name, path in figures.items():
        dashboard.log_figure(name, path)
