"""Numbers and findings as text, shared by the studies' report sections: one way to print a number, an
interval, a table, a list of findings, a figure link and a section (findings, tables, figures)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional
from urllib.parse import quote

def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, digits: int = 2) -> str:
    """A number to ``digits`` decimals; a missing one (None / NaN in results.json) as a dash."""
    return f"{x:.{digits}f}" if finite(x) else "–"


def sig(x: Any, digits: int = 2) -> str:
    """Two decimals from 0.1 up (0.94, 1.04), else ``digits`` significant figures (0.094, 0.00056, 5.6e-05);
    exactly 0 as 0: for quantities such as a fine-tune's weight change, which fixed decimals print as 0.000."""
    if not finite(x):
        return "–"
    if x == 0:
        return "0"
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.{digits}g}"


def signed(x: Any, digits: int = 2) -> str:
    return f"{x:+.{digits}f}".replace("-", "−") if finite(x) else "–"


def pct(x: Any, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%" if finite(x) else "–"


def value(interval: Any) -> Optional[float]:
    return interval.get("value") if isinstance(interval, dict) else interval


def ival(interval: Any, digits: int = 2) -> str:
    """'0.93 [0.90, 0.95]' (the interval's point estimate and bounds)."""
    if not isinstance(interval, dict):
        return num(interval, digits)
    return f"{num(interval.get('value'), digits)} [{num(interval.get('low'), digits)}, {num(interval.get('high'), digits)}]"


def join_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def figure_link(path: Path, out: Path) -> str:
    """The figure's path relative to the report folder, URL-quoted."""
    return quote(Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix())


def figure_md(name: str, figures: dict[str, Path], out: Path, caption: str) -> str:
    """An image link relative to the report (empty when the figure was not drawn)."""
    path = figures.get(name)
    if path is None:
        return ""
    return f"![{caption}]({figure_link(path, out)})\n\n*{caption}*"


def figures_block(names: list[str], figures: dict[str, Path], out: Path, captions: dict[str, str]) -> str:
    return "\n\n".join(block for n in names if (block := figure_md(n, figures, out, captions.get(n, n))))


NA = "n/a"  # selectivity of a task whose control task means nothing (speaker identity); the reason is said once


def set_text(groups: list[str]) -> str:
    return "{" + ", ".join(groups) + "}"


def p_value_text(p: Any) -> str:
    if not finite(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def section_md(title: str, findings: list[str], tables: list[str], captions: dict[str, str],
             figures: dict[str, Path], out: Path) -> str:
    """A study's section: its findings in words, its tables, then its figures."""
    parts = [title, "### Findings", bullets(findings), *tables]
    block = figures_block(list(captions), figures, out, captions)
    if block:
        parts += ["### Figures", block]
    return "\n\n".join(parts)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def ablation_mode_words(mode: Optional[str]) -> str:
    """An ablation mode in words (:data:`probing.ablation.MODE_DESCRIPTIONS`); results written before the
    mode was recorded used raw zeros, so a missing mode reads as ``"zero"``."""
    from speechprobe.probing.ablation import MODE_DESCRIPTIONS

    mode = "zero" if mode is None else str(mode)
    return MODE_DESCRIPTIONS.get(mode, f"{mode} ablation")


N_SD = 2.0  # an ablation differs from random removal when it is more than this many SDs of it away


def versus_random(m: dict) -> str:
    """', random 40: minimal' beside a subset size, when the random rankings' k is known."""
    if not finite(m.get("random_k_median")):
        return ""
    return f"; random neurons {m['random_k_median']:g}: " + ("minimal" if m.get("is_minimal") else "not a finding")


def check_sentences(checks: dict) -> list[str]:
    """One sentence per ranking check, those that do not beat random first (they must not go unnoticed)."""
    ordered = sorted(checks.items(), key=lambda item: bool(item[1].get("beats_random")))
    return [f"**{task}**: {check.get('summary')}" for task, check in ordered if check.get("summary")]


def removal_verdict(removed: Any, mean: Any, std: Any) -> str:
    """Whether removing the attribute's neurons hurts more than removing as many random ones."""
    if not (finite(removed) and finite(mean)):
        return "not comparable with random removal"
    margin = N_SD * (std if finite(std) else 0.0)
    if removed < mean - margin:
        return f"a larger drop than random removal (more than {N_SD:g} SD below it)"
    if removed > mean + margin:
        return f"less harm than random removal (more than {N_SD:g} SD above it)"
    return f"no different from random removal (within {N_SD:g} SD)"


def closest_index(fractions: list[float], target: Any) -> int:
    if not finite(target):
        return len(fractions) // 2
    return min(range(len(fractions)), key=lambda i: abs(math.log(fractions[i]) - math.log(max(target, 1e-12))))


def kept_verdict(top: Any, mean: Any, std: Any) -> str:
    if not (finite(top) and finite(mean)):
        return "not comparable"
    margin = N_SD * (std if finite(std) else 0.0)
    if top > mean + margin:
        return "the top neurons alone do better than as many random ones"
    if top < mean - margin:
        return "the top neurons alone do worse than as many random ones"
    return f"the top neurons alone do no better than random ones (within {N_SD:g} SD)"


def check_table(checks: dict, title: str) -> str:
    """Top / random / bottom test accuracy per k, one row per (task, k)."""
    rows = []
    for task, c in checks.items():
        for i, k in enumerate(c["ks"]):
            rows.append([task, k, num(c["top_test"][i], 3),
                         f"{num(c['random_test_mean'][i], 3)} ± {num(c['random_test_std'][i], 3)}",
                         num(c["bottom_test"][i], 3), (c.get("verdicts") or ["–"] * len(c["ks"]))[i]])
    return title + "\n\n" + md_table(["task", "k", "top k", "random k", "bottom k", "top vs random"], rows)


def num_or_dash(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def compact_number(value: float) -> str:
    return "0" if value == 0 else f"{value:g}"


def vs_majority(interval: dict, majority: Any) -> str:
    """Where the accuracy interval lies relative to the majority baseline."""
    low, high = interval.get("low"), interval.get("high")
    if not finite(majority):
        return ""
    if finite(low) and low > majority:
        return f"above the majority baseline {num(majority)} (its interval excludes it)"
    if finite(high) and high < majority:
        return f"below the majority baseline {num(majority)}"
    return f"not distinguishable from the majority baseline {num(majority)} (its interval includes it)"
