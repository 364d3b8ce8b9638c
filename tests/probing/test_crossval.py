"""Cross-validated sweeps: every row tested once, pooled scores consistent with the folds, choices on validation."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from speechprobe.probing.crossval import cross_validate_layers
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.sweep import probe_layers

FAST = TrainingOptions(batch_size=64, lr=1e-2, max_epochs=30)
GRID = [(0.0, 0.0), (1e-3, 1e-3)]


def folded_data(seed: int = 0, n_speakers: int = 30, per_speaker: int = 6, folds: int = 3):
    """'signal' carries a per-speaker label in 2 of 8 neurons, 'noise' nothing; speaker-disjoint folds."""
    rng = np.random.default_rng(seed)
    speakers = np.repeat(np.arange(n_speakers), per_speaker)
    y = rng.permutation(np.arange(n_speakers) % 2)[speakers]
    n = len(y)
    signal = rng.normal(size=(n, 8))
    signal[:, [1, 6]] += 1.5 * (2 * y[:, None] - 1)
    noise = rng.normal(size=(n, 8))
    fold_of_speaker = rng.permutation(np.arange(n_speakers) % folds)
    fold = fold_of_speaker[speakers]
    splits = []
    for f in range(folds):
        test, val = fold == f, fold == (f + 1) % folds
        splits.append(SimpleNamespace(train=np.flatnonzero(~test & ~val), validation=np.flatnonzero(val),
                                      test=np.flatnonzero(test)))
    return {"signal": signal, "noise": noise}, y, splits, speakers.astype(str)


def test_every_row_is_tested_once_and_pooled_accuracy_matches_the_folds():
    layers, y, splits, speakers = folded_data()
    cv = cross_validate_layers(layers, y, splits, grid=GRID, groups=speakers, options=FAST, n_resamples=200)
    assert np.array_equal(cv.test_rows, np.arange(len(y)))
    assert cv.n_folds == 3
    for score in cv.layers:
        predicted = cv.predictions[score.layer]
        assert predicted.shape == y.shape
        assert score.accuracy.value == pytest.approx(np.mean(predicted == y))
        sizes = np.array([len(s.test) for s in splits])
        assert score.accuracy.value == pytest.approx(np.sum(np.array(score.fold_accuracies) * sizes) / sizes.sum())
        assert score.accuracy.low <= score.accuracy.value <= score.accuracy.high
        assert score.accuracy.resampled == "groups"
        assert len(score.settings) == 3 and all(tuple(s) in GRID for s in score.settings)
        assert (score.l1, score.l2) == score.settings[0]  # the first fold's, whose probe is kept
        assert len(score.grid_validation_accuracy) == len(GRID)
        assert max(score.grid_validation_accuracy) <= score.validation_accuracy + 1e-12  # mean of per-fold maxima
    by_layer = {s.layer: s for s in cv.layers}
    assert by_layer["signal"].accuracy.value > 0.85 > by_layer["noise"].accuracy.value
    assert cv.best_layer == "signal"


def test_one_split_gives_what_probe_layers_gives():
    layers, y, splits, speakers = folded_data()
    cv = cross_validate_layers(layers, y, splits[:1], grid=GRID, groups=speakers, options=FAST, n_resamples=300)
    direct = probe_layers(layers, y, splits[0], grid=GRID, groups=speakers, options=FAST, n_resamples=300)
    for mine, theirs in zip(cv.layers, direct.layers):
        assert mine.accuracy == theirs.accuracy
        assert mine.settings == ((theirs.l1, theirs.l2),) == theirs.settings
        assert mine.validation_accuracy == theirs.validation_accuracy
        assert mine.grid_validation_accuracy == theirs.grid_validation_accuracy
        assert mine.fold_accuracies == theirs.fold_accuracies
        assert mine.majority_accuracy == pytest.approx(theirs.majority_accuracy)
        assert np.array_equal(cv.predictions[mine.layer], direct.probes[mine.layer].predict(layers[mine.layer][splits[0].test]))
        assert np.array_equal(cv.predictions[mine.layer], direct.predictions[mine.layer])
    assert type(cv) is type(direct) and set(cv.as_dict()) == set(direct.as_dict())  # one result type
    assert [set(s) for s in cv.as_dict()["layers"]] == [set(s) for s in direct.as_dict()["layers"]]


def test_best_layer_follows_mean_validation_not_test(monkeypatch):
    layers, y, splits, speakers = folded_data()
    cv = cross_validate_layers(layers, y, splits, grid=GRID, options=FAST, n_resamples=100)
    means = {s.layer: s.validation_accuracy for s in cv.layers}
    assert cv.best_layer == max(means, key=means.get)


def test_best_layer_is_chosen_on_validation_where_validation_and_test_disagree():
    """A layer whose signal holds on the validation rows only against one whose signal holds on the test
    rows only: the choice must follow validation, though the other layer scores higher on test (a choice
    made on test data would pick it)."""
    _, y, splits, speakers = folded_data()
    split = splits[0]
    rng = np.random.default_rng(3)
    signal = 2.0 * (2 * y[:, None] - 1) + rng.normal(size=(len(y), 4))
    noise = rng.normal(size=(len(y), 4))
    val_good, test_good = signal.copy(), signal.copy()
    val_good[split.test] = noise[split.test]
    test_good[split.validation] = noise[split.validation]
    cv = cross_validate_layers({"test_good": test_good, "val_good": val_good}, y, [split], grid=GRID,
                               groups=speakers, options=FAST, n_resamples=100)
    by_layer = {s.layer: s for s in cv.layers}
    assert by_layer["test_good"].accuracy.value > 0.9 > 0.7 > by_layer["val_good"].accuracy.value
    assert by_layer["val_good"].validation_accuracy > 0.9 > 0.7 > by_layer["test_good"].validation_accuracy
    assert cv.best_layer == "val_good"


def test_control_task_from_the_first_fold_gives_selectivity():
    layers, y, splits, speakers = folded_data()
    rng = np.random.default_rng(1)
    control = rng.integers(0, 2, 30)[np.repeat(np.arange(30), 6)]
    within = np.arange(len(y)) % 6
    control_split = SimpleNamespace(train=np.flatnonzero(within < 4), validation=np.flatnonzero(within == 4),
                                    test=np.flatnonzero(within == 5))
    cv = cross_validate_layers(layers, y, splits, grid=GRID, control_labels=control, control_split=control_split,
                               options=FAST, n_resamples=100)
    for score in cv.layers:
        assert score.control_accuracy is not None
        assert score.selectivity == pytest.approx(score.accuracy.value - score.control_accuracy)
    assert set(cv.control_probes) == {"signal", "noise"}


def test_overlapping_test_parts_and_no_splits_are_refused():
    layers, y, splits, _ = folded_data()
    with pytest.raises(ValueError, match="overlap"):
        cross_validate_layers(layers, y, [splits[0], splits[0]], grid=GRID, options=FAST, n_resamples=10)
    with pytest.raises(ValueError, match="empty"):
        cross_validate_layers(layers, y, [], grid=GRID)
