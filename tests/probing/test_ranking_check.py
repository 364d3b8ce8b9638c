"""Tests for probing.ranking_check: a ranking's top k against k random neurons, minimal subsets against random."""
from __future__ import annotations

import json

import numpy as np
import pytest

import speechprobe.probing.ranking_check as check_module
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import fit_probes
from speechprobe.probing.ranking_check import (
    DEFAULT_KS,
    WELL_BELOW,
    RankingCheck,
    SubsetVersusRandom,
    _verdicts,
    check_ranking,
    minimal_versus_random,
)

FAST = TrainingOptions(batch_size=None, lr=0.1, max_epochs=40, patience=5)  # full batch: few, quick epochs
KS = (1, 2, 3, 5, 10, 20)
D = 128


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: tiny fits are slower and erratic with oversubscribed threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def copies(informative, d: int, mu: float, seed: int, n: int = 1200):
    """Binary label; neurons in ``informative`` are noisy copies of it (+-mu, unit noise), the rest pure
    noise. Split 400 / 400 / 400 into train, validation, test."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d))
    X[:, informative] += mu * (2 * y[:, None] - 1)
    X += rng.uniform(-3, 3, size=d)  # offsets, as real activations have
    third = n // 3
    return [(X[s], y[s]) for s in (slice(0, third), slice(third, 2 * third), slice(2 * third, None))]


def flat(splits):
    return [a for pair in splits for a in pair]


@pytest.fixture(scope="module")
def planted():
    """Neurons 0-2 carry the label (each alone ~0.93), neurons 3..127 are noise. For D=128 no seed in
    0..4 draws an informative neuron among its first 13, so random k <= 10 sits at chance (for D=40
    most seeds draw one before k=10: then random k=10 is as good as the top 10, and rightly "same")."""
    return flat(copies([0, 1, 2], D, 1.5, seed=0))


class Spy:
    """Wraps probing.ranking_check's fit_probes, recording each call and its fitted probes."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, X, y, X_val, y_val, settings, feature_masks=None, **kwargs):
        probes = self.real(X, y, X_val, y_val, settings, feature_masks, **kwargs)
        self.calls.append(dict(settings=list(settings), masks=np.asarray(feature_masks), kwargs=kwargs, probes=probes))
        return probes


def run_check(data, ranking, **kw):
    spy = Spy(check_module.fit_probes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(check_module, "fit_probes", spy)
        result = check_ranking(*data, ranking, ks=kw.pop("ks", KS), options=kw.pop("options", FAST), **kw)
    return result, spy


@pytest.fixture(scope="module")
def good(planted):
    return run_check(planted, np.arange(D))


@pytest.fixture(scope="module")
def reversed_check(planted):
    return run_check(planted, np.arange(D)[::-1].copy())


# --------------------------------------------------------------------------------------------------
# check_ranking


def test_good_ranking_beats_random(good):
    result, _ = good
    assert isinstance(result, RankingCheck)
    assert result.ks.tolist() == list(KS)
    assert result.verdicts[:3] == ("better", "better", "better")
    assert result.beats_random()
    assert result.beats_random(max_k=3)
    assert np.all(result.top_test[:3] > 0.85)
    assert np.all(result.random_test_mean[:3] < 0.65)  # random k <= 3 holds no informative neuron
    assert np.all(result.bottom_test[:3] < 0.65)  # the bottom neurons are noise


def test_reversed_ranking_does_not_beat_random_and_bottom_curve_is_high(reversed_check):
    result, _ = reversed_check
    assert not result.beats_random()
    assert all(v != "better" for v in result.verdicts[:3])
    assert np.all(result.bottom_test[:3] > 0.85)  # the informative neurons are last
    assert np.all(result.top_test[:3] < 0.65)
    assert result.summary().startswith("the ranking does not beat random neurons at k <= 10:")


def test_noise_first_ranking_is_worse_than_random():
    """Most neurons carry the label, 5 (25..29) are noise: a ranking that puts the noise first
    (informative last) is worse than random at small k, and its bottom curve is high. (Seeds 0..2 draw
    an informative neuron first, so random k=1 is informative for every draw.)"""
    data = flat(copies(np.arange(25), 30, 1.0, seed=1))
    ranking = np.r_[np.arange(25, 30), np.arange(25)]
    result, _ = run_check(data, ranking, ks=(1, 2, 3, 5, 10), random_seeds=(0, 1, 2))
    assert result.verdicts[:4] == ("worse", "worse", "worse", "worse")
    assert not result.beats_random()
    assert np.all(result.bottom_test > 0.75)
    assert "worse than random" in result.summary(k=2)


def test_one_batched_fit_with_nested_random_prefixes(good):
    result, spy = good
    assert len(spy.calls) == 1
    (call,) = spy.calls
    n_k, n_s = len(KS), len(result.seeds)
    masks = call["masks"]
    assert masks.shape == (n_k * (2 + n_s), D)
    assert call["kwargs"]["options"] == FAST
    top, bottom, random = masks[:n_k], masks[n_k:2 * n_k], masks[2 * n_k:].reshape(n_s, n_k, D)
    for i, k in enumerate(KS):
        assert np.flatnonzero(top[i]).tolist() == list(range(k))
        assert np.flatnonzero(bottom[i]).tolist() == list(range(D - k, D))
    for s, seed in enumerate(result.seeds):
        perm = np.random.default_rng(int(seed)).permutation(D)
        for i, k in enumerate(KS):
            assert set(np.flatnonzero(random[s, i])) == set(perm[:k].tolist())
            if i:
                assert np.all(random[s, i] >= random[s, i - 1])  # nested over k
    # the retrained probes see only their mask
    for probe, mask in zip(call["probes"], masks):
        assert np.all(probe.coef_[:, mask == 0] == 0)


def test_batched_equals_a_separate_fit(planted, good):
    result, spy = good
    Xt, yt, Xv, yv, Xs, ys = planted
    (call,) = spy.calls
    row = 2 * len(KS) + 1 * len(KS) + 3  # seed index 1, k = 5
    mask = call["masks"][row]
    (alone,) = fit_probes(Xt, yt, Xv, yv, [call["settings"][row]], mask[None, :], **call["kwargs"])
    batched = call["probes"][row]
    assert alone.best_epoch_ == batched.best_epoch_
    np.testing.assert_allclose(alone.coef_, batched.coef_, atol=1e-4)
    assert alone.score(Xs, ys) == pytest.approx(result.random_test[1, 3], abs=1e-9)
    assert alone.score(Xv, yv) == pytest.approx(result.random_val[1, 3], abs=1e-9)


def test_statistics_and_json(good):
    result, _ = good
    np.testing.assert_allclose(result.random_test_mean, result.random_test.mean(axis=0))
    np.testing.assert_allclose(result.random_test_std, result.random_test.std(axis=0, ddof=0))
    np.testing.assert_allclose(result.random_val_std, result.random_val.std(axis=0, ddof=0))
    assert result.random_test.shape == (len(result.seeds), len(KS))
    assert not result.top_test.flags.writeable
    out = json.loads(json.dumps(result.as_dict()))
    assert out["verdicts"][:3] == ["better"] * 3
    assert out["ks"] == list(KS) and out["n_features"] == D and out["beats_random"] is True


def test_summary_sentences(good):
    result, _ = good
    text = result.summary(k=3)
    assert text.startswith(f"the top 3 neurons kept alone reach {result.top_test[2]:.2f} test accuracy against ")
    assert f"{result.random_test_mean[2]:.2f} ± {result.random_test_std[2]:.2f} for 3 random neurons (5 draws)" in text
    assert text.endswith("better than random")
    assert "the top 1 neuron kept alone reaches" in result.summary(k=1)
    assert "does not beat" not in result.summary()
    with pytest.raises(ValueError, match="k=4"):
        result.summary(k=4)


def test_verdict_rule():
    mean, std = np.array([0.5, 0.5, 0.5, 0.5, 0.5]), np.array([0.1, 0.1, 0.0, 0.0, 0.0])
    top = np.array([0.61, 0.59, 0.53, 0.51, 0.47])
    # a huge test split: se = std / sqrt(5 seeds) = 0.0447 -> band 0.089; no spread: band = margin 0.02
    assert _verdicts(top, mean, std, 5, 10**9, 0.02) == ("better", "better", "better", "same", "worse")
    assert _verdicts(top, mean, std, 5, 10**9, 0.0)[3] == "better"
    # the test split's own sampling error widens the band: 100 examples at 0.53 -> se 0.05, band 0.1
    assert _verdicts(top, mean, std, 5, 100, 0.02)[2] == "same"
    # one seed: its spread is the whole uncertainty of random's mean
    assert _verdicts(top, mean, std, 1, 10**9, 0.02)[:2] == ("same", "same")


def test_beats_random_needs_a_better_small_k_and_no_worse_one():
    def check(verdicts):
        n = len(verdicts)
        z = np.zeros(n)
        return RankingCheck(ks=np.array([1, 3, 10, 30][:n]), seeds=np.arange(5), n_features=64, margin=0.02,
                            top_val=z, top_test=z + 0.9, bottom_val=z, bottom_test=z, random_val=np.zeros((5, n)),
                            random_test=np.zeros((5, n)), random_val_mean=z, random_val_std=z,
                            random_test_mean=z + 0.5, random_test_std=z, verdicts=tuple(verdicts), n_test=100)
    assert check(["better", "same", "same", "worse"]).beats_random()  # k = 30 is not a small k
    assert not check(["better", "same", "worse", "better"]).beats_random()
    assert not check(["same", "same", "same", "better"]).beats_random()
    assert "k = 1 of the k <= 10" in check(["better", "same", "same"]).summary()
    assert check(["same", "same", "same"]).summary().startswith("the ranking does not beat random neurons")


def test_default_grid_is_cut_at_d_without_adding_d(planted):
    result, spy = run_check(planted, np.arange(D), ks=DEFAULT_KS, random_seeds=(0,), options=FAST.replace(max_epochs=2))
    assert result.ks.tolist() == [k for k in DEFAULT_KS if k <= D] == [1, 2, 3, 5, 10, 20, 50, 100]
    assert len(spy.calls[0]["settings"]) == 8 * 3
    with pytest.raises(ValueError, match="max_k"):
        result.beats_random(max_k=0)


# --------------------------------------------------------------------------------------------------
# minimal_versus_random


def test_minimal_versus_random_planted(planted):
    Xt, yt, Xv, yv = planted[:4]
    result = minimal_versus_random(Xt, yt, Xv, yv, np.arange(D), options=FAST)
    assert isinstance(result, SubsetVersusRandom)
    assert result.subset.k <= 3 and set(result.subset.neurons.tolist()) <= {0, 1, 2}
    assert result.is_minimal
    assert result.subset.k <= WELL_BELOW * result.random_k_median
    assert result.ratio == pytest.approx(result.subset.k / result.random_k_median)
    assert result.random_k.shape == (3,) and result.random_k_median == float(np.median(result.random_k))
    text = result.summary()
    assert text.startswith(f"{result.subset.k} neurons ({100 * result.subset.k / D:.1f}%) keep 97% of the accuracy;")
    assert text.endswith(": a minimal subset")
    assert json.loads(json.dumps(result.as_dict()))["is_minimal"] is True


def test_minimal_versus_random_same_threshold(planted, monkeypatch):
    """Every random search gets the ranking's full accuracy, so the threshold is identical."""
    calls = []
    real = check_module.minimal_subset

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs, out))
        return out

    monkeypatch.setattr(check_module, "minimal_subset", spy)
    Xt, yt, Xv, yv = planted[:4]
    minimal_versus_random(Xt, yt, Xv, yv, np.arange(D), random_seeds=(3, 4), options=FAST.replace(max_epochs=5))
    assert len(calls) == 3
    first = calls[0][1]
    for kwargs, out in calls[1:]:
        assert kwargs["full_accuracy"] == first.full_accuracy
        assert out.threshold == pytest.approx(first.threshold)


@pytest.mark.parametrize(
    "k, minimal, verdict",
    [(6, True, "a minimal subset"), (7, False, "random neurons do about as well"), (13, False, "random neurons do better")],
)
def test_minimal_means_well_below_random(planted, monkeypatch, k, minimal, verdict):
    """k is called minimal only when k <= WELL_BELOW x the random rankings' median k (here 12)."""
    from speechprobe.probing.subset import MinimalSubset

    ks = iter([k, 10, 12, 14])

    def fake(X_train, y_train, X_val, y_val, ranking, **kwargs):
        n = next(ks)
        grid = np.arange(1, D + 1)
        return MinimalSubset(np.asarray(ranking)[:n], n, n / D, 0.9, 0.93, 0.9, grid, np.linspace(0.5, 0.93, D))

    monkeypatch.setattr(check_module, "minimal_subset", fake)
    Xt, yt, Xv, yv = planted[:4]
    result = minimal_versus_random(Xt, yt, Xv, yv, np.arange(D))
    assert result.random_k.tolist() == [10, 12, 14] and result.random_k_median == 12.0
    assert result.is_minimal is minimal
    assert result.ratio == pytest.approx(k / 12)
    assert result.summary().endswith(verdict)
    assert "random neurons need 12 (median of 3 draws)" in result.summary()


def test_minimal_versus_random_equal_neurons_is_not_minimal():
    """Every neuron an equally informative noisy copy of the label: no ranking is special."""
    (Xt, yt), (Xv, yv), _ = copies(np.arange(20), 20, 0.3, seed=2)
    result = minimal_versus_random(Xt, yt, Xv, yv, np.arange(20), options=FAST)
    assert not result.is_minimal
    assert result.subset.k > WELL_BELOW * result.random_k_median
    assert "not a finding" in result.summary()


# --------------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(ranking=np.arange(D - 1)), "ranking"),
        (dict(ranking=np.r_[0, np.arange(D - 1)]), "ranking"),
        (dict(ranking=np.arange(D, dtype=float)), "ranking"),
        (dict(ks=(0, 1)), "ks"),
        (dict(ks=(1.5, 2)), "ks"),
        (dict(ks=()), "ks"),
        (dict(ks=(D + 1,)), "ks"),
        (dict(random_seeds=()), "random_seeds"),
        (dict(random_seeds=(1, 1)), "random_seeds"),
        (dict(margin=-0.1), "margin"),
        (dict(options=dict(alpha=1.0)), "unknown training option"),
        (dict(X_test=np.zeros((5, D - 1))), "X_test"),
        (dict(y_val=np.zeros(3, dtype=int)), "y_val"),
        (dict(X_train=np.full((4, D), np.nan)), "X_train"),
    ],
)
def test_check_ranking_bad_inputs(planted, change, match):
    Xt, yt, Xv, yv, Xs, ys = planted
    args = dict(X_train=Xt, y_train=yt, X_val=Xv, y_val=yv, X_test=Xs, y_test=ys, ranking=np.arange(D))
    kwargs = dict(ks=KS, random_seeds=(0,), options=FAST, margin=0.02)
    for key, value in change.items():
        (args if key in args else kwargs)[key] = value
    with pytest.raises(ValueError, match=match):
        check_ranking(**args, **kwargs)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(ranking=np.arange(D)[::2]), "ranking"),
        (dict(random_seeds=(-1,)), "random_seeds"),
        (dict(target=1.5), "target"),
        (dict(options=dict(alpha=1.0)), "unknown training option"),
    ],
)
def test_minimal_versus_random_bad_inputs(planted, change, match):
    Xt, yt, Xv, yv = planted[:4]
    kwargs = dict(ranking=np.arange(D), random_seeds=(0,), options=FAST.replace(max_epochs=2))
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        minimal_versus_random(Xt, yt, Xv, yv, **kwargs)
