"""Tests for probing.ranking: planted-neuron recovery, invariances, NeuroX semantics, chance overlap."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from speechprobe.probing.ranking import (
    METHODS,
    Overlap,
    chance_jaccard,
    jaccard,
    neurox_ordering,
    overlap,
    rank_across_layers,
    rank_neurons,
    rank_per_class,
)

# ----------------------------------------------------------------------------------------------
# planted neurons


def planted_data(seed: int = 0, n: int = 2000, d: int = 300, n_classes: int = 2):
    """Label depends on a handful of planted neurons; distractors of huge variance and offset;
    redundant (noisy) copies of two planted neurons elsewhere."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    idx = rng.permutation(d)
    planted = np.sort(idx[:5])
    copies_of = planted[:2]
    copies = idx[5:7]
    distractors = idx[7:40]
    if n_classes == 2:
        w = np.array([2.0, -2.0, 1.5, -1.5, 1.8])
        logits = X[:, planted] @ w
        y = (logits + rng.logistic(size=n) * 0.3 > 0).astype(int)
    else:
        # every planted neuron pushes one class up (and the others down)
        W = np.where(np.arange(n_classes)[:, None] == np.arange(5) % n_classes, 3.0, -1.0)
        logits = X[:, planted] @ W.T + rng.gumbel(size=(n, n_classes)) * 0.3
        y = logits.argmax(axis=1)
    X[:, copies] = X[:, copies_of] + 0.3 * rng.normal(size=(n, 2))
    X[:, distractors] = X[:, distractors] * 1000.0 + rng.normal(size=len(distractors)) * 500.0
    return X, y, set(planted.tolist()), set(copies.tolist())


def fit(X, y, penalty="l2", C=1.0):
    Z = StandardScaler().fit_transform(X)
    if penalty == "l1":
        return LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=2000).fit(Z, y)
    return LogisticRegression(C=C, max_iter=2000).fit(Z, y)


@pytest.mark.parametrize("penalty,C", [("l2", 1.0), ("l1", 0.1)])
def test_weight_ranking_recovers_planted_neurons(penalty, C):
    X, y, planted, copies = planted_data()
    probe = fit(X, y, penalty, C)
    ranking = rank_neurons(probe, "weight")
    assert sorted(ranking.tolist()) == list(range(X.shape[1]))
    # the three un-copied planted neurons are the very top; the copied pairs share their weight
    # (L1 may keep one of each pair), so the top 7 lie inside planted + copies
    top = set(ranking[:7].tolist())
    informative = planted | copies
    assert len(top & informative) >= 5
    assert set(ranking[:5].tolist()) <= informative
    if penalty == "l2":
        assert top == informative


def test_probeless_recovers_planted_neurons():
    X, y, planted, copies = planted_data(seed=1)
    ranking = rank_neurons(None, "probeless", X=X, y=y)
    assert sorted(ranking.tolist()) == list(range(X.shape[1]))
    assert set(ranking[:7].tolist()) == planted | copies


def test_multiclass_planted_neurons_all_methods():
    X, y, planted, copies = planted_data(seed=2, n_classes=4)
    probe = fit(X, y)
    assert probe.coef_.shape == (4, X.shape[1])
    informative = planted | copies
    for method in METHODS:
        ranking = rank_neurons(probe, method, X=X, y=y)
        if method == "neurox":  # coarse: neurons entering at one 1% step are in index order
            assert informative <= set(ranking[:10].tolist())
        elif method == "path":  # the noisy copies add nothing once the planted neurons are in: they may come later
            assert set(ranking[:5].tolist()) == planted
        else:
            assert set(ranking[:7].tolist()) == informative, method


def test_binary_one_row_matches_two_row_softmax_form():
    rng = np.random.default_rng(3)
    w = rng.normal(size=40)
    one = SimpleNamespace(coef_=w[None, :], classes_=np.array(["a", "b"]))
    two = SimpleNamespace(coef_=np.stack([-w / 2, w / 2]), classes_=np.array(["a", "b"]))
    for method in ("weight", "neurox"):
        np.testing.assert_array_equal(rank_neurons(one, method), rank_neurons(two, method))
    per_one, per_two = rank_per_class(one), rank_per_class(two)
    for c in ("a", "b"):
        np.testing.assert_array_equal(per_one[c], per_two[c])
    signed = rank_per_class(one, signed=True)
    np.testing.assert_array_equal(signed["b"], np.argsort(-w, kind="stable"))
    np.testing.assert_array_equal(signed["a"], np.argsort(w, kind="stable"))


# ----------------------------------------------------------------------------------------------
# invariances


def test_permutation_equivariance_exact():
    rng = np.random.default_rng(4)
    coef = rng.normal(size=(3, 50))
    X = rng.normal(size=(200, 50))
    y = rng.integers(0, 3, size=200)
    X[:, 7] += y  # something for probeless to find
    perm = rng.permutation(50)
    probe = SimpleNamespace(coef_=coef)
    probe_p = SimpleNamespace(coef_=coef[:, perm])
    for method in METHODS:
        base = rank_neurons(probe, method, X=X, y=y)
        permuted = rank_neurons(probe_p, method, X=X[:, perm], y=y)
        # feature j of the permuted data is original feature perm[j]
        np.testing.assert_array_equal(perm[permuted], base, err_msg=method)


def test_permutation_equivariance_refit():
    X, y, _, _ = planted_data(seed=5, n=1000, d=100)
    perm = np.random.default_rng(5).permutation(X.shape[1])
    base = rank_neurons(fit(X, y), "weight")
    permuted = rank_neurons(fit(X[:, perm], y), "weight")
    np.testing.assert_array_equal(perm[permuted][:20], base[:20])


def test_scale_and_offset_invariance():
    X, y, planted, _ = planted_data(seed=6, n=1000, d=100)
    X2 = X.copy()
    j = sorted(planted)[0]
    X2[:, j] = X2[:, j] * 1000.0 + 50.0
    X2[:, 3] = X2[:, 3] * 1000.0 + 50.0
    for method in METHODS:
        a = rank_neurons(fit(X, y), method, X=X, y=y)
        b = rank_neurons(fit(X2, y), method, X=X2, y=y)
        np.testing.assert_array_equal(a[:30], b[:30], err_msg=method)
    # probeless does not depend on a fit: the whole ranking is identical
    np.testing.assert_array_equal(
        rank_neurons(None, "probeless", X=X, y=y), rank_neurons(None, "probeless", X=X2, y=y)
    )


def test_ties_lower_index_first():
    coef = np.array([[0.0, 1.0, 0.0, 1.0, 0.5]])
    np.testing.assert_array_equal(rank_neurons(coef, "weight"), [1, 3, 4, 0, 2])
    np.testing.assert_array_equal(rank_neurons(coef, "neurox"), [1, 3, 4, 0, 2])


# ----------------------------------------------------------------------------------------------
# NeuroX semantics against a literal slow implementation of its threshold sweep


def slow_get_top_neurons(weights, percentage):
    """NeuroX's get_top_neurons (per class, cumulative mass), with a stable descending sort."""
    weights = np.abs(weights)
    selected_all = set()
    for c in range(weights.shape[0]):
        total_mass = np.sum(weights[c, :])
        sort_idx = np.argsort(-weights[c, :], kind="stable")
        cum_sums = np.cumsum(weights[c, sort_idx])
        unselected = np.where(cum_sums >= total_mass * percentage)[0]
        if unselected.shape[0] == 0:
            selected = np.arange(cum_sums.shape[0])
        else:
            selected = np.arange(unselected[0] + 1)
        selected_all |= set(sort_idx[selected].tolist())
    return selected_all


def slow_neuron_ordering(weights, search_stride=100):
    """NeuroX's get_neuron_ordering: search_stride + 1 thresholded passes.  Returns the blocks
    (the set of neurons new at each step; NeuroX orders a block arbitrarily) and the cutoffs."""
    considered, blocks, cutoffs = set(), [], []
    for p in range(search_stride + 1):
        new = slow_get_top_neurons(weights, p / search_stride) - considered
        blocks.append(new)
        considered |= new
        cutoffs.append(len(considered))
    return blocks, cutoffs


def blocks_of(order, cutoffs):
    starts = [0] + list(cutoffs[:-1])
    return [set(order[a:b].tolist()) for a, b in zip(starts, cutoffs)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("stride", [100, 7])
def test_neurox_matches_slow_sweep(seed, stride):
    rng = np.random.default_rng(seed)
    n_classes, d = [(1, 15), (2, 20), (3, 30), (5, 12), (4, 60), (3, 8)][seed]
    weights = rng.normal(size=(n_classes, d)) * rng.exponential(size=d)
    if seed % 2:
        weights[:, rng.choice(d, d // 3, replace=False)] = 0.0  # L1-style dead neurons
        weights[0, rng.integers(d)] = 0.0
    expected_blocks, expected_cutoffs = slow_neuron_ordering(weights, stride)
    order, cutoffs = neurox_ordering(SimpleNamespace(coef_=weights), stride)
    np.testing.assert_array_equal(cutoffs, expected_cutoffs)
    assert blocks_of(order, cutoffs) == expected_blocks
    assert sorted(order.tolist()) == list(range(d))
    np.testing.assert_array_equal(rank_neurons(weights, "neurox", search_stride=stride), order)


def test_neurox_never_selected_neurons_go_last():
    # cum sum reaches the total before the tiny neuron: NeuroX never selects it (nor the zero one)
    weights = np.array([[1.0, 1e-17, 0.0, 0.5]])
    blocks, _ = slow_neuron_ordering(weights)
    assert set().union(*blocks) == {0, 3}
    order, cutoffs = neurox_ordering(weights)
    assert order.tolist() == [0, 3, 1, 2]
    assert cutoffs[-1] == 2


def test_neurox_p0_takes_each_class_top_neuron():
    weights = np.array([[5.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.1, 3.0], [0.0, 0.0, 0.0, 0.0]])
    order, cutoffs = neurox_ordering(weights, 100)
    # class 2 has no mass: NeuroX still "takes" its first sorted neuron (index 0 here)
    assert set(order[: cutoffs[0]].tolist()) == {0, 3}
    assert slow_get_top_neurons(weights, 0.0) == {0, 3}


# ----------------------------------------------------------------------------------------------
# per class and across layers


def test_rank_per_class_orders_each_row():
    rng = np.random.default_rng(8)
    coef = rng.normal(size=(3, 25))
    probe = SimpleNamespace(coef_=coef, classes_=np.array(["x", "y", "z"]))
    per = rank_per_class(probe)
    assert list(per) == ["x", "y", "z"]
    for row, c in zip(coef, per):
        np.testing.assert_array_equal(per[c], np.argsort(-np.abs(row), kind="stable"))
    # a class-specific planted neuron tops its own class
    X, y, planted, copies = planted_data(seed=9, n_classes=3)
    fitted = fit(X, y)
    informative = planted | copies
    for c, r in rank_per_class(fitted).items():
        assert r[0] in informative, c


def test_rank_across_layers():
    rng = np.random.default_rng(10)
    coefs = [rng.normal(size=(2, 30)) * 0.01, rng.normal(size=(2, 20)) * 0.01, rng.normal(size=(2, 40)) * 0.01]
    coefs[1][:, [4, 11, 17]] = 5.0
    coefs[2][:, 2] = 3.0
    probes = [SimpleNamespace(coef_=c, classes_=np.array([0, 1])) for c in coefs]
    ranking, counts = rank_across_layers(probes, ["l0", "l1", "l2"], k=4)
    assert len(ranking) == 90 and len(set(ranking)) == 90
    assert ranking[:4] == [("l1", 4), ("l1", 11), ("l1", 17), ("l2", 2)]
    assert counts == {"l0": 0, "l1": 3, "l2": 1}
    # bare arrays work too, and neurox agrees on the top here
    ranking_nx, counts_nx = rank_across_layers(coefs, ["l0", "l1", "l2"], k=4, method="neurox")
    assert set(ranking_nx[:4]) == set(ranking[:4]) and counts_nx == counts
    # consistent with ranking the concatenated probe
    flat = rank_neurons(np.concatenate(coefs, axis=1), "weight")
    offsets = {"l0": 0, "l1": 30, "l2": 50}
    assert [offsets[l] + i for l, i in ranking] == flat.tolist()
    _, default_counts = rank_across_layers(coefs, ["a", "b", "c"])
    assert sum(default_counts.values()) == round(0.05 * 90)


# ----------------------------------------------------------------------------------------------
# overlap and chance


def test_jaccard():
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert jaccard(np.array([0, 1]), [0, 1]) == 1.0
    assert jaccard([], []) == 0.0
    assert jaccard([1], [2]) == 0.0


def test_chance_jaccard_exhaustive_small():
    n, a, b = 7, 3, 4
    total = []
    for A in itertools.combinations(range(n), a):
        for B in itertools.combinations(range(n), b):
            total.append(len(set(A) & set(B)) / len(set(A) | set(B)))
    assert chance_jaccard(a, b, n) == pytest.approx(np.mean(total), abs=1e-12)
    assert chance_jaccard(n, 2, n) == pytest.approx(2 / n)
    assert chance_jaccard(0, 3, n) == 0.0
    assert chance_jaccard(5, 5, 5) == 1.0


@pytest.mark.parametrize("a,b,n", [(30, 50, 200), (10, 10, 768), (150, 180, 256)])
def test_chance_jaccard_monte_carlo(a, b, n):
    rng = np.random.default_rng(11)
    trials = 20000
    ra = np.argsort(rng.random((trials, n)), axis=1)[:, :a]
    rb = np.argsort(rng.random((trials, n)), axis=1)[:, :b]
    ma = np.zeros((trials, n), dtype=bool)
    mb = np.zeros((trials, n), dtype=bool)
    np.put_along_axis(ma, ra, True, axis=1)
    np.put_along_axis(mb, rb, True, axis=1)
    inter = (ma & mb).sum(axis=1)
    j = inter / (a + b - inter)
    se = j.std() / np.sqrt(trials)
    assert abs(chance_jaccard(a, b, n) - j.mean()) < 5 * se + 1e-9


def test_overlap_p_values():
    n = 400
    same = overlap(range(40), range(40), n)
    assert isinstance(same, Overlap)
    assert same.jaccard == 1.0 and same.p_value < 1e-30 and same.ratio > 10
    disjoint = overlap(range(40), range(40, 80), n)
    assert disjoint.jaccard == 0.0 and disjoint.p_value == 1.0
    # p-values of random sets are (conservatively) uniform: P(p <= 0.05) <= 0.05
    rng = np.random.default_rng(12)
    ps = np.array([overlap(rng.choice(n, 30, replace=False), rng.choice(n, 50, replace=False), n).p_value
                   for _ in range(2000)])
    assert np.mean(ps <= 0.05) <= 0.05 + 0.015
    assert np.mean(ps <= 0.5) > 0.3
    # an overlap of exactly the expected size is unremarkable
    o = overlap(range(20), range(10, 30), 40)  # 10 shared; expected 20*20/40 = 10
    assert 0.3 < o.p_value < 0.8 and 0.8 < o.ratio < 1.3
    with pytest.raises(AttributeError):
        o.jaccard = 0.0  # frozen


# ----------------------------------------------------------------------------------------------
# bad input


def test_errors():
    coef = np.ones((2, 5))
    with pytest.raises(ValueError, match="known methods: path, weight, neurox, probeless"):
        rank_neurons(coef, "saliency")
    with pytest.raises(ValueError, match="needs the features and labels"):
        rank_neurons(coef, "probeless")
    with pytest.raises(ValueError, match="5 features but the probe has"):
        rank_neurons(np.ones((2, 4)), "probeless", X=np.ones((6, 5)), y=[0, 1] * 3)
    with pytest.raises(ValueError, match="one label per row"):
        rank_neurons(None, "probeless", X=np.ones((6, 5)), y=[0, 1] * 2)
    with pytest.raises(ValueError, match="NaN"):
        rank_neurons(np.array([[1.0, np.nan]]), "weight")
    bad_X = np.random.default_rng(0).normal(size=(6, 3))
    bad_X[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        rank_neurons(None, "probeless", X=bad_X, y=[0, 1] * 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        rank_neurons(None, "probeless", X=np.ones((4, 3)), y=[1] * 4)
    with pytest.raises(ValueError, match="no coef_"):
        rank_neurons(SimpleNamespace(coef_=None), "weight")
    with pytest.raises(ValueError, match='"path" needs the features and labels'):
        rank_neurons(coef)
    with pytest.raises(ValueError, match="classes_"):
        rank_per_class(SimpleNamespace(coef_=np.ones((3, 4)), classes_=[0, 1]))
    with pytest.raises(ValueError, match="different numbers of classes"):
        rank_across_layers([np.ones((2, 3)), np.ones((3, 3))], ["a", "b"])
    with pytest.raises(ValueError, match="2 probes but 1 layer names"):
        rank_across_layers([np.ones((2, 3)), np.ones((2, 3))], ["a"])
    with pytest.raises(ValueError, match="k must be"):
        rank_across_layers([np.ones((2, 3))], ["a"], k=4)
    with pytest.raises(ValueError, match="outside"):
        overlap([1, 2], [3, 10], 10)
    with pytest.raises(ValueError, match="set sizes"):
        chance_jaccard(5, 3, 4)
    with pytest.raises(ValueError, match="search_stride"):
        rank_neurons(coef, "neurox", search_stride=0)
