"""How many CPU threads torch should use here, now: the cores other processes leave free.

torch's CPU thread pool spin-waits for its slowest thread, so every thread it starts beyond the idle cores
stalls all the others. Measured on 2 cores, GE2E extracting 64 utterances: idle, 2 threads 2.4 s and 1 thread
3.8 s; with one other busy process, 2 threads 10.7 s and 1 thread 4.1 s (2.6x); with two, 10-26 s against
7 s. So a process takes its share of the cores (`cores // processes`), but no more than the cores nobody else
is running on at the moment it starts. The cores are the affinity mask's, capped by a container's CPU quota
(cgroup v2 or v1), which the affinity mask does not show.

"Running" is the kernel's count of runnable threads (`/proc/loadavg`, field 4), minus this process's own
(`/proc/self/task/*/stat`), the median of a few reads 10 ms apart: unlike the load average it does not lag a
minute behind, and it does not count this process's own threads. `SPEECHPROBE_THREADS=N` fixes the number.
Where /proc is missing (macOS, Windows) the share is used as is.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Optional

__all__ = ["ENV", "available_cores", "cgroup_cores", "cpu_threads", "others_running"]

ENV = "SPEECHPROBE_THREADS"
_READS, _PAUSE = 5, 0.01


def cgroup_cores(root: Path = Path("/sys/fs/cgroup")) -> Optional[int]:
    """The CPU quota of this container in cores, rounded up (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), or None
    where there is none: a container limited to 2 cores by quota still shows every host core in its affinity."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
            if quota == "max":
                return None
        elif (root / "cpu" / "cpu.cfs_quota_us").is_file():
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        else:
            return None
        quota_us, period_us = int(quota), int(period)
    except (OSError, ValueError):
        return None
    if quota_us <= 0 or period_us <= 0:  # v1 writes -1 for no quota
        return None
    return max(1, -(-quota_us // period_us))


def available_cores() -> int:
    """The cores this process may run on: its affinity mask (taskset, cpusets), capped by a container's CPU quota;
    else cpu_count."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cores()
    return min(cores, quota) if quota else cores


def _own_running() -> int:
    running = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        if text[text.rfind(")") + 2:].startswith("R"):  # the state follows the (command name)
            running += 1
    return running


def others_running(reads: int = _READS, pause: float = _PAUSE) -> Optional[int]:
    """Runnable threads of other processes right now (median of `reads`), or None where /proc cannot tell."""
    samples = []
    try:
        for read in range(reads):
            if read:
                time.sleep(pause)
            total = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            samples.append(max(0, total - _own_running()))
    except (OSError, ValueError, IndexError):
        return None
    return int(statistics.median(samples))


def cpu_threads(processes: int = 1) -> tuple[int, str]:
    """Threads for one of `processes` processes sharing this machine, and why (a phrase for a log line)."""
    fixed = os.environ.get(ENV)
    if fixed is not None and fixed.strip():
        try:
            threads = int(fixed)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{ENV}={fixed!r}: expected a whole number of threads, 1 or more")
        return threads, f"{ENV}={threads}"
    cores = available_cores()
    share = max(1, cores // max(1, processes))
    fair = f"{cores} core{'s' if cores > 1 else ''} for {processes} process{'es' if processes > 1 else ''}"
    others = None if share == 1 else others_running()  # one thread each: nothing to take back, no need to look
    if others is None or cores - others >= share:
        return share, fair
    return max(1, cores - others), f"other processes keep {min(others, cores)} of {cores} cores busy"
