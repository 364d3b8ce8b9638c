"""Speaker verification from utterance embeddings: trial pairs, cosine scores, equal error rate.

Public API
----------
- :func:`trial_pairs` - seeded same-speaker (target) and different-speaker (non-target) trials.
- :func:`cosine_scores` - cosine similarity of each trial's two embeddings.
- :func:`equal_error_rate` - the EER and its threshold, from scikit-learn's ROC curve.
- :func:`eer_interval` - a speaker-bootstrap interval of the EER.
- :func:`verification_eer` - all of the above in one call, overall and per group (e.g. per gender).
- :class:`Trials`, :class:`VerificationResult` - frozen results.

Why: a speaker encoder's own job is telling speakers apart, and an intervention (ablating neurons,
erasing a property) is only cheap if that job survives it. The EER before and after says so.

Why balanced trials: drawn uniformly from all possible pairs, target trials would come mostly from the
speakers with the most utterances and the EER would describe them. Here every speaker gives as many
target trials as it can up to an equal share, and non-target trials spread evenly over speaker pairs.
Why a speaker bootstrap: trials that share a speaker are not independent (one hard voice makes many
hard trials), so the interval resamples speakers, not trials.

The caller passes rows whose speakers were not used to train anything being evaluated (the probe, the
intervention): the EER of speakers seen in training says little. Plain arrays only, like the rest of
``probing``.
"""
from __future__ import annotations

import functools

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

import numpy as np
from sklearn.metrics import roc_curve

from speechprobe.probing.metrics import Interval, label_array

__all__ = [
    "Trials",
    "VerificationResult",
    "cosine_scores",
    "eer_interval",
    "equal_error_rate",
    "trial_pairs",
    "verification_eer",
]

# Pairs are scored in blocks of at most this many (pair x dimension) cells, which bounds memory.
_BLOCK_CELLS = 1 << 22


@dataclass(frozen=True)
class Trials:
    """Verification trials: ``pairs[k] = (i, j)`` row indices with ``i < j``; ``is_target[k]`` same speaker.

    Targets come first, then non-targets; the arrays are read-only.
    """

    pairs: np.ndarray
    is_target: np.ndarray

    @property
    def n_target(self) -> int:
        return int(self.is_target.sum())

    @property
    def n_nontarget(self) -> int:
        return int(self.is_target.shape[0] - self.is_target.sum())


@dataclass(frozen=True)
class VerificationResult:
    """Equal error rate of a set of trials and the threshold where it is reached (accept if score >= it).

    ``interval`` is a speaker-bootstrap interval of the EER when one was asked for; ``by_group`` holds
    the result of the trials within each group (keys are ``str`` of the group values) when groups
    were given, each from its own pairs drawn within the group.
    """

    eer: float
    threshold: float
    n_target: int
    n_nontarget: int
    interval: Optional[Interval] = None
    by_group: dict[str, "VerificationResult"] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# validation


def _codes(name: str, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels mapped to 0..K-1 (sorted, so deterministic): (classes, codes)."""
    try:
        classes, codes = np.unique(array, return_inverse=True)
    except TypeError as error:
        raise ValueError(f"{name} cannot be compared with each other (mixed types?): {error}") from None
    return classes, codes.reshape(-1)


def _count(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _rows(rows: Any, n: int) -> np.ndarray:
    """Sorted unique row indices from an index array or a boolean mask of length ``n``."""
    if rows is None:
        return np.arange(n)
    array = np.asarray(rows)
    if array.ndim != 1:
        raise ValueError(f"rows must be 1-D, got shape {array.shape}")
    if array.dtype.kind == "b":
        if array.shape[0] != n:
            raise ValueError(f"a boolean rows mask must have one entry per row ({array.shape[0]} vs {n})")
        return np.flatnonzero(array)
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"rows must be integer indices or a boolean mask, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= n):
        raise ValueError(f"rows must lie in [0, {n}), got values from {array.min()} to {array.max()}")
    unique = np.unique(array)
    if unique.shape[0] != array.shape[0]:
        raise ValueError("rows contains repeated indices")
    return unique


def _scores_targets(scores: Any, is_target: Any) -> tuple[np.ndarray, np.ndarray]:
    score = label_array("scores", scores)
    if score.dtype.kind not in "iuf":
        raise ValueError(f"scores must be numbers, got dtype {score.dtype}")
    target = label_array("is_target", is_target)
    if target.dtype.kind != "b":
        if target.dtype.kind not in "iuf" or not np.all((target == 0) | (target == 1)):
            raise ValueError("is_target must be booleans (or 0/1)")
        target = target.astype(bool)
    if target.shape[0] != score.shape[0]:
        raise ValueError(
            f"scores and is_target have different lengths ({score.shape[0]} vs {target.shape[0]})"
        )
    if target.all() or not target.any():
        raise ValueError("an EER needs both target and non-target trials")
    return score.astype(np.float64), target


# --------------------------------------------------------------------------------------------------
# trials


def _spread(total: int, capacity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` over units as evenly as their capacities allow (water filling).

    Every unit gets the same share unless it cannot hold it; what full units cannot take goes to the
    others; the last few left over go to randomly chosen units, so no unit is favoured by its position.
    """
    counts = np.zeros(capacity.shape[0], dtype=np.int64)
    left = total
    while left:
        open_units = np.flatnonzero(counts < capacity)
        share = left // open_units.shape[0]
        if share == 0:
            counts[rng.choice(open_units, size=left, replace=False)] += 1
            break
        add = np.minimum(share, capacity[open_units] - counts[open_units])
        counts[open_units] += add
        left -= int(add.sum())
    return counts


def _unrank_pairs(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pair (a, b), a < b, of each rank in the order (0,1), (0,2), (1,2), (0,3), ...

    rank = b(b-1)/2 + a, so a rank drawn without replacement is a pair drawn without replacement,
    without listing all pairs.
    """
    b = np.floor((1.0 + np.sqrt(1.0 + 8.0 * ranks.astype(np.float64))) / 2.0).astype(np.int64)
    b -= b * (b - 1) // 2 > ranks  # correct float rounding either way
    b += (b + 1) * b // 2 <= ranks
    return ranks - b * (b - 1) // 2, b


def trial_pairs(
    speakers: Any,
    rows: Any = None,
    *,
    n_target: int,
    n_nontarget: int,
    seed: int = 0,
) -> Trials:
    """Seeded same-speaker and different-speaker trials among ``rows`` (all rows when None).

    ``speakers`` holds one label per row of the embedding matrix; ``rows`` (indices or a boolean mask)
    says which rows may be drawn, and the pairs are indices into the full matrix. No row is paired with
    itself and no pair is drawn twice. Target trials are split as evenly as possible over speakers (a
    speaker with few utterances gives all it has, the others make up the rest); non-target trials are
    split evenly over pairs of distinct speakers, so every speaker takes part in about the same number.

    Every speaker among ``rows`` needs at least 2 utterances when target trials are asked for (drop the
    others from ``rows``), at least 2 speakers are needed for non-target trials, and asking for more
    trials than there are distinct pairs raises.
    """
    labels = label_array("speakers", speakers)
    n_target = _count("n_target", n_target)
    n_nontarget = _count("n_nontarget", n_nontarget)
    if n_target + n_nontarget == 0:
        raise ValueError("ask for at least one trial (n_target or n_nontarget > 0)")
    chosen = _rows(rows, labels.shape[0])
    if chosen.shape[0] == 0:
        raise ValueError("rows selects no row")
    classes, speaker = _codes("speakers", labels[chosen])
    order = np.argsort(speaker, kind="stable")  # rows of speaker s: members[start[s]:start[s + 1]]
    members = chosen[order]
    sizes = np.bincount(speaker, minlength=classes.shape[0]).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)])
    rng = np.random.default_rng(seed)

    target_parts: list[np.ndarray] = []
    if n_target:
        single = classes[sizes < 2]
        if single.size:
            shown = ", ".join(repr(s) for s in single[:5].tolist()) + (", ..." if single.size > 5 else "")
            raise ValueError(
                f"{single.size} speaker(s) have fewer than 2 utterances among rows ({shown}): no target "
                "trial can be drawn for them; drop them from rows"
            )
        capacity = sizes * (sizes - 1) // 2
        if n_target > capacity.sum():
            raise ValueError(
                f"n_target={n_target} but only {int(capacity.sum())} distinct same-speaker pairs exist"
            )
        for s, k in enumerate(_spread(n_target, capacity, rng)):
            if k:
                a, b = _unrank_pairs(rng.choice(capacity[s], size=k, replace=False))
                target_parts.append(np.stack([members[start[s] + a], members[start[s] + b]], axis=1))

    nontarget_parts: list[np.ndarray] = []
    if n_nontarget:
        n_speakers = classes.shape[0]
        if n_speakers < 2:
            raise ValueError(f"non-target trials need at least 2 speakers among rows, got {n_speakers}")
        n_speaker_pairs = n_speakers * (n_speakers - 1) // 2
        total = (sizes.sum() ** 2 - (sizes**2).sum()) // 2
        if n_nontarget > total:
            raise ValueError(
                f"n_nontarget={n_nontarget} but only {int(total)} distinct different-speaker pairs exist"
            )
        if n_nontarget <= n_speaker_pairs:
            # one trial each from n_nontarget distinct speaker pairs, so no pair can repeat
            first, second = _unrank_pairs(rng.choice(n_speaker_pairs, size=n_nontarget, replace=False))
            a = start[first] + rng.integers(0, sizes[first])
            b = start[second] + rng.integers(0, sizes[second])
            nontarget_parts.append(np.stack([members[a], members[b]], axis=1))
        else:
            first, second = _unrank_pairs(np.arange(n_speaker_pairs))
            for s, t, k in zip(first, second, _spread(n_nontarget, sizes[first] * sizes[second], rng)):
                if k:
                    cell = rng.choice(sizes[s] * sizes[t], size=k, replace=False)
                    a, b = start[s] + cell // sizes[t], start[t] + cell % sizes[t]
                    nontarget_parts.append(np.stack([members[a], members[b]], axis=1))

    empty = np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate([empty, *target_parts, *nontarget_parts]).astype(np.int64)
    pairs.sort(axis=1)
    is_target = np.repeat([True, False], [n_target, n_nontarget])
    pairs.flags.writeable = False
    is_target.flags.writeable = False
    return Trials(pairs=pairs, is_target=is_target)


# --------------------------------------------------------------------------------------------------
# scores and EER


def cosine_scores(embeddings: Any, pairs: Any) -> np.ndarray:
    """Cosine similarity of the two rows of each pair, in [-1, 1].

    Rows are L2-normalised once, then scored a block of pairs at a time. A zero row (e.g. an utterance
    whose every neuron was ablated to 0) has no direction: its pairs score 0, "no evidence either way",
    rather than NaN, so an intervention that zeroes embeddings shows up as a worse EER, not a crash.
    """
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows x dimensions), got shape {matrix.shape}")
    if matrix.dtype.kind not in "iuf":
        raise ValueError(f"embeddings must be numbers, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError("embeddings contains NaN or Inf")
    index = np.asarray(pairs.pairs if isinstance(pairs, Trials) else pairs)
    if index.ndim != 2 or index.shape[1] != 2:
        raise ValueError(f"pairs must have shape (n_pairs, 2), got {index.shape}")
    if index.size and index.dtype.kind not in "iu":
        raise ValueError(f"pairs must be integer row indices, got dtype {index.dtype}")
    index = index.astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= matrix.shape[0]):
        raise ValueError(
            f"pairs must index rows in [0, {matrix.shape[0]}), got {index.min()} to {index.max()}"
        )

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    scores = np.empty(index.shape[0])
    block = max(1, _BLOCK_CELLS // max(1, matrix.shape[1]))
    for first in range(0, index.shape[0], block):
        part = index[first : first + block]
        scores[first : first + block] = np.einsum("ij,ij->i", unit[part[:, 0]], unit[part[:, 1]])
    return np.clip(scores, -1.0, 1.0)


def _eer(score: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None) -> tuple[float, float]:
    """(EER, threshold) where the ROC crosses false accept = false reject, interpolated linearly.

    ``roc_curve`` gives the corners of the ROC (one per distinct score, ``drop_intermediate=False`` so
    the threshold is interpolated between neighbouring scores). The difference FAR - FRR rises along
    the curve from -1 to 1; the EER lies on the segment where it changes sign, at the point where it
    is 0. Tied scores make a diagonal segment, interpolated the same way.
    """
    far, tpr, thresholds = roc_curve(target, score, sample_weight=weight, drop_intermediate=False)
    frr = 1.0 - tpr
    gap = far - frr
    gap[np.abs(gap) < 1e-12] = 0.0  # 1/3 - (1 - 2/3) is not exactly 0 in floating point
    k = int(np.argmax(gap >= 0))  # gap[-1] = 1, so a crossing exists
    if gap[k] == 0 or k == 0:
        return float((far[k] + frr[k]) / 2.0), float(thresholds[k])
    t = gap[k - 1] / (gap[k - 1] - gap[k])
    eer = far[k - 1] + t * (far[k] - far[k - 1])
    high = thresholds[k - 1]
    threshold = thresholds[k] if not np.isfinite(high) else high + t * (thresholds[k] - high)
    return float(eer), float(threshold)


def equal_error_rate(scores: Any, is_target: Any) -> VerificationResult:
    """Equal error rate of verification scores: where false accepts and false rejects are equally frequent.

    Higher scores mean "same speaker"; a trial is accepted when its score is >= ``threshold``. The ROC
    comes from scikit-learn's ``roc_curve``; between its two points around the crossing the EER is
    interpolated linearly (the usual convention; it is exact when a point lies on the crossing).
    Perfectly separated scores give 0, scores unrelated to the speaker about 0.5.
    """
    score, target = _scores_targets(scores, is_target)
    eer, threshold = _eer(score, target)
    return VerificationResult(
        eer=eer, threshold=threshold, n_target=int(target.sum()), n_nontarget=int((~target).sum())
    )


def eer_interval(
    scores: Any,
    is_target: Any,
    pair_speakers: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of the EER from a bootstrap over speakers.

    ``pair_speakers`` is (n_trials, 2): the speaker of each side of each trial. Each resample draws the
    speakers with replacement; a speaker drawn c times counts as c distinct speakers, so a target trial
    of that speaker weighs c and a non-target trial between speakers drawn c and d times weighs c * d.
    A resample that leaves no target or no non-target trial is drawn again (at most 10 * n_resamples
    draws in all; too few speakers for that raises).
    """
    score, target = _scores_targets(scores, is_target)
    who = np.asarray(pair_speakers)
    if who.ndim != 2 or who.shape[1] != 2 or who.shape[0] != score.shape[0]:
        raise ValueError(f"pair_speakers must have shape ({score.shape[0]}, 2), got {who.shape}")
    label_array("pair_speakers", who.ravel())
    _, codes = _codes("pair_speakers", who.ravel())
    codes = codes.reshape(-1, 2)
    if np.any(target & (codes[:, 0] != codes[:, 1])) or np.any(~target & (codes[:, 0] == codes[:, 1])):
        raise ValueError(
            "pair_speakers disagrees with is_target (target trials need one speaker, others two)"
        )
    n_speakers = int(codes.max()) + 1
    if n_speakers < 2:
        raise ValueError("a speaker bootstrap needs at least 2 speakers")
    integer = isinstance(n_resamples, (int, np.integer)) and not isinstance(n_resamples, (bool, np.bool_))
    if not integer or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not isinstance(confidence, (int, float, np.floating)) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")

    value, _ = _eer(score, target)
    rng = np.random.default_rng(seed)
    stats: list[float] = []
    for _ in range(10 * int(n_resamples)):
        drawn = np.bincount(rng.integers(0, n_speakers, n_speakers), minlength=n_speakers).astype(np.float64)
        weight = np.where(target, drawn[codes[:, 0]], drawn[codes[:, 0]] * drawn[codes[:, 1]])
        if weight[target].sum() == 0 or weight[~target].sum() == 0:
            continue
        keep = weight > 0
        stats.append(_eer(score[keep], target[keep], weight[keep])[0])
        if len(stats) == n_resamples:
            break
    else:
        raise ValueError(
            "too few speakers for a speaker bootstrap: most resamples lack target or non-target trials"
        )
    tail = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return Interval(
        value=float(value),
        low=float(low),
        high=float(high),
        confidence=float(confidence),
        n_resamples=int(n_resamples),
        resampled="groups",
    )


# --------------------------------------------------------------------------------------------------
# convenience


def _available(speaker: np.ndarray) -> tuple[int, int]:
    """Distinct (same-speaker, different-speaker) pairs among rows with these speaker codes."""
    sizes = np.bincount(speaker).astype(np.int64)
    same = int((sizes * (sizes - 1) // 2).sum())
    return same, int((sizes.sum() ** 2 - (sizes**2).sum()) // 2)


def _score_rows(
    matrix: np.ndarray, labels: np.ndarray, chosen: np.ndarray, n_pairs: int, seed: int, **bootstrap: Any
) -> VerificationResult:
    """EER of up to ``n_pairs`` target and as many non-target trials among ``chosen``, with an interval
    when ``bootstrap["n_resamples"]`` is positive."""
    _, speaker = _codes("speakers", labels[chosen])
    n = min(n_pairs, *_available(speaker))
    if n == 0:
        raise ValueError(
            "rows hold no target or no non-target pair (need a speaker with 2 utterances and 2 speakers)"
        )
    trials = trial_pairs(labels, chosen, n_target=n, n_nontarget=n, seed=seed)
    scores = cosine_scores(matrix, trials)
    result = equal_error_rate(scores, trials.is_target)
    if not bootstrap["n_resamples"]:
        return result
    interval = eer_interval(scores, trials.is_target, labels[trials.pairs], seed=seed, **bootstrap)
    return replace(result, interval=interval)


def verification_eer(
    embeddings: Any,
    speakers: Any,
    rows: Any = None,
    *,
    n_pairs: int = 5000,
    seed: int = 0,
    groups: Any = None,
    n_resamples: int = 0,
    confidence: float = 0.95,
) -> VerificationResult:
    """Speaker-verification EER of utterance embeddings: trials drawn among ``rows``, cosine-scored.

    ``n_pairs`` target and as many non-target trials, fewer when the rows do not hold that many
    distinct pairs of either kind (the result's counts say how many). ``n_resamples > 0`` adds a
    speaker-bootstrap interval. With ``groups`` (one value per row, e.g. gender), ``by_group`` also
    holds the EER of trials drawn within each group, as a bias audit compares them; a group whose rows
    hold no target or no non-target pair raises. The same seed gives the same trials.
    """
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows x dimensions), got shape {matrix.shape}")
    labels = label_array("speakers", speakers)
    if labels.shape[0] != matrix.shape[0]:
        raise ValueError(
            f"speakers and embeddings have different lengths ({labels.shape[0]} vs {matrix.shape[0]})"
        )
    n_pairs = _count("n_pairs", n_pairs)
    if n_pairs == 0:
        raise ValueError("n_pairs must be positive")
    n_resamples = _count("n_resamples", n_resamples)
    chosen = _rows(rows, labels.shape[0])
    if chosen.shape[0] == 0:
        raise ValueError("rows selects no row")

    bootstrap = dict(n_resamples=n_resamples, confidence=confidence)
    score = functools.partial(_score_rows, matrix, labels, n_pairs=n_pairs, seed=seed, **bootstrap)
    result = score(chosen)
    if groups is None:
        return result
    group_labels = label_array("groups", groups)
    if group_labels.shape[0] != labels.shape[0]:
        raise ValueError(
            f"groups and speakers have different lengths ({group_labels.shape[0]} vs {labels.shape[0]})"
        )
    classes, code = _codes("groups", group_labels[chosen])
    by_group: dict[str, VerificationResult] = {}
    for g, value in enumerate(classes):
        try:
            by_group[str(value)] = score(chosen[code == g])
        except ValueError as error:
            raise ValueError(f"group {str(value)!r}: {error}") from None
    return replace(result, by_group=by_group)
