"""Tests for probing.probe / probing.training: agreement with scikit-learn, batched == separate,
determinism, sparsity, persistence without pickle, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from speechprobe.probing.probe import ElasticNetProbe, TrainingOptions, fit_probes


def make_data(seed: int = 0, n: int = 600, d: int = 50, k: int = 4, n_train: int = 400):
    """Features of different scales and offsets; labels drawn from a softmax of a random linear map."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, k))
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(scale=5.0, size=d)
    logits = 0.4 * ((X - X.mean(0)) / X.std(0)) @ W
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


CONVERGED = dict(batch_size=None, lr=0.05, max_epochs=400, patience=None)


@pytest.fixture(scope="module")
def data():
    return make_data()


# --------------------------------------------------------------------------------------------------
# agreement with scikit-learn


def test_matches_sklearn_logistic_regression(data):
    Xtr, ytr, Xte, yte = data
    mean, std = Xtr.mean(0), Xtr.std(0)
    C = 0.1
    sk = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit((Xtr - mean) / std, ytr)
    # sklearn: C * sum CE + 0.5 ||W||^2; ours: mean CE + l2 ||W||^2  =>  l2 = 1 / (2 C n_train)
    probe = ElasticNetProbe(0.0, 1.0 / (2 * C * len(Xtr)), **CONVERGED).fit(Xtr, ytr, Xtr, ytr)
    np.testing.assert_allclose(probe.mean_, mean)
    np.testing.assert_allclose(probe.scale_, std)
    sk_pred = sk.predict((Xte - mean) / std)
    ours = probe.predict(Xte)
    assert abs(np.mean(sk_pred == yte) - np.mean(ours == yte)) <= 0.01
    assert np.mean(sk_pred == ours) >= 0.98
    # the optimum itself, not just the predictions
    assert np.abs(probe.coef_ - sk.coef_).max() <= 0.01 * np.abs(sk.coef_).max()
    np.testing.assert_allclose(probe.predict_proba(Xte), sk.predict_proba((Xte - mean) / std), atol=2e-3)


def test_sklearn_estimator_api(data):
    Xtr, ytr, Xte, yte = data
    probe = ElasticNetProbe(l1=1e-3, l2=1e-3, max_epochs=5, seed=3)
    assert probe.get_params()["l1"] == 1e-3 and probe.get_params()["seed"] == 3
    assert clone(probe).get_params() == probe.get_params()
    assert probe.set_params(l2=0.5) is probe and probe.l2 == 0.5
    assert not hasattr(probe, "coef_")
    assert probe.fit(Xtr, ytr) is probe
    assert probe.coef_.shape == (4, 50) and probe.intercept_.shape == (4,)
    assert probe.classes_.tolist() == [0, 1, 2, 3]
    proba = probe.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert probe.score(Xte, yte) == np.mean(probe.predict(Xte) == yte)


def test_string_labels_sorted(data):
    Xtr, ytr, Xte, _ = data
    names = np.array(["zeta", "alpha", "mid", "beta"])
    probe = ElasticNetProbe(max_epochs=3).fit(Xtr, names[ytr])
    assert probe.classes_.tolist() == ["alpha", "beta", "mid", "zeta"]
    assert set(probe.predict(Xte)) <= set(names)


# --------------------------------------------------------------------------------------------------
# batched training, determinism


SETTINGS = [(0.0, 1e-3), (1e-3, 0.0), (3e-3, 3e-3)]
FAST = dict(max_epochs=15, batch_size=32, lr=1e-2, patience=3, seed=7)


def test_batched_equals_separate(data):
    Xtr, ytr, Xte, yte = data
    together = fit_probes(Xtr, ytr, Xte, yte, SETTINGS, options=TrainingOptions(**FAST))
    for (l1, l2), batched in zip(SETTINGS, together):
        (alone,) = fit_probes(Xtr, ytr, Xte, yte, [(l1, l2)], options=FAST)  # a mapping of options is taken
        assert batched.best_epoch_ == alone.best_epoch_
        np.testing.assert_allclose(batched.coef_, alone.coef_, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batched.intercept_, alone.intercept_, rtol=1e-4, atol=1e-5)
        single = ElasticNetProbe(l1, l2, **FAST).fit(Xtr, ytr, Xte, yte)
        np.testing.assert_allclose(single.coef_, alone.coef_, rtol=1e-4, atol=1e-5)
    # the settings really differ (so the check above is not vacuous)
    assert not np.allclose(together[0].coef_, together[1].coef_, atol=1e-3)


def test_feature_masks_and_stacked_inputs(data):
    Xtr, ytr, Xte, yte = data
    mask = np.zeros((2, 50))
    mask[0, :10] = 1
    mask[1, 10:] = 1
    masked = fit_probes(Xtr, ytr, Xte, yte, [(0.0, 1e-3)] * 2, mask, options=FAST)
    assert np.all(masked[0].coef_[:, 10:] == 0) and np.any(masked[0].coef_[:, :10] != 0)
    assert np.all(masked[1].coef_[:, :10] == 0)
    (sub,) = fit_probes(Xtr[:, :10], ytr, Xte[:, :10], yte, [(0.0, 1e-3)], options=FAST)
    np.testing.assert_allclose(masked[0].coef_[:, :10], sub.coef_, rtol=1e-4, atol=1e-5)
    # two "layers" of equal width: each probe reads its own input and is standardised on it
    layer2 = Xtr[:, ::-1] * 3.0
    probes = fit_probes(np.stack([Xtr, layer2]), ytr, np.stack([Xte, Xte[:, ::-1] * 3.0]), yte,
                        [(0.0, 1e-3), (0.0, 1e-3)], inputs=[0, 1], options=FAST)
    np.testing.assert_allclose(probes[1].scale_, 3.0 * Xtr.std(0)[::-1])
    np.testing.assert_allclose(probes[1].coef_, probes[0].coef_[:, ::-1], rtol=1e-3, atol=1e-4)


def test_same_seed_same_probe_and_seed_matters(data):
    Xtr, ytr, _, _ = data
    # whatever the global RNG states are: only ``seed`` may decide the hold-out and the batch order
    np.random.seed(1)
    torch.manual_seed(1)
    a = ElasticNetProbe(1e-3, 1e-3, **FAST).fit(Xtr, ytr)
    np.random.seed(2)
    torch.manual_seed(2)
    b = ElasticNetProbe(1e-3, 1e-3, **FAST).fit(Xtr, ytr)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    c = ElasticNetProbe(1e-3, 1e-3, **{**FAST, "seed": 8}).fit(Xtr, ytr)
    assert not np.array_equal(a.coef_, c.coef_)


def test_l1_is_sparser_than_l2(data):
    Xtr, ytr, Xte, yte = data
    l1_probe, l2_probe = fit_probes(Xtr, ytr, Xte, yte, [(0.01, 0.0), (0.0, 0.01)],
                                    options=TrainingOptions(max_epochs=60, batch_size=None, lr=0.02, patience=None))
    # Adam on the L1 subgradient leaves weights hovering near 0 rather than exactly 0: count weights
    # below 1% of the largest, and Hoyer's sparsity (0 = all equal, 1 = a single non-zero weight).
    def near_zero(p):
        w = np.abs(p.coef_)
        return np.mean(w < 0.01 * w.max())

    def hoyer(p):
        w = np.abs(p.coef_).ravel()
        return (np.sqrt(w.size) - w.sum() / np.linalg.norm(w)) / (np.sqrt(w.size) - 1)

    assert near_zero(l1_probe) > near_zero(l2_probe) + 0.15
    assert hoyer(l1_probe) > hoyer(l2_probe) + 0.1


def test_neurox_loss_changes_the_penalty(data):
    Xtr, ytr, Xte, yte = data
    kw = dict(max_epochs=30, batch_size=None, lr=0.05, patience=None)
    ours, neurox = (ElasticNetProbe(0.0, 0.05, neurox_loss=flag, **kw).fit(Xtr, ytr, Xte, yte) for flag in (False, True))
    # ||W||_F (not squared) at the same lambda shrinks far less than sum W^2 once weights are small
    assert np.linalg.norm(neurox.coef_) > np.linalg.norm(ours.coef_)


# --------------------------------------------------------------------------------------------------
# persistence


def test_save_load_round_trip(tmp_path, data):
    Xtr, ytr, Xte, _ = data
    names = np.array(["a", "b", "c", "d"])
    for labels in (ytr, names[ytr]):
        probe = ElasticNetProbe(1e-3, 1e-3, max_epochs=5).fit(Xtr, labels)
        folder = tmp_path / str(labels.dtype)
        probe.save(folder)
        assert sorted(p.name for p in folder.iterdir()) == ["probe.json", "probe.safetensors"]
        assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
        json.loads((folder / "probe.json").read_text())
        loaded = ElasticNetProbe.load(folder)
        assert loaded.get_params() == probe.get_params()
        np.testing.assert_array_equal(loaded.predict(Xte), probe.predict(Xte))
        np.testing.assert_array_equal(loaded.predict_proba(Xte), probe.predict_proba(Xte))
        assert loaded.classes_.tolist() == probe.classes_.tolist()
        with pytest.raises(ValueError, match="features"):
            loaded.predict(Xte[:, :20])


# --------------------------------------------------------------------------------------------------
# bad input


def test_bad_input(tmp_path, data):
    Xtr, ytr, Xte, yte = data
    probe = ElasticNetProbe(max_epochs=2)
    bad = Xtr.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        probe.fit(bad, ytr)
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        probe.fit(bad, ytr)
    with pytest.raises(ValueError, match="NaN or Inf"):
        probe.fit(Xtr, ytr, np.where(Xte > 1e9, 0, np.inf), yte)
    with pytest.raises(ValueError, match="different lengths"):
        probe.fit(Xtr, ytr[:-1])
    with pytest.raises(ValueError, match="single class"):
        probe.fit(Xtr, np.zeros(len(Xtr), int))
    with pytest.raises(ValueError, match="never seen in training"):
        probe.fit(Xtr[ytr < 3], ytr[ytr < 3], Xte, yte)
    with pytest.raises(ValueError, match="both X_val and y_val"):
        probe.fit(Xtr, ytr, Xte)
    with pytest.raises(ValueError, match=">= 0"):
        ElasticNetProbe(l1=-1.0).fit(Xtr, ytr)
    with pytest.raises(ValueError, match="not fitted"):
        ElasticNetProbe().predict(Xte)
    with pytest.raises(ValueError, match="not a saved"):
        ElasticNetProbe.load(tmp_path)
    # every message is one line
    try:
        probe.fit(Xtr, ytr[:-1])
    except ValueError as error:
        assert "\n" not in str(error)
