"""Tests for probing.ablation: ablate (mean by default / raw zero) and ablation curves with and without retraining."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import speechprobe.probing.ablation as ablation_module
from speechprobe.probing.ablation import MODE_DESCRIPTIONS, MODES, AblationCurve, ablate, ablation_curve
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import ElasticNetProbe
from speechprobe.probing.ranking import rank_neurons

D = 100
PLANTED = np.array([7, 23, 41, 58, 90])


def planted_data(seed: int = 0, n: int = 2000):
    """Binary label from 5 planted neurons among 100; distractors of large variance; every neuron
    has a non-zero mean (so raw-0 and mean ablation differ)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    w = np.array([2.0, -2.0, 1.5, -1.5, 1.8])
    y = (X[:, PLANTED] @ w + 0.3 * rng.logistic(size=n) > 0).astype(int)
    distractors = np.setdiff1d(np.arange(D), PLANTED)[:30]
    X[:, distractors] *= 50.0
    X += rng.uniform(2.0, 4.0, size=D)  # offsets: training means far from 0
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = planted_data()
    tr, va, te = slice(0, 1200), slice(1200, 1500), slice(1500, None)
    # full batch: few Lightning epochs keep the test fast
    probe = ElasticNetProbe(l1=1e-3, l2=1e-4, max_epochs=30, batch_size=None, lr=1e-1, patience=5)
    probe.fit(X[tr], y[tr], X[va], y[va])
    ranking = rank_neurons(probe, "weight")  # independent distractors: the probe's weights find the planted neurons
    return SimpleNamespace(
        probe=probe, ranking=ranking,
        X_train=X[tr], y_train=y[tr], X_val=X[va], y_val=y[va], X_test=X[te], y_test=y[te],
    )


@pytest.fixture(scope="module")
def curve(fitted):
    """One curve with retraining, counting fit_probes calls."""
    calls = []
    real = ablation_module.fit_probes

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ablation_module, "fit_probes", spy)
        result = ablation_curve(
            fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking,
            fractions=(0.05, 0.1, 0.2), random_seeds=(0, 1, 2), mode="mean",
            retrain=(fitted.X_train, fitted.y_train, fitted.X_val, fitted.y_val),
        )
    return SimpleNamespace(result=result, calls=calls)


# ------------------------------------------------------------------------------------------------
# ablate


def test_probe_is_good_and_ranking_finds_planted(fitted):
    assert fitted.probe.score(fitted.X_test, fitted.y_test) > 0.9
    assert set(fitted.ranking[:5].tolist()) == set(PLANTED.tolist())


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablating_nothing_gives_probe_score(fitted, mode):
    own = fitted.probe.score(fitted.X_test, fitted.y_test)
    assert ablate(fitted.probe, fitted.X_test, fitted.y_test, [], mode=mode) == pytest.approx(own)
    assert ablate(fitted.probe, fitted.X_test, fitted.y_test, np.array([], dtype=int), mode=mode) == pytest.approx(own)


def test_mean_ablation_equals_zeroing_weights(fitted):
    probe = fitted.probe
    neurons = fitted.ranking[:3]
    clone = ElasticNetProbe(**probe.get_params())
    for name in ("coef_", "intercept_", "classes_", "mean_", "scale_", "n_features_in_"):
        setattr(clone, name, np.copy(getattr(probe, name)))
    clone.coef_[:, neurons] = 0.0
    assert ablate(probe, fitted.X_test, fitted.y_test, neurons, mode="mean") == pytest.approx(
        clone.score(fitted.X_test, fitted.y_test)
    )


def test_zero_and_mean_differ_with_nonzero_means(fitted):
    neurons = fitted.ranking[:5]
    zero = ablate(fitted.probe, fitted.X_test, fitted.y_test, neurons, mode="zero")
    mean = ablate(fitted.probe, fitted.X_test, fitted.y_test, neurons, mode="mean")
    assert zero != mean
    # one planted neuron: mean ablation removes its evidence; raw 0 (about 3 training SDs below its
    # mean) also adds a large constant shift to the logits, which hurts more
    one = fitted.ranking[:1]
    zero_one = ablate(fitted.probe, fitted.X_test, fitted.y_test, one, mode="zero")
    mean_one = ablate(fitted.probe, fitted.X_test, fitted.y_test, one, mode="mean")
    assert zero_one < mean_one - 0.1
    # on centred data (training mean exactly 0 for a probe refitted there) they coincide
    probe = fitted.probe
    centred = ElasticNetProbe(**probe.get_params())
    for name in ("coef_", "intercept_", "classes_", "scale_", "n_features_in_"):
        setattr(centred, name, np.copy(getattr(probe, name)))
    centred.mean_ = np.zeros(D)
    Xc = fitted.X_test - probe.mean_
    assert ablate(centred, Xc, fitted.y_test, neurons, mode="zero") == ablate(centred, Xc, fitted.y_test, neurons, mode="mean")


def test_default_mode_is_mean_ablation(fitted):
    """Without a mode, ablate removes a neuron in distribution (its training mean), not by a raw 0."""
    one = fitted.ranking[:1]  # a planted neuron with a large offset: the two modes differ by > 0.1 here
    default = ablate(fitted.probe, fitted.X_test, fitted.y_test, one)
    assert default == ablate(fitted.probe, fitted.X_test, fitted.y_test, one, mode="mean")
    assert default != ablate(fitted.probe, fitted.X_test, fitted.y_test, one, mode="zero")


def test_every_mode_is_named_in_words():
    assert MODES[0] == "mean" and set(MODE_DESCRIPTIONS) == set(MODES)
    assert "in distribution" in MODE_DESCRIPTIONS["mean"] and "mean" in MODE_DESCRIPTIONS["mean"]
    assert "out of distribution" in MODE_DESCRIPTIONS["zero"] and "raw" in MODE_DESCRIPTIONS["zero"]


def test_mean_ablation_of_every_neuron_predicts_the_majority_class():
    """Every neuron at its mean leaves the probe its prior: the training-majority class for every row, so
    the majority-class accuracy. Raw zeros instead push an offset neuron 5 SDs up, and the probe answers the
    minority class for every row."""
    rng = np.random.default_rng(3)
    n, d = 800, 6
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0.7).astype(int)  # about a quarter positive
    X[:, 0] -= 5.0  # raw 0 is 5 SDs above the informative neuron's mean
    X[:, 1:] += 3.0
    tr, va, te = slice(0, 500), slice(500, 650), slice(650, None)
    probe = ElasticNetProbe(l1=0.0, l2=1e-4, max_epochs=25, batch_size=None, lr=1e-1, patience=5)
    probe.fit(X[tr], y[tr], X[va], y[va])
    assert probe.score(X[te], y[te]) > 0.85
    majority = np.bincount(y[tr]).argmax()
    assert majority == 0
    every = np.arange(d)
    assert ablate(probe, X[te], y[te], every) == pytest.approx(np.mean(y[te] == majority))
    assert ablate(probe, X[te], y[te], every, mode="zero") == pytest.approx(np.mean(y[te] != majority))


def test_ablate_does_not_modify_input(fitted):
    X = fitted.X_test.copy()
    ablate(fitted.probe, X, fitted.y_test, fitted.ranking[:10], mode="zero")
    np.testing.assert_array_equal(X, fitted.X_test)


@pytest.mark.parametrize(
    "neurons,match",
    [
        ([0, D], "lie in"),
        ([-1], "lie in"),
        ([3, 3], "duplicates"),
        (list(range(D)) + [0], "only"),
        ([0.5], "integer"),
        ([np.nan], "NaN"),
        (["a"], "integer"),
    ],
)
def test_ablate_bad_neurons(fitted, neurons, match):
    with pytest.raises(ValueError, match=match):
        ablate(fitted.probe, fitted.X_test, fitted.y_test, neurons)


def test_ablate_bad_inputs(fitted):
    X, y, probe = fitted.X_test, fitted.y_test, fitted.probe
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ablate(probe, bad, y, [1])
    with pytest.raises(ValueError, match="features"):
        ablate(probe, X[:, :50], y, [1])
    with pytest.raises(ValueError, match="lengths"):
        ablate(probe, X, y[:-1], [1])
    with pytest.raises(ValueError, match="mode"):
        ablate(probe, X, y, [1], mode="noise")
    with pytest.raises(ValueError, match="mean_"):
        ablate(SimpleNamespace(n_features_in_=D, predict=probe.predict), X, y, [1], mode="mean")


# ------------------------------------------------------------------------------------------------
# curves


def test_curve_removal_orders_top_random_bottom(fitted, curve):
    c = curve.result
    assert isinstance(c, AblationCurve)
    assert c.ks.tolist() == [5, 10, 20]
    full = fitted.probe.score(fitted.X_test, fitted.y_test)
    assert c.full_accuracy == pytest.approx(full)
    # removing the planted neurons destroys the probe; random removal barely hurts; bottom not at all
    assert np.all(c.removed_top < 0.7)
    assert np.all(c.removed_top < c.removed_random_mean - 0.15)
    assert np.all(c.removed_random_mean <= c.removed_bottom + 0.01)
    assert np.all(c.removed_bottom >= full - 0.02)
    assert c.removed_random.shape == (3, 3)
    np.testing.assert_allclose(c.removed_random_mean, c.removed_random.mean(axis=0))
    np.testing.assert_allclose(c.removed_random_std, c.removed_random.std(axis=0))


def test_curve_keep_only_with_retraining(fitted, curve):
    c = curve.result
    full = c.full_accuracy
    assert np.all(c.kept_top >= full - 0.05)  # top-k alone recovers near-full accuracy
    assert np.all(c.kept_bottom < 0.7)  # bottom-k alone does not
    assert np.all(c.kept_top > c.kept_random_mean)
    assert c.kept_random.shape == (3, 3)


def test_curve_trains_all_candidates_in_one_call(fitted, curve):
    assert len(curve.calls) == 1
    args, kwargs = curve.calls[0]
    settings, masks = args[4], args[5]
    assert masks.shape == (3 * (2 + 3), D)
    assert masks.sum(axis=1).tolist() == [5, 10, 20] * 5
    params = fitted.probe.get_params()
    assert settings == [(params["l1"], params["l2"])] * 15
    assert kwargs["options"] == TrainingOptions.from_probe(fitted.probe)
    for name in ("max_epochs", "batch_size", "lr", "patience", "seed", "neurox_loss"):
        assert getattr(kwargs["options"], name) == params[name]


def test_curve_matches_ablate_and_is_frozen(fitted, curve):
    c = curve.result
    for i, k in enumerate(c.ks):
        assert c.removed_top[i] == ablate(fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking[:k], mode="mean")
        assert c.removed_bottom[i] == ablate(fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking[-k:], mode="mean")
    with pytest.raises(ValueError):
        c.removed_top[0] = 1.0
    with pytest.raises(Exception):
        c.mode = "zero"
    d = c.as_dict()
    assert d["ks"] == [5, 10, 20] and isinstance(d["kept_top"], list)


def test_curve_without_retrain_defaults(fitted, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("fit_probes must not be called without retrain")

    monkeypatch.setattr(ablation_module, "fit_probes", boom)
    c = ablation_curve(fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking)
    assert c.ks.tolist() == [1, 2, 5, 10, 20, 50]
    assert c.mode == "mean" and c.removed_random.shape == (5, 6)
    assert c.kept_top is None and c.kept_random_mean is None
    # the default removes by the training mean, not by raw zeros
    for i, k in enumerate(c.ks):
        assert c.removed_top[i] == ablate(fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking[:k], mode="mean")
    zero = ablation_curve(fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking, mode="zero")
    assert zero.mode == "zero" and not np.array_equal(zero.removed_top, c.removed_top)
    # deterministic
    again = ablation_curve(fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking)
    np.testing.assert_array_equal(c.removed_random, again.removed_random)


def test_curve_bad_inputs(fitted):
    p, X, y, r = fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking
    with pytest.raises(ValueError, match="permutation"):
        ablation_curve(p, X, y, r[:50])
    with pytest.raises(ValueError, match="permutation"):
        ablation_curve(p, X, y, np.concatenate([r[:-1], r[:1]]))
    with pytest.raises(ValueError, match="fractions"):
        ablation_curve(p, X, y, r, fractions=(0.1, 1.5))
    with pytest.raises(ValueError, match="fractions"):
        ablation_curve(p, X, y, r, fractions=())
    with pytest.raises(ValueError, match="random_seeds"):
        ablation_curve(p, X, y, r, random_seeds=())
    with pytest.raises(ValueError, match="mode"):
        ablation_curve(p, X, y, r, mode="noise")
    with pytest.raises(ValueError, match="retrain"):
        ablation_curve(p, X, y, r, retrain=(X, y))
    with pytest.raises(ValueError, match="X_train"):
        ablation_curve(p, X, y, r, retrain=(X[:, :10], y, X, y))


def test_k_is_at_least_one_and_at_most_d(fitted):
    c = ablation_curve(fitted.probe, fitted.X_test, fitted.y_test, fitted.ranking, fractions=(0.001, 1.0), random_seeds=(0,))
    assert c.ks.tolist() == [1, D]
    # removing every neuron: top, bottom and random are the same set
    assert c.removed_top[1] == c.removed_bottom[1] == c.removed_random[0, 1]
