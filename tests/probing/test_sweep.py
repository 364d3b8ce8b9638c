"""Layer-wise sweeps: batched fits per width, the choice made on validation, test touched once, controls."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import speechprobe.probing.sweep as sweep_module
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import ElasticNetProbe
from speechprobe.probing.sweep import DEFAULT_GRID, probe_layers, sparsity

FAST = TrainingOptions(batch_size=64, lr=1e-2, max_epochs=40)


def layered_data(seed: int = 0, n_speakers: int = 40, per_speaker: int = 10):
    """Three layers: 'signal' carries the label in 3 neurons of 12, 'noise' nothing, 'wide' the label in
    1 neuron of 24 (another width). Labels are per speaker (like gender), split by speaker."""
    rng = np.random.default_rng(seed)
    speakers = np.repeat(np.arange(n_speakers), per_speaker)
    speaker_label = rng.permutation(np.arange(n_speakers) % 2)
    y = speaker_label[speakers]
    n = len(y)
    signal = rng.normal(size=(n, 12))
    signal[:, [2, 5, 7]] += 1.5 * (2 * y[:, None] - 1)
    noise = rng.normal(size=(n, 12)) * 50 + 7
    wide = rng.normal(size=(n, 24))
    wide[:, 20] += 2.0 * (2 * y - 1)
    order = rng.permutation(n_speakers)
    part = {s: ("train" if i < 24 else "validation" if i < 32 else "test") for i, s in enumerate(order)}
    rows = {p: np.flatnonzero([part[s] == p for s in speakers]) for p in ("train", "validation", "test")}
    split = SimpleNamespace(**rows)
    control = rng.integers(0, 2, n_speakers)[speakers]
    within = np.arange(n) % per_speaker
    control_split = SimpleNamespace(train=np.flatnonzero(within < 6), validation=np.flatnonzero((within >= 6) & (within < 8)),
                                    test=np.flatnonzero(within >= 8))
    layers = {"signal": signal, "noise": noise, "wide": wide}
    return layers, y, split, speakers, control, control_split


class Spy:
    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, X, y, X_val, y_val, settings, *args, **kwargs):
        self.calls.append(dict(X=np.array(X), X_val=np.array(X_val),  # copies: the sweep may standardise in place
                                settings=list(settings), inputs=kwargs.get("inputs")))
        return self.real(X, y, X_val, y_val, settings, *args, **kwargs)


@pytest.fixture(scope="module")
def swept():
    layers, y, split, speakers, control, control_split = layered_data()
    spy = Spy(sweep_module.fit_probes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_module, "fit_probes", spy)
        result = probe_layers(layers, y, split, groups=speakers, control_labels=control, control_split=control_split,
                              options=FAST, n_resamples=200)
    return result, spy, (layers, y, split, speakers, control, control_split)


def test_informative_layers_beat_noise_and_the_best_layer_is_chosen_on_validation(swept):
    result, _, (layers, y, split, *_) = swept
    scores = {s.layer: s for s in result.layers}
    assert [s.layer for s in result.layers] == ["signal", "noise", "wide"]
    assert scores["signal"].accuracy.value > 0.9 and scores["wide"].accuracy.value > 0.85
    assert scores["noise"].accuracy.value < 0.75
    assert result.best_layer == max(result.layers, key=lambda s: s.validation_accuracy).layer != "noise"
    for s in result.layers:
        assert s.accuracy.low <= s.accuracy.value <= s.accuracy.high
        assert s.macro_f1.low <= s.macro_f1.value <= s.macro_f1.high
        assert s.accuracy.resampled == "groups"  # speakers resampled, not utterances
        assert s.majority_accuracy == pytest.approx(np.mean(y[split.test] == np.bincount(y[split.train]).argmax()))
        assert s.n_neurons == layers[s.layer].shape[1]


def test_setting_is_the_validation_argmax(swept):
    result, _, (layers, y, split, *_) = swept
    for s in result.layers:
        assert len(s.grid_validation_accuracy) == len(DEFAULT_GRID)
        assert s.validation_accuracy == max(s.grid_validation_accuracy)
        best = DEFAULT_GRID[int(np.argmax(s.grid_validation_accuracy))]
        # ties (equal validation accuracy) may go to another setting with that same accuracy
        chosen_index = DEFAULT_GRID.index((s.l1, s.l2))
        assert s.grid_validation_accuracy[chosen_index] == s.validation_accuracy
        probe = result.probes[s.layer]
        assert (probe.l1, probe.l2) == (s.l1, s.l2)
        assert probe.score(layers[s.layer][split.validation], y[split.validation]) == pytest.approx(s.validation_accuracy)
        assert best in DEFAULT_GRID


def test_one_batched_fit_per_width_and_test_rows_never_trained_on(swept):
    result, spy, (layers, y, split, _, _, control_split) = swept
    task_calls, control_calls = spy.calls[:2], spy.calls[2:]
    assert len(task_calls) == 2 and len(control_calls) == 2  # widths 12 (signal, noise) and 24 (wide)
    assert task_calls[0]["X"].shape == (2, len(split.train), 12) and len(task_calls[0]["settings"]) == 2 * len(DEFAULT_GRID)
    assert task_calls[1]["X"].shape == (1, len(split.train), 24)
    test_rows = layers["signal"][split.test]
    for call in task_calls:
        for block in (call["X"], call["X_val"]):
            if block.shape[-1] == 12:
                seen = block[0]
                assert not np.any((seen[:, None, :] == test_rows[None, :, :]).all(axis=2))
    # the control task retrains each layer's chosen setting, once, on its own split
    assert control_calls[0]["settings"] == [(result.probes[n].l1, result.probes[n].l2) for n in ("signal", "noise")]
    assert control_calls[0]["X"].shape == (2, len(control_split.train), 12)


def test_control_accuracy_and_selectivity(swept):
    result, _, (layers, _, _, _, control, control_split) = swept
    for s in result.layers:
        probe = result.control_probes[s.layer]
        assert s.control_accuracy == pytest.approx(probe.score(layers[s.layer][control_split.test], control[control_split.test]))
        assert s.selectivity == pytest.approx(s.accuracy.value - s.control_accuracy)
    assert {s.layer: s for s in result.layers}["signal"].selectivity > 0.2
    json_ready = result.as_dict()
    assert json_ready["best_layer"] == result.best_layer and len(json_ready["layers"]) == 3
    assert json_ready["layers"][0]["accuracy"]["value"] == result.layers[0].accuracy.value


def test_results_are_frozen_and_as_dict_keeps_the_keys_readers_use(swept):
    result, _, (layers, y, split, *_) = swept
    with pytest.raises(Exception):
        result.layers[0].l1 = 1.0
    with pytest.raises(TypeError):
        result.probes["signal"] = None
    assert isinstance(result.layers, tuple) and isinstance(result.grid, tuple)
    assert not result.test_rows.flags.writeable and not result.predictions["signal"].flags.writeable
    # one split is one fold: pooled test predictions are the split's, in row order
    assert result.n_folds == 1 and np.array_equal(result.test_rows, np.sort(split.test))
    np.testing.assert_array_equal(result.predictions["signal"],
                                  result.probes["signal"].predict(layers["signal"][np.sort(split.test)]))
    plain = result.as_dict()
    assert set(plain) >= {"grid", "n_folds", "best_layer", "layers"} and plain["n_folds"] == 1
    layer = plain["layers"][0]
    assert set(layer) >= {"layer", "n_neurons", "l1", "l2", "settings", "validation_accuracy",
                          "grid_validation_accuracy", "accuracy", "macro_f1", "fold_accuracy", "fold_accuracies",
                          "majority_accuracy", "sparsity", "control_accuracy", "selectivity"}
    score = result.layers[0]
    assert layer["settings"] == [[score.l1, score.l2]] and layer["fold_accuracies"] == [score.accuracy.value]
    assert layer["fold_accuracy"]["n"] == 1


def test_fixed_setting_and_no_control():
    layers, y, split, *_ = layered_data(seed=1)
    result = probe_layers({"signal": layers["signal"]}, y, split, grid=[(1e-3, 0.0)], options=FAST, n_resamples=50)
    (score,) = result.layers
    assert (score.l1, score.l2) == (1e-3, 0.0) and score.control_accuracy is None and score.selectivity is None
    assert score.accuracy.resampled == "examples"  # no groups given


def test_sparsity_is_relative_to_the_largest_weight():
    probe = ElasticNetProbe()
    probe.coef_ = np.array([[1.0, 0.005, 0.0, -0.5], [0.2, -0.001, 0.0, 0.1]])
    assert sparsity(probe) == 0.5  # neurons 1 and 2 below 1% of 1.0
    probe.coef_ = np.zeros((2, 4))
    assert sparsity(probe) == 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(y=np.zeros_like(d["y"])), "single class"),
        (lambda d: d.update(split=SimpleNamespace(train=d["split"].train, validation=d["split"].validation)), "test"),
        (lambda d: d["layers"].update(noise=d["layers"]["noise"][:-1]), "rows"),
        (lambda d: d["layers"]["signal"].__setitem__((0, 0), np.nan), "NaN"),
        (lambda d: d.update(grid=[]), "grid is empty"),
        (lambda d: d.update(grid=[(-1.0, 0.0)]), ">= 0"),
        (lambda d: d.update(control_split=None), "control"),
        (lambda d: d.update(split=SimpleNamespace(train=d["split"].train[d["y"][d["split"].train] == 0],
                                                  validation=d["split"].validation, test=d["split"].test)), "train part"),
        (lambda d: d.update(split=SimpleNamespace(train=d["split"].train, validation=d["split"].validation,
                                                  test=np.array([10**6]))), "outside"),
    ],
)
def test_bad_input(change, message, monkeypatch):
    layers, y, split, speakers, control, control_split = layered_data()
    d = dict(layers=dict(layers), y=y, split=split, grid=DEFAULT_GRID, control_split=control_split)
    d["layers"]["signal"] = d["layers"]["signal"].copy()
    change(d)
    monkeypatch.setattr(sweep_module, "fit_probes", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fitted")))
    with pytest.raises(ValueError, match=message):
        probe_layers(d["layers"], d["y"], d["split"], grid=d["grid"], control_labels=control, control_split=d["control_split"])
