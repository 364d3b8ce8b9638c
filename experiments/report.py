"""The report of a run: ``report.md``, a self-contained ``report.html`` and a terminal summary.

Every sentence is computed from the results (the dict that becomes ``results.json``): a claim such as
"above chance", "disadvantages" or "beats its random twin" is made only when the numbers printed beside
it support it, so a report of another run (or of the same run after a fix) never carries stale wording.
The HTML is the Markdown rendered by markdown-it-py, with each figure embedded as a data URI, so the one
file can be mailed or archived without its folder.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote

from speechprobe.experiments import registry
from speechprobe.experiments.studies.sweep.results import model_encoders, model_units
from speechprobe.experiments.study import ReportContext
from speechprobe.experiments.writing import figure_link, figures_block, join_words, pct
from speechprobe.io import write_text


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;line-height:1.5;color:#222}
h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;height:auto;display:block;margin:1em 0}code{background:#f3f3f3;padding:0 .2em}
blockquote{border-left:4px solid #9ab;margin:1em 0;padding:.2em 1em;background:#f6f8fa}
"""


# --------------------------------------------------------------------------------------------------
# the run header


def _first_interval(results: dict) -> Optional[dict]:
    stack: list[Any] = [results.get("sweep"), results.get("audit")]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            if {"value", "low", "high", "confidence"} <= set(item):
                return item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _probe_config(results: dict) -> dict:
    return (results.get("config") or {}).get("probe") or {}


def _encoders(results: dict) -> list[str]:
    sweep, audit, ablation = results.get("sweep"), results.get("audit"), results.get("ablation")
    names = model_encoders(sweep) if sweep else []
    names += [s["encoder"] for s in (audit, ablation) if s and s.get("encoder")]
    interventions = results.get("intervention") or []
    names += [s["encoder"] for s in (interventions if isinstance(interventions, list) else [interventions])
              if s.get("encoder")]
    names += list((results.get("topomap") or {}).get("encoders") or [])
    compare = results.get("compare") or {}
    names += [compare[key] for key in ("encoder_a", "encoder_b") if isinstance(compare.get(key), str)]
    return list(dict.fromkeys(names))


def _split_note(sweep: Optional[dict], folds: Any) -> str:
    """Folds over speakers, and the tasks split another way (e.g. speaker identity: within speakers)."""
    units = model_units(sweep) if sweep else []
    odd = {}
    for unit in units:
        if unit.get("split_policy") not in (None, "speaker_disjoint"):
            odd[unit["task"]] = (unit["split_policy"].replace("_", "-"), unit.get("n_folds"))
    text = f"{folds}-fold cross-validation over speakers (no test speaker seen in training)" if folds else \
        "cross-validation over speakers"
    for task, (policy, n) in odd.items():
        text += f"; {task} is split {policy} ({n} fold{'s' if n != 1 else ''})"
    return text


def header(results: dict) -> str:
    """Title and one paragraph: corpus, encoders, settings."""
    name = results.get("name", "run")
    corpus = results.get("corpus") or {}
    source = corpus.get("source") or (results.get("config") or {}).get("corpus")
    parts = [f"Run **{name}**" + (f" (speechprobe {results['speechprobe']})" if results.get("speechprobe") else "")]
    if source:
        size = []
        if corpus.get("utterances") is not None:
            size.append(f"{corpus['utterances']} utterances")
        if corpus.get("speakers") is not None:
            size.append(f"{corpus['speakers']} speakers")
        parts.append(f"on corpus `{source}`" + (f" ({', '.join(size)})" if size else ""))
    text = " ".join(parts) + "."
    sweep = results.get("sweep")
    baselines = (sweep or {}).get("baselines") or {}
    encoders = [f"{e} (random-weights twin: {baselines[e]})" if e in baselines else e for e in _encoders(results)]
    if encoders:
        text += f" Encoders: {join_words(encoders)}."
    probe = _probe_config(results)
    grid = probe.get("grid")
    grid_text = "the default (l1, l2) grid" if not grid else \
        "the (l1, l2) grid " + ", ".join(f"({a:g}, {b:g})" for a, b in grid)
    settings = [f"elastic-net probes, {_split_note(sweep, probe.get('folds'))}",
                f"regularisation chosen on validation from {grid_text}"]
    if probe.get("max_epochs"):
        settings.append(f"at most {probe['max_epochs']} epochs")
    if probe.get("n_resamples"):
        settings.append(f"{probe['n_resamples']} bootstrap resamples")
    if probe.get("method"):
        settings.append(f"neurons ranked by {probe['method']}")
    if probe.get("target"):
        settings.append(f"minimal subsets keep {pct(probe['target'], 0)} of the full probe's validation accuracy")
    text += " Settings: " + "; ".join(settings) + "."
    return f"# Report: {name}\n\n{text}"


def how_to_read(results: dict) -> str:
    """The reading note, with the interval kind taken from the results."""
    first = _first_interval(results)
    if first:
        unit = "whole speakers" if first.get("resampled") == "groups" else "single utterances"
        ci = (f"Intervals in brackets are {pct(first['confidence'], 0)} bootstrap intervals resampling {unit} "
              f"({first.get('n_resamples')} resamples): one speaker's utterances are not independent.")
    else:
        ci = "Intervals in brackets are bootstrap intervals."
    return ("> **How to read this.** " + ci + " The best layer of each encoder and task is chosen on "
            "validation accuracy; the test folds are touched once, by the chosen probes, and test accuracy is "
            "pooled over the folds (every utterance tested once). Selectivity is test accuracy minus the "
            "accuracy of a probe trained on a control task (labels that carry no property): high selectivity "
            "means the probe reads the property rather than memorising. Majority is the accuracy of always "
            "answering the training folds' most frequent class.")


# --------------------------------------------------------------------------------------------------
# documents


def report_markdown(results: dict, figures: dict[str, Path], out: Path) -> str:
    """The whole report as Markdown (figure links relative to ``out``): the header, then each study's section."""
    context = ReportContext(results, figures, out)
    parts = [header(results), how_to_read(results)]
    for study in registry.STUDIES:
        result = study.result_in(results)
        if result and (section := study.report(result, context)):
            parts.append(section)
    placed = "\n".join(parts)
    others = [n for n in figures if f"({figure_link(figures[n], out)})" not in placed]
    if others:
        parts.append("## Other figures\n\n" + figures_block(others, figures, out, {}))
    return "\n\n".join(parts) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_to_html(markdown: str, out: Path, title: str) -> str:
    """Render with markdown-it-py (tables on, raw HTML off) and embed every local image as a data URI."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        path = Path(out) / unquote(src)
        if src.startswith("data:"):
            return match.group(0)
        if not path.is_file():
            return 'src=""'
        return f'src="{_data_uri(path)}"'

    body = re.sub(r'src="([^"]*)"', embed, body)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}</main>\n"
            f"</body>\n</html>\n")


def write_report(results: dict, figures: dict[str, Path], out: Path) -> tuple[Path, Path]:
    """Write ``out/report.md`` and the self-contained ``out/report.html``; returns their paths."""
    out = Path(out)
    markdown = report_markdown(results, {k: Path(v) for k, v in figures.items()}, out)
    md_path = write_text(out / "report.md", markdown)
    html_path = write_text(out / "report.html", markdown_to_html(markdown, out, f"speechprobe report: {results.get('name', 'run')}"))
    return md_path, html_path


# --------------------------------------------------------------------------------------------------
# terminal


def summary_table(results: dict) -> str:
    """The studies' summary lines (per encoder x task: best layer, accuracy, random twin, selectivity; the
    audit; the ablation), for the terminal."""
    lines = [line for study in registry.STUDIES if (result := study.result_in(results)) for line in study.summary(result)]
    return "\n".join(lines) if lines else "(no results)"
