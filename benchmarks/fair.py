"""Timing that does not flatter us: each side in its own process, a warm-up first, the median of at least
five runs, and the machine's load recorded before and after.

Load slows Python-heavy code (NeuroX's thousand small optimiser steps) far more than batched matrix products,
so a ratio taken on a busy machine favours the batched side. The load average cannot tell: it counts the
benchmark's own processes too. So each measurement reads the machine's busy CPU time (/proc/stat) and the
timed process's own CPU time around it: what is left is what other processes took meanwhile, in cores.
`ratio` reports a ratio only when others took less than `IDLE_OTHERS` of a core on both sides, and
otherwise reports it as None with the reason (`under_load`), so a README number can only come from an idle
machine. The 1-minute load average is recorded as well.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
IDLE_OTHERS = 0.25  # cores that other processes may keep busy, on average, for a measurement to count as idle
MIN_REPEATS = 5


def machine_state() -> dict[str, Any]:
    return {"load_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count() or 1}


def busy_seconds() -> Optional[float]:
    """CPU seconds the whole machine has been busy (all cores), or None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_isolated(setup: str, run: str, *, repeats: int = MIN_REPEATS, warmup: int = 1,
                  result: str = "None", threads: Optional[int] = None, timeout: int = 1800) -> dict[str, Any]:
    """Time the statement `run` in a fresh Python process: `setup` runs once, then `warmup` untimed runs,
    then `repeats` timed ones; `result` (an expression, evaluated after the last run) comes back as JSON.
    Returns the median, all times, the result and the load around the measurement."""
    if repeats < MIN_REPEATS:
        raise ValueError(f"at least {MIN_REPEATS} timed runs give a median worth reporting, not {repeats}")
    script = "\n".join([
        "import json, time, torch",
        f"torch.set_num_threads({threads})" if threads else "",
        textwrap.dedent(setup),
        f"for _ in range({warmup}):",
        textwrap.indent(textwrap.dedent(run), "    "),
        "times = []",
        f"for _ in range({repeats}):",
        "    _start = time.perf_counter()",
        textwrap.indent(textwrap.dedent(run), "    "),
        "    times.append(time.perf_counter() - _start)",
        f"print('@@RESULT@@' + json.dumps({{'times': times, 'result': {result}}}, default=float))",
    ])
    before, busy, own, wall = machine_state(), busy_seconds(), _children_seconds(), time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    wall = time.perf_counter() - wall
    others = None if busy is None else max(0.0, (busy_seconds() - busy) - (_children_seconds() - own)) / wall
    after = machine_state()
    if done.returncode != 0:
        raise RuntimeError(f"timed process failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("@@RESULT@@"))
    payload = json.loads(line[len("@@RESULT@@"):])
    return {"seconds": statistics.median(payload["times"]), "times": [round(t, 4) for t in payload["times"]],
            "result": payload["result"], "load_before": before["load_1min"], "load_after": after["load_1min"],
            "other_cores": None if others is None else round(others, 3),
            # without /proc/stat, fall back on the load average, with one core allowed for the benchmark itself
            "idle": others < IDLE_OTHERS if others is not None else after["load_1min"] < 1 + IDLE_OTHERS}


def ratio(numerator: dict[str, Any], denominator: dict[str, Any], *, scale: float = 1.0) -> dict[str, Any]:
    """`scale * numerator / denominator` of two `time_isolated` results, reported only if both were idle."""
    idle = numerator["idle"] and denominator["idle"]
    value = scale * numerator["seconds"] / denominator["seconds"]
    if idle:
        return {"value": round(value, 3), "idle": True}
    others = [side.get("other_cores") for side in (numerator, denominator)]
    return {"value": None, "idle": False, "under_load": round(value, 3),
            "reason": f"other processes kept {max(o or 0 for o in others):.2f} cores busy during the measurement "
                      f"(idle: under {IDLE_OTHERS}): not reported, load flatters batched code; rerun on an idle machine"}
