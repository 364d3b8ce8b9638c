"""Tests for probing.subset.minimal_subset: planted neurons, search cost (batched fits), validation."""
from __future__ import annotations

import numpy as np
import pytest

import speechprobe.probing.subset as subset_module
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import ElasticNetProbe
from speechprobe.probing.ranking import rank_neurons
from speechprobe.probing.subset import MinimalSubset, minimal_subset

FAST = dict(batch_size=128, lr=1e-2)  # quick, still converges on this data


def planted_split(seed: int = 0, n_train: int = 1000, n_val: int = 500, d: int = 100):
    """Binary label from 5 planted neurons (comparable weights, so each one matters) among ``d``;
    20 distractors of huge variance and offset. Returns train / validation arrays and the planted set."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    X = rng.normal(size=(n, d))
    idx = rng.permutation(d)
    planted = np.sort(idx[:5])
    distractors = idx[5:25]
    w = np.array([2.0, -2.0, 1.8, -1.8, 2.0])
    y = (X[:, planted] @ w + rng.logistic(size=n) * 0.3 > 0).astype(int)
    X[:, distractors] = X[:, distractors] * 1000.0 + rng.normal(size=len(distractors)) * 500.0
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:], set(planted.tolist())


class Spy:
    """Wraps probing.subset's fit_probes, recording each call's number of probes, masks and kwargs."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, X, y, X_val, y_val, settings, feature_masks=None, **kwargs):
        self.calls.append(dict(settings=list(settings), masks=np.asarray(feature_masks), kwargs=kwargs))
        return self.real(X, y, X_val, y_val, settings, feature_masks, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, thread oversubscription makes these tiny fits
    several times slower and their time erratic (results do not depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(one_torch_thread):
    Xt, yt, Xv, yv, planted = planted_split()
    probe = ElasticNetProbe(**FAST).fit(Xt, yt, Xv, yv)
    return Xt, yt, Xv, yv, planted, rank_neurons(probe, "weight")


def run_search(data, ranking, **kw):
    Xt, yt, Xv, yv = data[:4]
    spy = Spy(subset_module.fit_probes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subset_module, "fit_probes", spy)
        result = minimal_subset(Xt, yt, Xv, yv, ranking, options=kw.pop("options", TrainingOptions(**FAST)), **kw)
    return result, spy


GRID = [1, 2, 5, 10, 20, 50, 100]


@pytest.fixture(scope="module")
def weight_search(data):
    return run_search(data, data[5], candidates=GRID[:-1], n_refine=8)


@pytest.fixture(scope="module")
def reversed_search(data):
    return run_search(data, data[5][::-1].copy(), candidates=GRID[:-1], n_refine=8)


def assert_smallest_passing(result: MinimalSubset):
    k, acc = result.curve_k, result.curve_accuracy
    assert np.all(np.diff(k) > 0) and k[-1] == len(result.neurons) / result.fraction
    assert result.k in k.tolist()
    at = k.tolist().index(result.k)
    assert result.accuracy == acc[at] >= result.threshold
    assert np.all(acc[k < result.k] < result.threshold)
    assert result.threshold == pytest.approx(0.97 * result.full_accuracy)


def test_weight_ranking_gives_small_subset_with_planted_neurons(data, weight_search):
    planted, ranking = data[4], data[5]
    result, _ = weight_search
    assert result.reached
    assert 5 <= result.k <= 10
    assert planted <= set(result.neurons.tolist())
    np.testing.assert_array_equal(result.neurons, ranking[: result.k])
    assert result.fraction == result.k / 100
    assert_smallest_passing(result)
    # the full probe (k = D) is on the curve and gives full_accuracy
    assert result.curve_k[-1] == 100 and result.curve_accuracy[-1] == result.full_accuracy
    # the refinement filled the gap 2..5: every k up to the answer was tried, so it is exactly minimal
    assert set(range(1, result.k + 1)) <= set(result.curve_k.tolist())


def test_reversed_ranking_needs_a_much_larger_subset(weight_search, reversed_search):
    small, _ = weight_search
    large, _ = reversed_search
    assert large.reached
    assert large.k >= 90 and large.k >= 5 * small.k  # the planted neurons come last
    assert_smallest_passing(large)
    # without them the probe is near chance on every evaluated k below the answer
    assert np.all(large.curve_accuracy[large.curve_k < 90] < 0.7)


def test_default_search_is_one_batched_fit_over_a_dense_grid(data):
    result, spy = run_search(data, data[5])
    assert len(spy.calls) == 1
    grid = subset_module._candidates(None, 100)
    assert spy.calls[0]["masks"].sum(axis=1).tolist() == grid.tolist()
    assert result.curve_k.tolist() == grid.tolist()
    assert_smallest_passing(result)
    assert 5 <= result.k <= 10 and data[4] <= set(result.neurons.tolist())


def test_refining_search_is_two_batched_fits(data, weight_search, reversed_search):
    for result, spy in (weight_search, reversed_search):
        assert len(spy.calls) == 2
        first, second = spy.calls
        grid = GRID
        # round 1: one batched model over the whole grid, the full set included, masks = top-k of the ranking
        assert first["masks"].shape == (len(grid), 100)
        assert first["masks"].sum(axis=1).tolist() == grid
        # round 2: the ks strictly between the last failing and first passing grid points
        ks = second["masks"].sum(axis=1).astype(int)
        assert 1 <= len(ks) <= 8
        passing = [g for g, a in zip(result.curve_k, result.curve_accuracy) if g in grid and a >= result.threshold]
        hi = passing[0]
        lo = grid[grid.index(hi) - 1]
        assert np.all((ks > lo) & (ks < hi))
        assert sorted(set(result.curve_k.tolist())) == sorted(set(grid) | set(ks.tolist()))
        for call in spy.calls:  # the options reach every candidate
            assert call["kwargs"]["options"] == TrainingOptions(batch_size=128, lr=1e-2)
            assert all(s == (0.0, 0.0) for s in call["settings"])


def test_first_grid_point_passing_needs_one_fit(data):
    result, spy = run_search(data, data[5], candidates=[5, 50], l2=1e-4, options=FAST)  # a mapping of options is taken
    assert len(spy.calls) == 1
    assert result.curve_k.tolist() == [5, 50, 100]  # D is always added
    assert result.k == 5 and result.reached
    assert all(s == (0.0, 1e-4) for s in spy.calls[0]["settings"])


def test_unreachable_given_full_accuracy(data):
    result, spy = run_search(data, data[5], candidates=[1, 2], full_accuracy=1.0, target=1.0)
    assert len(spy.calls) == 1  # nothing passes: nothing to refine
    assert not result.reached
    assert result.k == 100 and result.fraction == 1.0 and result.full_accuracy == 1.0
    assert result.threshold == 1.0 and result.accuracy == result.curve_accuracy[-1] < 1.0


def test_refinement_points():
    ks = np.array([1, 2, 5, 10, 20, 50, 100])
    passed = ks >= 50
    picks = subset_module._refinement(ks, passed, 8)
    assert len(picks) == 8 and picks.min() > 20 and picks.max() < 50
    assert np.ptp(np.diff(picks)) <= 1  # evenly spaced
    assert subset_module._refinement(ks, ks >= 5, 8).tolist() == [3, 4]
    assert subset_module._refinement(ks, ks >= 2, 8).size == 0  # neighbours
    assert subset_module._refinement(ks, ks >= 1, 8).size == 0  # first grid point passes
    assert subset_module._refinement(ks, ks > 100, 8).size == 0  # nothing passes


def test_default_grid():
    grid = subset_module._candidates(None, 384)
    assert grid[:10].tolist() == list(range(1, 11)) and grid[-1] == 384 and np.all(np.diff(grid) > 0)
    steps = grid[11:-1] / grid[10:-2]  # past 10: each k within 10% (rounded) of the one before
    assert np.all(steps <= 1.1 + 0.5 / grid[10:-2]) and len(grid) == 50
    assert subset_module._candidates(None, 1).tolist() == [1]
    assert subset_module._candidates([3, 3, 1], 10).tolist() == [1, 3, 10]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(target=0.0), "target"),
        (dict(target=1.01), "target"),
        (dict(target=float("nan")), "target"),
        (dict(target="high"), "target"),
        (dict(full_accuracy=0.0), "full_accuracy"),
        (dict(full_accuracy=1.5), "full_accuracy"),
        (dict(ranking=np.arange(9)), "permutation"),
        (dict(ranking=np.array([0, 0, 2, 3, 4, 5, 6, 7, 8, 9])), "permutation"),
        (dict(ranking=np.arange(1, 11)), "permutation"),
        (dict(ranking=np.arange(10.0)), "permutation"),
        (dict(ranking=np.arange(10).reshape(2, 5)), "permutation"),
        (dict(X_val=np.zeros((20, 9))), "features"),
        (dict(y_train=np.zeros(39)), "different lengths"),
        (dict(y_val=np.zeros(21)), "different lengths"),
        (dict(X_train=np.zeros(40)), "2-D"),
        (dict(candidates=[0, 3]), "candidates"),
        (dict(candidates=[3, 11]), "candidates"),
        (dict(candidates=[]), "candidates"),
        (dict(options=dict(alpha=1.0)), "unknown training option"),
        (dict(options=dict(FAST, l1=1e-3)), "l1 and l2 are separate arguments"),
        (dict(options=[("lr", 1e-2)]), "options must be a TrainingOptions"),
        (dict(n_refine=-1), "n_refine"),
    ],
)
def test_bad_input_raises_before_any_fit(monkeypatch, change, message):
    def no_fit(*args, **kwargs):
        raise AssertionError("fit_probes must not run on bad input")

    monkeypatch.setattr(subset_module, "fit_probes", no_fit)
    rng = np.random.default_rng(0)
    args = dict(
        X_train=rng.normal(size=(40, 10)),
        y_train=np.arange(40) % 2,
        X_val=rng.normal(size=(20, 10)),
        y_val=np.arange(20) % 2,
        ranking=np.arange(10),
    )
    args.update(change)
    positional = [args.pop(name) for name in ("X_train", "y_train", "X_val", "y_val", "ranking")]
    with pytest.raises(ValueError, match=message):
        minimal_subset(*positional, **args)
