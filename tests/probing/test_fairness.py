"""Group accuracy gaps: per-group accuracy, a gap interval from a stratified speaker bootstrap, the flag."""
from __future__ import annotations

import numpy as np
import pytest

from speechprobe.probing.fairness import group_gap


def grouped(accuracy_a: float, accuracy_b: float, speakers_per_group: int = 20, per_speaker: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_speakers = 2 * speakers_per_group
    speakers = np.repeat(np.arange(n_speakers), per_speaker)
    attribute = np.where(speakers < speakers_per_group, "a", "b")
    y = rng.integers(0, 4, speakers.size)
    correct = rng.random(speakers.size) < np.where(attribute == "a", accuracy_a, accuracy_b)
    predicted = np.where(correct, y, (y + 1) % 4)
    return y, predicted, attribute, speakers


def test_per_group_accuracy_is_the_direct_one_and_a_real_gap_is_flagged():
    y, predicted, attribute, speakers = grouped(0.95, 0.55)
    gap = group_gap(y, predicted, attribute, speakers, n_resamples=500)
    for g in ("a", "b"):
        assert gap.accuracy[g].value == pytest.approx(np.mean((y == predicted)[attribute == g]))
        assert gap.accuracy[g].low <= gap.accuracy[g].value <= gap.accuracy[g].high
    assert (gap.best_group, gap.worst_group) == ("a", "b")
    assert gap.gap.value == pytest.approx(gap.accuracy["a"].value - gap.accuracy["b"].value)
    assert gap.flagged and gap.gap.low > 0
    assert gap.n_speakers == {"a": 20, "b": 20} and gap.n_examples == {"a": 200, "b": 200}


def test_equal_groups_are_not_flagged():
    y, predicted, attribute, speakers = grouped(0.8, 0.8, seed=3)
    gap = group_gap(y, predicted, attribute, speakers, n_resamples=500)
    assert not gap.flagged
    assert gap.gap.low <= 0.0


def test_speaker_resampling_is_wider_than_utterance_resampling_when_speakers_differ():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(20), 20)
    attribute = np.where(speakers < 10, "a", "b")
    speaker_skill = rng.uniform(0.3, 1.0, 20)  # strong per-speaker effects: utterances are not independent
    y = np.zeros(speakers.size, int)
    predicted = (rng.random(speakers.size) > speaker_skill[speakers]).astype(int)
    by_speaker = group_gap(y, predicted, attribute, speakers, n_resamples=1000)
    by_utterance = group_gap(y, predicted, attribute, None, n_resamples=1000)
    width = lambda g: g.gap.high - g.gap.low  # noqa: E731
    assert width(by_speaker) > 1.5 * width(by_utterance)
    assert by_utterance.gap.resampled == "examples"


def test_bad_input_is_refused():
    y, predicted, attribute, speakers = grouped(0.9, 0.9)
    with pytest.raises(ValueError, match="one length"):
        group_gap(y[:-1], predicted, attribute, speakers)
    with pytest.raises(ValueError, match="at least two"):
        group_gap(y, predicted, np.full(y.size, "a"), speakers)
    mixed = speakers.copy()
    mixed[-1] = 0  # speaker 0 (group a) now also has an utterance in group b
    with pytest.raises(ValueError, match="more than one group"):
        group_gap(y, predicted, attribute, mixed)
