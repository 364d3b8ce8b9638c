"""A figure that fails to draw: a warning for users (the report goes on), an error under the test suite."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from speechprobe.experiments import figures


def test_a_broken_figure_fails_under_the_suite_and_warns_a_user(monkeypatch, tmp_path: Path) -> None:
    def broken(path: Path) -> Path:
        raise ValueError("odd data")

    monkeypatch.setattr(figures, "planned_figures", lambda results: {"broken": broken})
    with pytest.raises(RuntimeWarning, match="figure broken not drawn: ValueError: odd data"):
        figures.make_figures({}, tmp_path)  # setup.cfg turns the warning into an error for the suite
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as a user runs it: the warning, and the other figures still drawn
        assert figures.make_figures({}, tmp_path) == {}
    assert [str(w.message) for w in caught] == ["figure broken not drawn: ValueError: odd data"]
