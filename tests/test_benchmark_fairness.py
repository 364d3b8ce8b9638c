"""The benchmark harness reports a ratio only from an idle machine, and times each side in its own process."""
from __future__ import annotations

import pytest

from benchmarks.fair import IDLE_OTHERS, MIN_REPEATS, ratio, time_isolated


def _side(seconds: float, idle: bool, others: float) -> dict:
    return {"seconds": seconds, "idle": idle, "other_cores": others, "load_before": 1.0, "load_after": 1.0}


def test_a_ratio_under_load_is_withheld_with_its_reason() -> None:
    assert ratio(_side(0.5, True, 0.01), _side(1.0, True, 0.02)) == {"value": 0.5, "idle": True}
    busy = ratio(_side(0.5, True, 0.01), _side(1.0, False, 0.9))
    assert busy["value"] is None and busy["under_load"] == 0.5 and "0.90 cores" in busy["reason"]
    assert ratio(_side(2.0, True, 0.0), _side(4.0, True, 0.0), scale=3.0)["value"] == 1.5


def test_each_side_is_timed_in_its_own_process_after_a_warm_up() -> None:
    setup = "import os, time\ncalls = []\ndef work():\n    calls.append(os.getpid())\n    time.sleep(0.05)"
    out = time_isolated(setup, "work()", repeats=MIN_REPEATS, result="[len(calls), calls[0]]")
    runs, pid = out["result"]
    assert runs == MIN_REPEATS + 1                       # the warm-up ran, untimed
    import os

    assert pid != os.getpid() and len(out["times"]) == MIN_REPEATS
    assert 0.045 < out["seconds"] < 0.5                 # the median of the timed sleeps
    assert out["other_cores"] is None or out["other_cores"] >= 0
    assert out["idle"] == (out["other_cores"] < IDLE_OTHERS) if out["other_cores"] is not None else True
    with pytest.raises(ValueError, match="at least 5"):
        time_isolated(setup, "work()", repeats=3)
