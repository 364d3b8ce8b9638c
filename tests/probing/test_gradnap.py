"""GradNAPs: closed-form relevance against autograd, profiles on planted data, clustering, the permutation null."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speechprobe.probing.gradnap import (analyse_layer, cosine_distances, crossfitted_relevance, gradnap_profiles,
                             probe_relevance, relevance, separation_test)
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import ElasticNetProbe


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("given_target", [False, True])
def test_closed_form_relevance_equals_autograd(n_classes, given_target):
    rng = np.random.default_rng(n_classes)
    n, d = 30, 7
    X = rng.normal(2.0, 3.0, size=(n, d))
    W, b = rng.normal(size=(n_classes, d)), rng.normal(size=n_classes)
    mean, scale = rng.normal(size=d), rng.uniform(0.5, 2.0, size=d)
    target = rng.integers(0, n_classes, size=n) if given_target else None
    R = relevance(X, W, b, mean, scale, target)

    x = torch.tensor(X, requires_grad=True)
    logits = ((x - torch.tensor(mean)) / torch.tensor(scale)) @ torch.tensor(W).T + torch.tensor(b)
    t = torch.tensor(target) if given_target else logits.argmax(dim=1)
    torch.log_softmax(logits, dim=1).gather(1, t[:, None]).sum().backward()
    np.testing.assert_allclose(R, (x * x.grad).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_probe_relevance_uses_the_fitted_standardisation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4)) * [1, 10, 0.1, 3]
    y = (X[:, 0] > 0).astype(int)
    probe = ElasticNetProbe(max_epochs=5).fit(X, y)
    np.testing.assert_allclose(probe_relevance(probe, X),
                               relevance(X, probe.coef_, probe.intercept_, probe.mean_, probe.scale_))


def test_profiles_peak_at_the_planted_neurons_and_average_to_zero():
    rng = np.random.default_rng(1)
    groups = np.repeat(["a", "b", "c"], [50, 80, 120])
    R = rng.normal(size=(250, 40))
    R[groups == "a", 3] += 3.0
    R[groups == "b", 17] -= 3.0
    names, sizes, P = gradnap_profiles(R, groups)
    assert names.tolist() == ["a", "b", "c"] and sizes.tolist() == [50, 80, 120]
    assert np.argmax(P[0]) == 3 and np.argmin(P[1]) == 17
    np.testing.assert_allclose(sizes @ P / sizes.sum(), 0.0, atol=1e-12)


def test_constant_neurons_give_zero_profiles_not_nan():
    R = np.zeros((12, 3))
    R[:, 1] = np.arange(12.0)
    groups = np.repeat(["x", "y"], 6)
    _, _, P = gradnap_profiles(R, groups)
    assert np.all(np.isfinite(P)) and np.all(P[:, [0, 2]] == 0) and P[1, 1] > 0
    result = analyse_layer(R, groups, n_permutations=20)
    assert np.all(np.isfinite(result.cosine)) and np.all(np.isfinite(result.euclidean))
    zero = analyse_layer(np.ones((12, 3)), groups, n_permutations=20)
    assert zero.test["separation"] == 0.0 and not zero.test["separates"]
    assert cosine_distances(np.zeros((2, 3))).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_clustering_recovers_a_planted_two_level_hierarchy():
    rng = np.random.default_rng(2)
    groups = np.repeat(["a1", "a2", "b1", "b2"], 40)
    R = rng.normal(scale=0.5, size=(160, 30))
    family_a = np.isin(groups, ["a1", "a2"])
    R[family_a, :10] += 4.0  # level 1: a* against b*
    R[groups == "a1", 10:13] += 1.5  # level 2: within the families
    R[groups == "b1", 13:16] += 1.5
    result = analyse_layer(R, groups, n_permutations=99)
    assert sorted(map(sorted, result.root_split)) == [["a1", "a2"], ["b1", "b2"]]
    assert result.closest_pair in (("a1", "a2"), ("b1", "b2"))
    assert result.test["separates"] and result.test["p_value"] == pytest.approx(0.01)
    assert set(result.top_neurons[:16]) == set(range(16))  # every planted neuron before any other


def test_the_permutation_null_claims_nothing_on_label_independent_data():
    rng = np.random.default_rng(3)
    speakers = np.repeat([f"s{i}" for i in range(24)], 10)
    dialect = np.repeat(rng.permutation(np.repeat(["d1", "d2", "d3"], 8)), 10)
    # each speaker has its own relevance offset, unrelated to dialect: utterances are not exchangeable
    R = rng.normal(size=(24, 16)).repeat(10, axis=0) * 2 + rng.normal(size=(240, 16))
    claims = [separation_test(R, dialect, blocks=speakers, n_permutations=99, seed=s)["separates"] for s in range(5)]
    assert not any(claims)
    # shuffling single utterances ignores the speakers and overstates how rare the observed value is
    naive = separation_test(R, dialect, n_permutations=99, seed=0)
    blocked = separation_test(R, dialect, blocks=speakers, n_permutations=99, seed=0)
    assert blocked["permuted"] == "blocks" and blocked["null_mean"] > naive["null_mean"]
    # channel-like groups vary within speakers: shuffled within each speaker, same seed -> same answer
    channel = np.tile(["c1", "c2"], 120)
    first = separation_test(R, channel, blocks=speakers, n_permutations=30, seed=7)
    assert first == separation_test(R, channel, blocks=speakers, n_permutations=30, seed=7)
    assert not first["separates"]
    # groups that are the blocks themselves (speaker profiles) cannot shuffle blocks: inputs are shuffled
    assert separation_test(R, speakers, blocks=speakers, n_permutations=30)["permuted"] == "inputs"


def test_crossfitted_relevance_covers_every_test_row_with_a_probe_that_never_saw_it():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] > 0).astype(int)
    folds = np.arange(60) % 3
    splits = [SimpleNamespace(train=np.flatnonzero((folds != k) & (folds != (k + 1) % 3)),
                              validation=np.flatnonzero(folds == (k + 1) % 3), test=np.flatnonzero(folds == k))
              for k in range(3)]
    given = ElasticNetProbe(max_epochs=5).fit(X[splits[0].train], y[splits[0].train])
    rows, R, predicted = crossfitted_relevance(X, y, splits, l1=0.0, l2=0.0, options=TrainingOptions(max_epochs=5),
                                               probes={0: given})
    assert rows.tolist() == list(range(60)) and R.shape == (60, 5)
    assert np.array_equal(predicted[splits[0].test], given.predict(X[splits[0].test]))
    np.testing.assert_allclose(R[splits[0].test], probe_relevance(given, X[splits[0].test]))


def test_bad_input_is_a_clear_value_error():
    with pytest.raises(ValueError, match="single group"):
        gradnap_profiles(np.ones((4, 2)), ["a"] * 4)
    with pytest.raises(ValueError, match="one group per input"):
        gradnap_profiles(np.ones((4, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="class indices"):
        relevance(np.ones((2, 2)), np.ones((2, 2)), np.zeros(2), np.zeros(2), np.ones(2), target=np.array([0, 2]))
