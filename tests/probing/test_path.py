"""Tests for probing.path: the regularisation-path ranking finds the informative neuron where weights fail."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from speechprobe.probing.path import RegularisationPath, path_rankings, regularisation_path
from speechprobe.probing.probe import ElasticNetProbe
from speechprobe.probing.ranking import rank_neurons


def correlated_case(seed: int = 0, n: int = 600, d: int = 80):  # d <= 80: the first d of the 80 neurons
    """Like a real encoder's features: one informative neuron (7); 20 noisier copies of its signal that
    share their noise (correlated with it and, more, with each other); five pairs of neurons that share a large nuisance factor each, one of the
    pair also carrying the signal (a_i = s + f_i, b_i = f_i, plus a little noise): a dense probe weighs
    each pair heavily with opposite signs, since a_i - b_i is the cleanest view of the signal, though
    neither neuron alone carries much; the rest independent noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 2 * y - 1
    X = rng.normal(size=(n, 80))
    X[:, 7] = s + rng.normal(size=n)
    copies = np.arange(10, 30)
    shared = 1.5 * rng.normal(size=n)  # the copies' common noise: averaging them does not remove it
    X[:, copies] = (s + shared)[:, None] + 0.7 * rng.normal(size=(n, copies.size))
    for i in range(5):
        nuisance = 4.0 * rng.normal(size=n)
        X[:, 40 + 2 * i] = s + nuisance + 0.05 * rng.normal(size=n)
        X[:, 41 + 2 * i] = nuisance + 0.05 * rng.normal(size=n)
    return X[:, :d], y


def test_path_puts_the_informative_neuron_first_where_weights_do_not():
    X, y = correlated_case()
    path = RegularisationPath().fit(X, y)
    assert path.ranking_[0] == 7
    assert path.entry_step_[7] == 0
    # the case is one where the dense probe's weights mislead (else this test would prove nothing)
    weight = rank_neurons(ElasticNetProbe(1e-3, 1e-3).fit(X, y), "weight")
    assert weight[0] != 7
    assert rank_neurons(None, "path", X=X, y=y)[0] == 7  # the default method of rank_neurons


def test_top_neuron_carries_more_than_a_random_one():
    X, y = correlated_case(seed=1)
    train, test = np.arange(400), np.arange(400, 600)
    top = RegularisationPath().fit(X[train], y[train]).ranking_[0]
    accuracy = lambda j: LogisticRegression().fit(X[train][:, [j]], y[train]).score(X[test][:, [j]], y[test])
    random = np.mean([accuracy(j) for j in np.random.default_rng(0).choice(80, 10, replace=False)])
    assert accuracy(top) > random + 0.1


def test_entry_is_exact_and_matches_the_active_count():
    X, y = correlated_case(seed=2)
    path = RegularisationPath(n_lambdas=20).fit(X, y)
    norms = np.linalg.norm(path.coef_, axis=0)
    # the last step's weights are exactly zero for every neuron not in the model (no small-weight threshold)
    assert np.count_nonzero(norms) == path.n_active_[-1]
    assert np.all(norms[path.entry_step_ == 20] == 0)
    # the first step admits few neurons; entries only ever accumulate
    assert 1 <= path.n_active_[0] <= 3
    entered_by = np.array([(path.entry_step_ <= t).sum() for t in range(len(path.lambdas_))])
    assert np.all(entered_by >= path.n_active_) and np.all(np.diff(entered_by) >= 0)
    assert np.all(np.diff(path.lambdas_) < 0)


def test_kkt_conditions_hold_at_a_step():
    """At the solution for strength lam: a neuron out of the model has gradient norm <= lam; one in has
    gradient = -lam * W_j / ||W_j|| (the group lasso's optimality conditions)."""
    X, y = correlated_case(seed=3, n=300, d=50)
    Z = (X - X.mean(0)) / X.std(0)
    result = regularisation_path(Z, y, 2, n_lambdas=8, lambda_ratio=0.05, tol=1e-8, max_iter=5000)
    lam = result.lambdas[-1]
    W, b = torch.as_tensor(result.coef.T), torch.as_tensor(result.intercept)
    P = torch.softmax(torch.as_tensor(Z) @ W + b, dim=1).numpy()
    grad = Z.T @ (P - np.eye(2)[y]) / len(y)
    norms = np.linalg.norm(result.coef.T, axis=1)
    out, inside = norms == 0, norms > 0
    assert inside.sum() >= 2
    assert np.all(np.linalg.norm(grad[out], axis=1) <= lam * (1 + 1e-4))
    expected = -lam * result.coef.T[inside] / norms[inside, None]
    np.testing.assert_allclose(grad[inside], expected, atol=1e-4 * lam)


def test_orthogonal_design_path_is_monotone_and_ordered_by_signal():
    rng = np.random.default_rng(4)
    n, d = 800, 12
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    strengths = np.linspace(1.5, 0.0, d)  # neuron 0 carries most, the last nothing
    X += (2 * y[:, None] - 1) * strengths[None, :]
    path = RegularisationPath().fit(X, y)
    assert path.n_left_ == 0
    np.testing.assert_array_equal(path.ranking_[:6], np.arange(6))


def test_multiclass_neuron_for_one_class_enters():
    """Group lasso over classes: a neuron that separates only class 3 of 4 still enters early."""
    rng = np.random.default_rng(5)
    n, d = 800, 40
    y = rng.integers(0, 4, n)
    X = rng.normal(size=(n, d))
    X[:, 17] += 2.5 * (y == 3)
    X[:, 5] += 1.5 * (y == 0) - 1.5 * (y == 1)
    ranking = RegularisationPath().fit(X, y).ranking_
    assert set(ranking[:2].tolist()) == {5, 17}


def test_invariant_to_scale_and_offset_of_a_neuron():
    X, y = correlated_case(seed=6)
    X2 = X.copy()
    X2[:, 7] = X2[:, 7] * 1000.0 + 50.0
    X2[:, 3] = X2[:, 3] * 0.001 - 7.0
    np.testing.assert_array_equal(RegularisationPath().fit(X, y).ranking_[:20],
                                  RegularisationPath().fit(X2, y).ranking_[:20])


def test_path_rankings_of_many_layers_equal_separate_fits():
    X, y = correlated_case(seed=7, d=40)
    other = X[:, ::-1].copy()
    narrow = X[:, :25]
    together = path_rankings({"a": X, "b": other, "c": narrow}, y)
    assert list(together) == ["a", "b", "c"]
    for name, block in (("a", X), ("b", other), ("c", narrow)):
        np.testing.assert_array_equal(together[name], RegularisationPath().fit(block, y).ranking_)


def test_string_labels_and_ranking_is_a_permutation():
    X, y = correlated_case(seed=8, d=30)
    labels = np.where(y == 1, "female", "male")
    path = RegularisationPath().fit(X, labels)
    assert sorted(path.ranking_.tolist()) == list(range(30))
    assert list(path.classes_) == ["female", "male"]
    np.testing.assert_array_equal(path.ranking_, RegularisationPath().fit(X, y).ranking_)


@pytest.mark.parametrize("params, message", [
    ({"n_lambdas": 0}, "n_lambdas"),
    ({"lambda_ratio": 1.5}, "lambda_ratio"),
    ({"l2": -1.0}, "l2"),
    ({"tol": 0.0}, "tol"),
])
def test_bad_parameters(params, message):
    X, y = correlated_case(d=10)
    with pytest.raises(ValueError, match=message):
        RegularisationPath(**params).fit(X, y)


def test_bad_input():
    X, y = correlated_case(d=10)
    with pytest.raises(ValueError, match="single class"):
        RegularisationPath().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="different lengths"):
        RegularisationPath().fit(X, y[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RegularisationPath().fit(bad, y)
