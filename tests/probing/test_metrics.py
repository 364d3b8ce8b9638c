"""Metrics on plain label arrays: agreement with scikit-learn, bootstrap behaviour, baselines, bad input."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from speechprobe.probing.metrics import (
    FoldSummary,
    Interval,
    accuracy,
    bootstrap_interval,
    fold_summary,
    macro_f1,
    majority_baseline,
    selectivity,
)


def noisy_predictions(rng: np.random.Generator, y: np.ndarray, n_classes: int, hit_rate: float) -> np.ndarray:
    """Predictions equal to y with probability hit_rate, uniformly random otherwise."""
    return np.where(rng.random(y.shape[0]) < hit_rate, y, rng.integers(0, n_classes, y.shape[0]))


def speaker_data(
    rng: np.random.Generator, speakers: int, per_speaker: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary task where correctness is strongly correlated within a speaker (per-speaker hit rate)."""
    groups = np.repeat(np.arange(speakers), per_speaker)
    y = np.repeat(rng.integers(0, 2, speakers), per_speaker)
    hit_rate = np.repeat(rng.beta(2.0, 1.0, speakers), per_speaker)  # some speakers easy, some hard
    correct = rng.random(groups.shape[0]) < hit_rate
    return y, np.where(correct, y, 1 - y), groups


# --------------------------------------------------------------------------------------------------
# point metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_and_macro_f1_agree_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 300)
    pred = noisy_predictions(rng, y, 7, 0.4)  # class 6 is only ever predicted
    assert accuracy(y, pred) == pytest.approx(accuracy_score(y, pred))
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    labels = np.arange(8)  # class 7 appears nowhere and scores 0
    expected = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
    assert macro_f1(y, pred, labels=labels) == pytest.approx(expected)
    assert macro_f1(y, pred, labels=labels) < macro_f1(y, pred)


def test_string_labels() -> None:
    y = np.array(["f", "m", "m", "f", "m"])
    pred = np.array(["f", "m", "f", "f", "m"])
    assert accuracy(y, pred) == pytest.approx(0.8)
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    interval = bootstrap_interval(y, pred, "macro_f1", n_resamples=50)
    assert interval.value == pytest.approx(macro_f1(y, pred))


# --------------------------------------------------------------------------------------------------
# bootstrap


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
@pytest.mark.parametrize("grouped", [False, True])
def test_vectorised_bootstrap_equals_resampling_by_hand(metric: str, grouped: bool) -> None:
    """The count-matrix computation gives exactly what calling the metric on each resample gives."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 400)
    pred = noisy_predictions(rng, y, 5, 0.5)
    groups = rng.integers(0, 30, 400) if grouped else None
    reference = {"accuracy": lambda a, b: accuracy_score(a, b),
                 "macro_f1": lambda a, b: f1_score(a, b, average="macro", zero_division=0)}[metric]
    fast = bootstrap_interval(y, pred, metric, groups=groups, n_resamples=200, seed=5)
    slow = bootstrap_interval(y, pred, reference, groups=groups, n_resamples=200, seed=5)
    assert fast.low == pytest.approx(slow.low, abs=1e-12)
    assert fast.high == pytest.approx(slow.high, abs=1e-12)
    assert fast.value == pytest.approx(slow.value)
    assert fast.resampled == ("groups" if grouped else "examples")


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", accuracy, macro_f1])
def test_interval_covers_value_and_narrows_with_more_data(metric) -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 5000):
        y = rng.integers(0, 4, n)
        pred = noisy_predictions(rng, y, 4, 0.6)
        interval = bootstrap_interval(y, pred, metric, n_resamples=500)
        assert interval.low < interval.value < interval.high
        assert interval.confidence == 0.95 and interval.n_resamples == 500
        widths.append(interval.high - interval.low)
    assert widths[1] < widths[0] / 3  # sqrt(25) = 5 times narrower in theory


def test_higher_confidence_gives_wider_interval() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 500)
    pred = noisy_predictions(rng, y, 3, 0.5)
    narrow = bootstrap_interval(y, pred, confidence=0.8)
    wide = bootstrap_interval(y, pred, confidence=0.99)
    assert wide.low < narrow.low and narrow.high < wide.high


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_group_bootstrap_is_wider_when_speakers_are_correlated(metric: str) -> None:
    y, pred, groups = speaker_data(np.random.default_rng(0), speakers=40, per_speaker=25)
    by_example = bootstrap_interval(y, pred, metric)
    by_group = bootstrap_interval(y, pred, metric, groups=groups)
    assert by_group.value == by_example.value
    assert by_example.resampled == "examples" and by_group.resampled == "groups"
    assert (by_group.high - by_group.low) > 1.5 * (by_example.high - by_example.low)  # ~2.1x here


def test_group_bootstrap_matches_example_bootstrap_for_independent_groups() -> None:
    """With one example per group the two bootstraps draw the same thing."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    pred = noisy_predictions(rng, y, 2, 0.5)
    by_example = bootstrap_interval(y, pred)
    by_group = bootstrap_interval(y, pred, groups=[f"spk{i}" for i in range(2000)])
    width_ratio = (by_group.high - by_group.low) / (by_example.high - by_example.low)
    assert 0.8 < width_ratio < 1.25


def test_coverage_of_known_bernoulli_accuracy() -> None:
    """The 95% interval holds the true accuracy in roughly 95% of simulated test sets."""
    rng = np.random.default_rng(123)
    true_accuracy, n, trials = 0.7, 200, 200
    covered = 0
    for trial in range(trials):
        y = rng.integers(0, 2, n)
        pred = np.where(rng.random(n) < true_accuracy, y, 1 - y)
        interval = bootstrap_interval(y, pred, n_resamples=400, seed=trial)
        covered += interval.low <= true_accuracy <= interval.high
    assert 0.90 <= covered / trials <= 0.99


def test_same_seed_same_interval_other_seed_differs() -> None:
    y, pred, groups = speaker_data(np.random.default_rng(4), speakers=20, per_speaker=10)
    for g in (None, groups):
        first = bootstrap_interval(y, pred, "macro_f1", groups=g, seed=7)
        assert bootstrap_interval(y, pred, "macro_f1", groups=g, seed=7) == first
        assert bootstrap_interval(y, pred, "macro_f1", groups=g, seed=8) != first


def test_group_labels_of_any_type_and_order() -> None:
    """Groups are identities only: relabelling them changes nothing."""
    y, pred, groups = speaker_data(np.random.default_rng(5), speakers=15, per_speaker=8)
    as_ints = bootstrap_interval(y, pred, groups=groups)
    as_strings = bootstrap_interval(y, pred, groups=np.array([f"s{g:02d}" for g in groups]))
    assert as_ints == as_strings


def test_results_are_frozen() -> None:
    interval = bootstrap_interval([0, 1, 1, 0], [0, 1, 0, 0], n_resamples=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        interval.low = 0.0  # type: ignore[misc]
    assert isinstance(interval, Interval)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fold_summary([0.5, 0.6]).mean = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# baselines and summaries


def test_majority_baseline_uses_training_majority() -> None:
    y_train = ["en-GB"] * 6 + ["en-US"] * 3
    y_test = ["en-US"] * 3 + ["en-GB"]  # the test majority is en-US: it must not be used
    assert majority_baseline(y_train, y_test) == pytest.approx(0.25)
    assert majority_baseline([2, 1, 2, 1], [1, 1, 2]) == pytest.approx(2 / 3)  # tie: smallest label
    assert majority_baseline([0, 0, 0], [5, 6]) == 0.0


def test_selectivity_is_task_minus_control() -> None:
    assert selectivity(0.9, 0.6) == pytest.approx(0.3)
    assert selectivity(0.4, 0.7) == pytest.approx(-0.3)
    assert isinstance(selectivity(np.float32(0.5), 0.25), float)


def test_fold_summary() -> None:
    scores = [0.81, 0.75, 0.9, 0.7, 0.84]
    summary = fold_summary(scores)
    expected = FoldSummary(mean=pytest.approx(np.mean(scores)), std=pytest.approx(np.std(scores, ddof=1)), n=5)
    assert summary == expected
    single = fold_summary(np.array([0.8]))
    assert single.mean == 0.8 and single.n == 1 and np.isnan(single.std)


# --------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: accuracy([0, 1, 1], [0, 1]), "different lengths"),
        (lambda: macro_f1([], []), "empty"),
        (lambda: accuracy([0.0, np.nan], [0.0, 1.0]), "NaN"),
        (lambda: accuracy(np.array(["a", None], dtype=object), ["a", "b"]), "missing"),
        (lambda: accuracy([[0, 1]], [[0, 1]]), "1-D"),
        (lambda: bootstrap_interval([0, 1], [0, 1, 1]), "different lengths"),
        (lambda: bootstrap_interval([0, 1, 0], [0, 1, 1], groups=[0, 1]), "different lengths"),
        (lambda: bootstrap_interval([0, 1, 0], [0, 1, 1], groups=[0.0, np.nan, 1.0]), "NaN"),
        (lambda: bootstrap_interval([0, 1, 0], [0, 1, 1], groups=["a", "a", "a"]), "at least 2"),
        (lambda: bootstrap_interval([1], [1]), "at least 2"),
        (lambda: bootstrap_interval([0, 1], [0, 1], confidence=95), "confidence"),
        (lambda: bootstrap_interval([0, 1], [0, 1], n_resamples=0), "n_resamples"),
        (lambda: bootstrap_interval([0, 1], [0, 1], "auc"), "unknown metric"),
        (lambda: majority_baseline([], [1]), "empty"),
        (lambda: selectivity(0.9, float("nan")), "control_accuracy"),
        (lambda: selectivity(91.0, 50.0), r"\[0, 1\]"),
        (lambda: fold_summary([]), "empty"),
        (lambda: fold_summary([0.5, np.inf]), "NaN or Inf"),
        (lambda: fold_summary(["a", "b"]), "numbers"),
    ],
)
def test_bad_input_raises_one_clear_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
