"""Drawing helpers shared by the studies' figures: one look (sizes, colours, DPI), atomic PNG writes, the
Agg backend imported lazily (the report renders without a display), and `draw_figures`, which draws a
study's planned figures and turns a failure into a warning (the numbers took far longer than a figure)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from speechprobe.io import write_atomically

DPI = 110
PANEL_W, PANEL_H = 4.6, 3.4  # inches per panel: modest files, readable labels
GREY, RED = "0.45", "#c0392b"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(text: str) -> str:
    """A task or encoder name as a file-name part (`random:ge2e` -> `random-ge2e`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", str(text))


def save_figure(fig: Any, path: Path) -> Path:
    """Write the figure atomically and close it."""
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        pyplot().close(fig)


def panels(n: int, *, width: float = PANEL_W, height: float = PANEL_H, sharey: bool = True) -> tuple[Any, list]:
    """A row of ``n`` panels (wrapping after three) with constrained layout, so labels never overlap."""
    plt = pyplot()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             sharey=sharey, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def interval_value(interval: Any) -> Optional[float]:
    return interval.get("value") if isinstance(interval, dict) else interval


def interval_bounds(interval: Any) -> tuple[Optional[float], Optional[float]]:
    if not isinstance(interval, dict):
        return None, None
    return interval.get("low"), interval.get("high")


def as_float(value: Any) -> float:
    """None (a NaN in results.json) as NaN, so matplotlib leaves a gap instead of failing."""
    return float("nan") if value is None else float(value)


def ci_label(section: Any) -> str:
    """'95% CI' from the first interval found in a section, so the label follows the config."""
    stack = [section]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "confidence" in item and "low" in item:
                return f"{100 * item['confidence']:g}% CI"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return "CI"


def rotate_if_crowded(ax: Any, labels: list[str]) -> None:
    if len(labels) > 5 or max((len(s) for s in labels), default=0) > 8:
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")


def grouped_bars(ax: Any, labels: list[str], series: list[tuple[str, list[float]]],
                  errors: Optional[list[Optional[list[float]]]] = None) -> None:
    """Bars of several series side by side at each label."""
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series):
        offsets = [j - 0.4 + width * (i + 0.5) for j in range(len(labels))]
        err = errors[i] if errors else None
        ax.bar(offsets, values, width, yerr=err, capsize=3 if err else 0, label=name, color=f"C{i}")
    ax.set_xticks(range(len(labels)), labels)
    rotate_if_crowded(ax, labels)


def curve(ax: Any, x: list[float], top: list, mean: list, std: list, bottom: list) -> None:
    mean_f, std_f = [as_float(m) for m in mean], [as_float(s) for s in std]
    ax.plot(x, [as_float(v) for v in top], marker="o", color=RED, label="top neurons")
    ax.plot(x, mean_f, marker="o", color="C0", label="random neurons (mean ± SD)")
    ax.fill_between(x, [m - s for m, s in zip(mean_f, std_f)], [m + s for m, s in zip(mean_f, std_f)],
                    color="C0", alpha=0.2, linewidth=0)
    ax.plot(x, [as_float(v) for v in bottom], marker="o", color=GREY, label="bottom neurons")


def check_panel(ax: Any, check: dict) -> str:
    """A ranking's sanity curve: its top k kept alone and retrained, against k random and the bottom k;
    returns a note for the panel's title naming the small k where it is not better than random."""
    curve(ax, check["ks"], check["top_test"], check["random_test_mean"], check["random_test_std"],
           check["bottom_test"])
    ax.set_xscale("log")
    ax.set_xlabel("neurons kept k (log scale)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    small = [(k, v) for k, v in zip(check["ks"], check.get("verdicts") or []) if k <= 10]
    if check.get("beats_random") is False:
        return "does NOT beat random at k <= 10"
    not_better = [str(k) for k, v in small if v != "better"]
    return f"not better than random at k = {', '.join(not_better)}" if not_better else ""
