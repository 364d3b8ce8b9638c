"""Speaker verification: trial pairs, cosine scores, EER on hand-worked cases, planted speakers, groups."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from speechprobe.probing.metrics import Interval
from speechprobe.probing.verification import (
    Trials,
    VerificationResult,
    cosine_scores,
    eer_interval,
    equal_error_rate,
    trial_pairs,
    verification_eer,
)


def planted(
    rng: np.random.Generator, n_speakers: int, per_speaker: int, dim: int = 32, noise: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings = speaker centre + isotropic noise: same-speaker pairs are closer than others."""
    speakers = np.repeat(np.arange(n_speakers), per_speaker)
    centres = rng.normal(size=(n_speakers, dim))
    return centres[speakers] + noise * rng.normal(size=(speakers.shape[0], dim)), speakers


def scored(targets: list[float], nontargets: list[float]) -> VerificationResult:
    is_target = np.r_[[True] * len(targets), [False] * len(nontargets)]
    return equal_error_rate(np.r_[targets, nontargets], is_target)


# --------------------------------------------------------------------------------------------------
# equal error rate


def test_eer_is_zero_for_perfectly_separated_scores() -> None:
    result = scored([0.9, 0.8, 0.75], [0.5, 0.2, 0.1, 0.0])
    assert result.eer == 0.0
    assert 0.5 < result.threshold <= 0.75  # accepts every target, rejects every non-target
    assert (result.n_target, result.n_nontarget) == (3, 4)


def test_eer_is_one_when_every_non_target_outscores_every_target() -> None:
    assert scored([0.1, 0.2], [0.8, 0.9, 0.7]).eer == pytest.approx(1.0)


def test_eer_hand_worked_crossing_on_a_point() -> None:
    # Descending: .9T .8T .7N .3T .2N .1N. Accepting scores >= 0.7 lets one of three non-targets in
    # (FAR 1/3) and rejects one of three targets (FRR 1/3): the crossing lies on that ROC point.
    result = scored([0.9, 0.8, 0.3], [0.7, 0.2, 0.1])
    assert result.eer == pytest.approx(1 / 3)
    assert result.threshold == pytest.approx(0.7)


def test_eer_hand_worked_crossing_between_points_is_interpolated() -> None:
    # Targets .9 .5, non-targets .8 .7 .1. At >= .8: FAR 1/3, FRR 1/2 (FAR - FRR = -1/6); at >= .7:
    # FAR 2/3, FRR 1/2 (+1/6). Halfway between: FAR = FRR = 1/2, threshold halfway, 0.75.
    result = scored([0.9, 0.5], [0.8, 0.7, 0.1])
    assert result.eer == pytest.approx(0.5)
    assert result.threshold == pytest.approx(0.75)


def test_eer_of_identical_distributions_is_about_one_half() -> None:
    rng = np.random.default_rng(0)
    result = scored(rng.normal(size=4000).tolist(), rng.normal(size=4000).tolist())
    assert result.eer == pytest.approx(0.5, abs=0.03)


def test_eer_of_tied_scores_is_one_half() -> None:
    assert scored([0.3, 0.3], [0.3, 0.3, 0.3]).eer == pytest.approx(0.5)


def test_eer_lies_between_the_bounds_of_a_brute_force_sweep() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        target = rng.normal(1.0, 1.0, size=int(rng.integers(5, 60)))
        other = rng.normal(0.0, 1.0, size=int(rng.integers(5, 60)))
        scores = np.r_[target, other]
        far = np.array([(other >= t).mean() for t in np.r_[scores, np.inf]])
        frr = np.array([(target < t).mean() for t in np.r_[scores, np.inf]])
        eer = scored(target.tolist(), other.tolist()).eer
        # On the crossing segment the EER is at most the smaller max(FAR, FRR) of its end points and
        # at least the larger min(FAR, FRR).
        assert np.max(np.minimum(far, frr)) - 1e-12 <= eer <= np.min(np.maximum(far, frr)) + 1e-12


def test_eer_result_is_frozen_and_serialisable() -> None:
    result = scored([0.9], [0.1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.eer = 0.5  # type: ignore[misc]
    assert result.as_dict()["n_target"] == 1


@pytest.mark.parametrize(
    "scores, is_target, message",
    [
        ([0.1, 0.2], [True, True], "both target and non-target"),
        ([0.1, 0.2], [True], "different lengths"),
        ([0.1, np.nan], [True, False], "NaN"),
        ([0.1, 0.2], [2, 0], "booleans"),
        ([], [], "empty"),
    ],
)
def test_eer_rejects_bad_input(scores, is_target, message) -> None:
    with pytest.raises(ValueError, match=message):
        equal_error_rate(scores, is_target)


# --------------------------------------------------------------------------------------------------
# trial pairs


def test_trial_pairs_are_seeded_valid_and_unique() -> None:
    speakers = np.repeat(["a", "b", "c", "d"], [5, 6, 4, 7])
    trials = trial_pairs(speakers, n_target=30, n_nontarget=40, seed=3)
    again = trial_pairs(speakers, n_target=30, n_nontarget=40, seed=3)
    other = trial_pairs(speakers, n_target=30, n_nontarget=40, seed=4)
    assert isinstance(trials, Trials)
    np.testing.assert_array_equal(trials.pairs, again.pairs)
    assert not np.array_equal(trials.pairs, other.pairs)
    assert (trials.n_target, trials.n_nontarget) == (30, 40)
    left, right = trials.pairs.T
    assert np.all(left < right)  # no self pairs, canonical order
    assert len({tuple(p) for p in trials.pairs.tolist()}) == 70  # no duplicates
    np.testing.assert_array_equal(speakers[left] == speakers[right], trials.is_target)
    assert not trials.pairs.flags.writeable


def test_trial_pairs_use_only_the_given_rows() -> None:
    speakers = np.repeat(np.arange(10), 6)
    rows = np.flatnonzero(speakers >= 4)  # e.g. speakers 0-3 trained the probe
    trials = trial_pairs(speakers, rows, n_target=50, n_nontarget=50, seed=0)
    assert set(trials.pairs.ravel().tolist()) <= set(rows.tolist())
    mask = trial_pairs(speakers, speakers >= 4, n_target=50, n_nontarget=50, seed=0)
    np.testing.assert_array_equal(mask.pairs, trials.pairs)


def test_target_trials_are_balanced_over_speakers() -> None:
    # Speaker 0 has 3 utterances (3 possible pairs), the others 20 (190 each). 40 target trials over
    # 4 speakers: speaker 0 gives all 3, the other three share 37 as 12/12/13 - not 0.5/13/13/13 drawn
    # in proportion to pair counts.
    speakers = np.repeat(np.arange(4), [3, 20, 20, 20])
    trials = trial_pairs(speakers, n_target=40, n_nontarget=0, seed=0)
    per_speaker = np.bincount(speakers[trials.pairs[:, 0]], minlength=4)
    assert per_speaker[0] == 3
    assert sorted(per_speaker[1:].tolist()) == [12, 12, 13]


def test_non_target_trials_are_balanced_over_speakers() -> None:
    # One speaker holds most utterances; drawn uniformly over row pairs it would be in almost every
    # non-target trial. Spread over the 15 speaker pairs (20 trials each, 25 possible for two small
    # speakers), each of the 6 speakers is in 5 x 20 trials.
    speakers = np.repeat(np.arange(6), [200, 5, 5, 5, 5, 5])
    trials = trial_pairs(speakers, n_target=0, n_nontarget=300, seed=1)
    np.testing.assert_array_equal(np.bincount(speakers[trials.pairs].ravel(), minlength=6), np.full(6, 100))
    # fewer trials than speaker pairs: one trial from each of that many distinct speaker pairs
    few = trial_pairs(speakers, n_target=0, n_nontarget=15, seed=1)
    np.testing.assert_array_equal(np.bincount(speakers[few.pairs].ravel(), minlength=6), np.full(6, 5))


def test_asking_for_every_pair_returns_every_pair() -> None:
    speakers = np.array([0, 0, 0, 1, 1, 2, 2])
    all_pairs = set(itertools.combinations(range(7), 2))
    same = {p for p in all_pairs if speakers[p[0]] == speakers[p[1]]}
    # 16 non-target trials over 3 speaker pairs: the branch that fills speaker pairs up to capacity
    trials = trial_pairs(speakers, n_target=len(same), n_nontarget=len(all_pairs) - len(same), seed=0)
    assert {tuple(p) for p, t in zip(trials.pairs.tolist(), trials.is_target) if t} == same
    assert {tuple(p) for p in trials.pairs.tolist()} == all_pairs


@pytest.mark.parametrize(
    "speakers, kwargs, message",
    [
        (np.array([0, 0, 1]), dict(n_target=1, n_nontarget=1), r"fewer than 2 utterances.*\(1\)"),
        (np.array([0, 0, 0]), dict(n_target=1, n_nontarget=1), "at least 2 speakers"),
        (np.array([0, 0, 1, 1]), dict(n_target=3, n_nontarget=0), "only 2 distinct same-speaker"),
        (np.array([0, 0, 1, 1]), dict(n_target=0, n_nontarget=5), "only 4 distinct different-speaker"),
        (np.array([0, 0, 1, 1]), dict(n_target=0, n_nontarget=0), "at least one trial"),
        (np.array([0, 0, 1, 1]), dict(n_target=-1, n_nontarget=1), "non-negative integer"),
        (np.array([0, 0, 1, 1]), dict(n_target=1, n_nontarget=1, rows=[0, 0, 2]), "repeated"),
        (np.array([0, 0, 1, 1]), dict(n_target=1, n_nontarget=1, rows=[0, 9]), r"\[0, 4\)"),
    ],
)
def test_trial_pairs_reject_bad_input(speakers, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        trial_pairs(speakers, **kwargs)


def test_a_single_utterance_speaker_is_fine_without_target_trials() -> None:
    trials = trial_pairs(np.array([0, 1, 2]), n_target=0, n_nontarget=3, seed=0)
    assert {tuple(p) for p in trials.pairs.tolist()} == {(0, 1), (0, 2), (1, 2)}


# --------------------------------------------------------------------------------------------------
# cosine scores


def test_cosine_scores_match_the_definition_and_ignore_scale() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(20, 7))
    pairs = np.array([[0, 1], [2, 3], [4, 4], [5, 19]])
    norm = np.linalg.norm
    expected = [embeddings[i] @ embeddings[j] / norm(embeddings[i]) / norm(embeddings[j]) for i, j in pairs]
    np.testing.assert_allclose(cosine_scores(embeddings, pairs), expected, atol=1e-12)
    scaled = embeddings * rng.uniform(0.1, 10.0, size=(20, 1))
    np.testing.assert_allclose(cosine_scores(scaled, pairs), expected, atol=1e-12)


def test_cosine_scores_of_a_zero_vector_are_zero() -> None:
    embeddings = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(cosine_scores(embeddings, [[0, 1], [1, 1], [0, 2]]), [0.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "embeddings, pairs, message",
    [
        (np.ones(3), [[0, 1]], "2-D"),
        (np.ones((3, 2)), [[0, 3]], r"\[0, 3\)"),
        (np.ones((3, 2)), [0, 1], r"shape \(n_pairs, 2\)"),
        (np.ones((3, 2)), [[0.0, 1.0]], "integer"),
        (np.array([[np.inf, 0.0], [1.0, 1.0]]), [[0, 1]], "NaN or Inf"),
    ],
)
def test_cosine_scores_reject_bad_input(embeddings, pairs, message) -> None:
    with pytest.raises(ValueError, match=message):
        cosine_scores(embeddings, pairs)


# --------------------------------------------------------------------------------------------------
# end to end


def test_planted_speakers_give_a_low_eer_and_shuffled_speakers_about_one_half() -> None:
    rng = np.random.default_rng(0)
    embeddings, speakers = planted(rng, n_speakers=40, per_speaker=10, noise=0.8)
    good = verification_eer(embeddings, speakers, n_pairs=1500, seed=0)
    assert good.eer < 0.05
    assert good.n_target == good.n_nontarget == 1500
    shuffled = verification_eer(embeddings, rng.permutation(speakers), n_pairs=1500, seed=0)
    assert shuffled.eer == pytest.approx(0.5, abs=0.06)


def test_verification_eer_caps_pairs_at_what_the_rows_hold() -> None:
    rng = np.random.default_rng(0)
    embeddings, speakers = planted(rng, n_speakers=4, per_speaker=3)
    result = verification_eer(embeddings, speakers, n_pairs=1000)
    assert result.n_target == result.n_nontarget == 12  # 4 speakers x 3 same-speaker pairs


def test_per_group_eer_compares_groups_on_pairs_within_each() -> None:
    # Group "f" speakers are well separated, group "m" speakers are noisy: a gap a bias audit must see.
    rng = np.random.default_rng(2)
    clear, speakers_f = planted(rng, n_speakers=20, per_speaker=8, noise=0.5)
    noisy, speakers_m = planted(rng, n_speakers=20, per_speaker=8, noise=3.0)
    embeddings = np.vstack([clear, noisy])
    speakers = np.r_[speakers_f, speakers_m + 100]
    gender = np.repeat(["f", "m"], [160, 160])
    result = verification_eer(embeddings, speakers, n_pairs=500, groups=gender, seed=0)
    assert set(result.by_group) == {"f", "m"}
    assert result.by_group["f"].eer < 0.05 < 0.2 < result.by_group["m"].eer
    # each group's trials are drawn within the group: the same as asking for those rows alone
    alone = verification_eer(embeddings, speakers, gender == "m", n_pairs=500, seed=0)
    assert result.by_group["m"] == alone


def test_per_group_eer_names_a_group_without_trials() -> None:
    rng = np.random.default_rng(0)
    embeddings, speakers = planted(rng, n_speakers=6, per_speaker=4)
    groups = np.where(speakers == 5, "x", "y")  # group "x" is a single speaker: no non-target trial
    with pytest.raises(ValueError, match="group 'x'"):
        verification_eer(embeddings, speakers, groups=groups)
    with pytest.raises(ValueError, match="different lengths"):
        verification_eer(embeddings, speakers, groups=groups[:-1])


def test_speaker_bootstrap_interval_brackets_the_eer_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    embeddings, speakers = planted(rng, n_speakers=30, per_speaker=6, noise=2.0)
    result = verification_eer(embeddings, speakers, n_pairs=400, n_resamples=200, seed=1)
    interval = result.interval
    assert isinstance(interval, Interval) and interval.resampled == "groups"
    assert interval.value == result.eer
    assert interval.low < result.eer < interval.high < 0.5
    again = verification_eer(embeddings, speakers, n_pairs=400, n_resamples=200, seed=1)
    assert again.interval == interval


def test_eer_interval_checks_speakers_against_targets() -> None:
    with pytest.raises(ValueError, match="disagrees with is_target"):
        eer_interval([0.9, 0.1], [True, False], [["a", "b"], ["a", "b"]], n_resamples=10)
    with pytest.raises(ValueError, match="shape"):
        eer_interval([0.9, 0.1], [True, False], ["a", "b"], n_resamples=10)
