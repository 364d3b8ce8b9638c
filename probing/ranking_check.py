"""Is a neuron ranking better than random neurons? Its top k kept alone, against k random neurons.

The design's first scientific rule: a neuron ranking is a finding only when its top k neurons, kept alone
and retrained, carry the property clearly better than k random neurons of the same layer. This module
gives every ranking that check, in its own output.

Public API
----------
- :func:`check_ranking` - for every k of a grid: validation and test accuracy of probes retrained on only
  the top-k (``ranking[:k]``), only the bottom-k (``ranking[-k:]``) and only k random neurons (one draw
  per seed), and a verdict per k: ``"better"``, ``"same"`` or ``"worse"`` than random.
- :class:`RankingCheck` - its result (frozen; ``beats_random``, ``summary``, ``as_dict``).
- :func:`minimal_versus_random` - the minimal subset of a ranking (:func:`probing.subset.minimal_subset`)
  beside the minimal subsets of random rankings, at the same accuracy threshold: a minimal subset is a
  finding only when it is well below (``WELL_BELOW`` x) the random rankings' k.
- :class:`SubsetVersusRandom` - its result.

The verdict at k compares the top-k probe's *test* accuracy with the random-k probes' mean: "better"
when ``top - mean`` exceeds ``max(margin, 2 * se)``, "worse" when it is below minus that, else "same".
``se`` is the standard error of the difference: the random draws' spread over sqrt(n_seeds) (how well
5 draws pin down random's mean: one draw that happens to hold an informative neuron moves it) and the
binomial standard error of the top probe's accuracy on ``n_test`` examples (a test split of 130
utterances cannot tell 0.96 from 0.97). The draws' own spread is not the yardstick: the question is
whether the ranking beats random neurons *on average*, not every conceivable draw.
:meth:`RankingCheck.beats_random` asks that, at the small k (<= 10), the ranking is better at some k and
worse at none: a property that 10 random neurons already carry at the ceiling leaves nothing to beat
there, but a ranking that is never better at 1, 2, 3, 5 or 10 neurons ranks nothing.

Cost: :func:`check_ranking` is one batched :func:`probing.probe.fit_probes` call for all
n_k x (2 + n_seeds) probes (as :func:`probing.ablation.ablation_curve`); :func:`minimal_versus_random`
is 1 + n_seeds minimal-subset searches, one batched fit each.

The random set for seed s is a prefix of ``numpy.random.default_rng(s).permutation(D)``, so random
sets are nested over k and the same as :func:`probing.ablation.ablation_curve`'s.

Works on plain arrays only (never imports ``encoders`` or ``tasks``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from speechprobe.probing.ablation import _seeds
from speechprobe.probing.checks import feature_matrix, label_vector
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import fit_probes
from speechprobe.probing.subset import MinimalSubset, _ranking, minimal_subset

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_SEEDS",
    "SMALL_K",
    "VERDICTS",
    "WELL_BELOW",
    "RankingCheck",
    "SubsetVersusRandom",
    "check_ranking",
    "minimal_versus_random",
]

DEFAULT_KS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500)  # those <= D are used; D itself is not added
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
SMALL_K = 10  # "small k": a ranking must beat random at every k up to this (RankingCheck.beats_random)
WELL_BELOW = 0.5  # a minimal subset is a finding only when k <= WELL_BELOW x random rankings' median k
VERDICTS = ("better", "same", "worse")


def _frozen(array: Any, dtype: Any = np.float64) -> np.ndarray:
    out = np.array(array, dtype=dtype)
    out.setflags(write=False)
    return out


def _neurons(k: int) -> str:
    return f"{k} neuron" if k == 1 else f"{k} neurons"


# --------------------------------------------------------------------------------------------------
# ranking against random, k by k


@dataclass(frozen=True)
class RankingCheck:
    """Result of :func:`check_ranking` (arrays are read-only).

    ``ks``: the k grid used (ascending, each <= ``n_features``); ``seeds``: the random draws' seeds.
    Accuracies of probes retrained on only those neurons, on validation (early stopping) and test:
    ``top_val`` / ``top_test`` (n_k,) for ``ranking[:k]``; ``bottom_val`` / ``bottom_test`` (n_k,) for
    ``ranking[-k:]``; ``random_val`` / ``random_test`` (n_seeds, n_k) for the first k of seed s's
    permutation, with ``random_*_mean`` and ``random_*_std`` (population std over seeds).
    ``verdicts``: per k, "better" / "same" / "worse" (top test accuracy against random's, see the module
    docstring), with ``margin`` the smallest difference that counts; ``n_test``: test examples.
    """

    ks: np.ndarray
    seeds: np.ndarray
    n_features: int
    margin: float
    top_val: np.ndarray
    top_test: np.ndarray
    bottom_val: np.ndarray
    bottom_test: np.ndarray
    random_val: np.ndarray
    random_test: np.ndarray
    random_val_mean: np.ndarray
    random_val_std: np.ndarray
    random_test_mean: np.ndarray
    random_test_std: np.ndarray
    verdicts: tuple[str, ...]
    n_test: int = 0

    def as_dict(self) -> dict:
        """Plain Python values (lists, floats, ints, strings), ready for ``json.dumps``; with
        ``beats_random`` (at k <= SMALL_K; None when the grid has no such k) and ``summary``."""
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        out["verdicts"] = list(self.verdicts)
        out["beats_random"] = self.beats_random() if self._small(SMALL_K).size else None
        out["summary"] = self.summary()
        return out

    def _small(self, max_k: int) -> np.ndarray:
        return np.flatnonzero(self.ks <= max_k)

    def _index(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"k must be an integer of the grid {self.ks.tolist()}, got {k!r}")
        hits = np.flatnonzero(self.ks == int(k))
        if hits.size == 0:
            raise ValueError(f"k={k} is not in the grid {self.ks.tolist()}")
        return int(hits[0])

    def beats_random(self, max_k: int = SMALL_K) -> bool:
        """True when, among the grid's k up to ``max_k``, the verdict is "better" at one or more and
        "worse" at none (see the module docstring).

        Raises ValueError when the grid has no k <= max_k (nothing was checked, so nothing is claimed).
        """
        if isinstance(max_k, bool) or not isinstance(max_k, (int, np.integer)) or max_k < 1:
            raise ValueError(f"max_k must be a positive integer, got {max_k!r}")
        small = self._small(int(max_k))
        if small.size == 0:
            raise ValueError(f"max_k={max_k}: the grid {self.ks.tolist()} has no k <= {max_k}; nothing to check")
        verdicts = [self.verdicts[i] for i in small]
        return "better" in verdicts and "worse" not in verdicts

    def _sentence(self, i: int) -> str:
        k, verdict = int(self.ks[i]), self.verdicts[i]
        verb = "reaches" if k == 1 else "reach"
        phrase = {"better": "better than random", "same": "no better than random", "worse": "worse than random"}[verdict]
        draws = len(self.seeds)
        return (
            f"the top {_neurons(k)} kept alone {verb} {self.top_test[i]:.2f} test accuracy against "
            f"{self.random_test_mean[i]:.2f} ± {self.random_test_std[i]:.2f} for {k} random "
            f"neuron{'' if k == 1 else 's'} ({draws} draw{'' if draws == 1 else 's'}): {phrase}"
        )

    def summary(self, k: Optional[int] = None) -> str:
        """One English sentence.

        With ``k`` (a k of the grid): the top-k against random-k at that k. Without: when the ranking
        beats random at the small k (:meth:`beats_random`), the sentence for the small k with the largest
        gap and the ks where it is better; when it does not, a sentence that says so plainly, about the
        first small k where it is worse (or, if none, the smallest); when the grid has no small k, the
        sentence for its smallest k, saying that small k were not checked.
        """
        if k is not None:
            return self._sentence(self._index(k))
        small = self._small(SMALL_K)
        if small.size == 0:
            return f"{self._sentence(0)} (no k <= {SMALL_K} was checked)"
        if not self.beats_random():
            worse = [i for i in small if self.verdicts[i] == "worse"]
            return (f"the ranking does not beat random neurons at k <= {SMALL_K}: "
                    f"{self._sentence(worse[0] if worse else int(small[0]))}")
        gap = self.top_test[small] - self.random_test_mean[small]
        best = int(small[int(np.argmax(gap))])
        better = [str(int(self.ks[i])) for i in small if self.verdicts[i] == "better"]
        where = "every k" if len(better) == small.size else f"k = {', '.join(better)} of the k"
        return f"{self._sentence(best)}; better than random at {where} <= {SMALL_K} checked, worse at none"


def _ks(ks: Any, d: int) -> np.ndarray:
    array = np.asarray(ks)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"ks must be a non-empty 1-D collection of positive integers, got {ks!r}")
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(f"ks must hold positive integers (subset sizes k), got dtype {array.dtype}")
    if np.any(array < 1):
        raise ValueError(f"ks must hold positive integers (subset sizes k), got {array[array < 1][:5].tolist()}")
    kept = np.unique(array[array <= d]).astype(np.int64)
    if kept.size == 0:
        raise ValueError(f"ks has no k <= {d} (the number of neurons): {np.unique(array)[:5].tolist()}...")
    return kept


def _margin(margin: Any) -> float:
    if isinstance(margin, bool):
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    try:
        number = float(margin)
    except (TypeError, ValueError):
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}") from None
    if not (0.0 <= number < 1.0):
        raise ValueError(f"margin must lie in [0, 1), got {margin!r}")
    return number


def _split(name_X: str, X: Any, name_y: str, y: Any, d: int) -> tuple[np.ndarray, np.ndarray]:
    X = feature_matrix(name_X, X)
    if X.shape[1] != d:
        raise ValueError(f"{name_X} has {X.shape[1]} features but X_train has {d}")
    return X, label_vector(name_y, y, X.shape[0], name_X)


def _verdicts(top: np.ndarray, mean: np.ndarray, std: np.ndarray, n_seeds: int, n_test: int,
              margin: float) -> tuple[str, ...]:
    se = np.sqrt(std ** 2 / n_seeds + top * (1.0 - top) / n_test)
    band = np.maximum(2.0 * se, margin)
    return tuple(
        "better" if t > m + b else "worse" if t < m - b else "same" for t, m, b in zip(top, mean, band)
    )


def check_ranking(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    X_test: Any,
    y_test: Any,
    ranking: Any,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    random_seeds: Sequence[int] = DEFAULT_SEEDS,
    l1: float = 0.0,
    l2: float = 0.0,
    options: Union[TrainingOptions, Mapping[str, Any], None] = None,
    margin: float = 0.02,
) -> RankingCheck:
    """Check a neuron ranking against random neurons: its top k kept alone, retrained, against k random.

    Parameters
    ----------
    X_train, y_train
        Training features (N, D) and labels; every probe is retrained on them.
    X_val, y_val
        Validation split: early stopping of every probe (never pass a test split here).
    X_test, y_test
        Test split: the accuracies the verdicts compare.
    ranking
        Every neuron index once, most salient first (e.g. :func:`probing.ranking.rank_neurons`).
    ks
        Subset sizes to check; those above D are dropped (a default grid serves layers of any width),
        duplicates merged, sorted. D itself is not added.
    random_seeds
        One random draw per seed: the first k of ``default_rng(seed).permutation(D)``.
    l1, l2
        The penalty of every probe (e.g. the ranked probe's: ``probe.l1``, ``probe.l2``).
    options
        How every probe is trained (:class:`~probing.options.TrainingOptions`, or a mapping of some of its
        fields; e.g. ``TrainingOptions.from_probe(probe)``); default its defaults.
    margin
        Smallest accuracy difference from random's mean that counts, in [0, 1) (see the module docstring).

    All n_k x (2 + n_seeds) probes are trained in one batched :func:`~probing.probe.fit_probes` call.
    """
    X_train = feature_matrix("X_train", X_train)
    n, d = X_train.shape
    y_train = label_vector("y_train", y_train, n, "X_train")
    X_val, y_val = _split("X_val", X_val, "y_val", y_val, d)
    X_test, y_test = _split("X_test", X_test, "y_test", y_test, d)
    order = _ranking(ranking, d)
    grid = _ks(ks, d)
    seeds = _seeds(random_seeds)
    margin = _margin(margin)
    setting, options = (l1, l2), TrainingOptions.coerce(options)

    n_k, n_s = len(grid), len(seeds)
    permutations = [np.random.default_rng(int(s)).permutation(d) for s in seeds]
    subsets = [order[:k] for k in grid] + [order[d - k:] for k in grid]
    subsets += [perm[:k] for perm in permutations for k in grid]
    masks = np.zeros((len(subsets), d))
    for row, subset in enumerate(subsets):
        masks[row, subset] = 1.0
    probes = fit_probes(X_train, y_train, X_val, y_val, [setting] * len(subsets), masks, options=options)
    val = np.array([p.score(X_val, y_val) for p in probes], dtype=np.float64)
    test = np.array([p.score(X_test, y_test) for p in probes], dtype=np.float64)

    random_val = val[2 * n_k:].reshape(n_s, n_k)
    random_test = test[2 * n_k:].reshape(n_s, n_k)
    random_test_mean, random_test_std = random_test.mean(axis=0), random_test.std(axis=0)
    return RankingCheck(
        ks=_frozen(grid, np.int64),
        seeds=_frozen(seeds, np.int64),
        n_features=int(d),
        margin=margin,
        top_val=_frozen(val[:n_k]),
        top_test=_frozen(test[:n_k]),
        bottom_val=_frozen(val[n_k:2 * n_k]),
        bottom_test=_frozen(test[n_k:2 * n_k]),
        random_val=_frozen(random_val),
        random_test=_frozen(random_test),
        random_val_mean=_frozen(random_val.mean(axis=0)),
        random_val_std=_frozen(random_val.std(axis=0)),
        random_test_mean=_frozen(random_test_mean),
        random_test_std=_frozen(random_test_std),
        verdicts=_verdicts(test[:n_k], random_test_mean, random_test_std, n_s, len(y_test), margin),
        n_test=int(len(y_test)),
    )


# --------------------------------------------------------------------------------------------------
# minimal subset against random rankings' minimal subsets


@dataclass(frozen=True)
class SubsetVersusRandom:
    """Result of :func:`minimal_versus_random`.

    ``subset``: the ranking's :class:`~probing.subset.MinimalSubset`; ``seeds`` and ``random_k``: the
    minimal k of each seed's random ranking at the *same* threshold (``subset.threshold``; D when a
    random ranking reaches it only with every neuron); ``random_k_median``; ``ratio`` = subset.k /
    random_k_median; ``is_minimal``: ``subset.k <= WELL_BELOW * random_k_median`` (the only case in which
    the subset is called minimal); ``target``: the fraction of the full accuracy that was kept.
    """

    subset: MinimalSubset
    seeds: np.ndarray
    random_k: np.ndarray
    random_k_median: float
    ratio: float
    is_minimal: bool
    target: float

    @property
    def k(self) -> int:
        return self.subset.k

    def as_dict(self) -> dict:
        """Plain Python values, ready for ``json.dumps`` (the subset as a nested dict), with ``summary``."""
        subset = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self.subset).items()}
        return dict(
            subset=subset,
            k=int(self.subset.k),
            seeds=self.seeds.tolist(),
            random_k=self.random_k.tolist(),
            random_k_median=float(self.random_k_median),
            ratio=float(self.ratio),
            is_minimal=bool(self.is_minimal),
            well_below=WELL_BELOW,
            target=float(self.target),
            summary=self.summary(),
        )

    def summary(self) -> str:
        """One English sentence: the subset's k, random rankings' k, and whether it is a finding."""
        k, draws = self.subset.k, len(self.seeds)
        median = self.random_k_median
        median_text = f"{median:g}" if median != int(median) else f"{int(median)}"
        if self.is_minimal:
            verdict = "a minimal subset"
        elif self.ratio <= 1.0:
            verdict = "not a finding, random neurons do about as well"
        else:
            verdict = "not a finding, random neurons do better"
        keep = "keeps" if k == 1 else "keep"
        return (
            f"{_neurons(k)} ({100.0 * self.subset.fraction:.1f}%) {keep} {100.0 * self.target:g}% of the accuracy; "
            f"random neurons need {median_text} (median of {draws} draw{'' if draws == 1 else 's'}): {verdict}"
        )


def minimal_versus_random(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    ranking: Any,
    *,
    target: float = 0.97,
    random_seeds: Sequence[int] = (0, 1, 2),
    l1: float = 0.0,
    l2: float = 0.0,
    options: Union[TrainingOptions, Mapping[str, Any], None] = None,
) -> SubsetVersusRandom:
    """The minimal subset of ``ranking`` beside those of random rankings, at the same threshold.

    :func:`probing.subset.minimal_subset` on ``ranking`` (validation data only), then on each seed's
    random ranking ``default_rng(seed).permutation(D)`` with ``full_accuracy`` = the ranking's full
    accuracy, so every search uses the identical threshold ``target`` x full accuracy. The subset is
    called minimal only when its k is at most ``WELL_BELOW`` x the median of the random rankings' k.
    Every probe has penalty (``l1``, ``l2``) and is trained with ``options``, as in ``minimal_subset``.
    """
    X_train = feature_matrix("X_train", X_train)
    d = X_train.shape[1]
    order = _ranking(ranking, d)
    seeds = _seeds(random_seeds)
    options = TrainingOptions.coerce(options)  # fails on bad options before any training
    subset = minimal_subset(X_train, y_train, X_val, y_val, order, target=target, l1=l1, l2=l2, options=options)
    random_k = np.array(
        [
            minimal_subset(
                X_train, y_train, X_val, y_val, np.random.default_rng(int(s)).permutation(d),
                target=target, full_accuracy=subset.full_accuracy, l1=l1, l2=l2, options=options,
            ).k
            for s in seeds
        ],
        dtype=np.int64,
    )
    median = float(np.median(random_k))
    return SubsetVersusRandom(
        subset=subset,
        seeds=_frozen(seeds, np.int64),
        random_k=_frozen(random_k, np.int64),
        random_k_median=median,
        ratio=subset.k / median,
        is_minimal=bool(subset.k <= WELL_BELOW * median),
        target=float(target),
    )
