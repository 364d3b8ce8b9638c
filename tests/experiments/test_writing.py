"""Number formatting in reports: a fine-tune's weight change (1e-4) must not print as 0.000."""
from __future__ import annotations

from speechprobe.experiments.writing import sig


def test_sig_keeps_small_changes_visible_and_large_ones_readable() -> None:
    assert [sig(v) for v in (0.00056, 4.9e-05, 0.094, 0.94, 1.0447, 0.0)] == ["0.00056", "4.9e-05", "0.094",
                                                                              "0.94", "1.04", "0"]
    assert sig(0.031862, 3) == "0.0319" and sig(None) == "–" and sig(float("nan")) == "–"
