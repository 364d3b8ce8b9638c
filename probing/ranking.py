"""Neuron rankings from linear probes, and the overlap of salient neuron sets.

Everything here works on plain arrays and on any fitted linear model that exposes scikit-learn's
``coef_`` (n_classes x n_features; binary problems may have a single row, as scikit-learn's do) and,
where class names matter, ``classes_``.  The weights must be in *standardised* feature units (the
probe was fitted on z-scored features, as :class:`ElasticNetProbe` does): only then is a weight's
magnitude a statement about the neuron rather than about its scale or offset, and only then are
weights comparable between neurons and between layers.

Public API
----------
- :func:`rank_neurons` - every neuron index, most salient first (``"path"``, the default: the order in
  which neurons enter along the elastic-net regularisation path, see :mod:`probing.path`; ``"weight"``,
  ``"neurox"``, ``"probeless"``).
- :func:`neurox_ordering` - NeuroX's ``get_neuron_ordering`` (ordering and cutoffs), vectorised.
- :func:`rank_per_class` - each class's own ordering.
- :func:`rank_across_layers` - one ranking over all layers' neurons, and where the top-k live.
- :func:`jaccard`, :func:`chance_jaccard`, :func:`overlap` - overlap of salient sets, always beside
  what chance gives for sets of those sizes.

Ties are always broken deterministically, lower neuron index first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
from scipy.stats import hypergeom

from speechprobe.probing.choices import DATA_RANKINGS, DEFAULT_RANKING, RANKING_METHODS

__all__ = [
    "DATA_METHODS",
    "DEFAULT_METHOD",
    "METHODS",
    "Overlap",
    "chance_jaccard",
    "jaccard",
    "neurox_ordering",
    "overlap",
    "rank_across_layers",
    "rank_neurons",
    "rank_per_class",
]

METHODS, DEFAULT_METHOD = RANKING_METHODS, DEFAULT_RANKING
# Methods that rank from the features and labels (the probe is used for a shape check only).
DATA_METHODS = DATA_RANKINGS


# ----------------------------------------------------------------------------------------------
# input handling


def _coef(probe: Any, what: str = "probe") -> np.ndarray:
    """The (n_rows, n_features) float64 weight matrix of a fitted probe (or of a bare array)."""
    coef = getattr(probe, "coef_", probe)
    if coef is None:
        raise ValueError(f"{what} has no coef_: fit it first")
    try:
        coef = np.asarray(coef, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: coef_ is not a numeric array ({exc})") from None
    if coef.ndim == 1:
        coef = coef[None, :]
    if coef.ndim != 2 or coef.shape[0] == 0 or coef.shape[1] == 0:
        raise ValueError(f"{what}: coef_ must be a non-empty (n_classes, n_features) array, got shape {coef.shape}")
    if not np.all(np.isfinite(coef)):
        raise ValueError(f"{what}: coef_ contains NaN or Inf")
    return coef


def _classes(probe: Any, coef: np.ndarray) -> list:
    classes = getattr(probe, "classes_", None)
    n_rows = coef.shape[0]
    if classes is None:
        return list(range(n_rows)) if n_rows > 1 else [0, 1]
    classes = list(np.asarray(classes).tolist())
    if not (len(classes) == n_rows or (n_rows == 1 and len(classes) == 2)):
        raise ValueError(f"probe has {len(classes)} classes_ but coef_ has {n_rows} rows")
    return classes


def _order(score: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties lower index first."""
    return np.argsort(-score, kind="stable").astype(np.intp)


def _standardise(X: np.ndarray) -> np.ndarray:
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0  # constant neurons carry nothing; they stay at 0 after centring
    return (X - mean) / std


# ----------------------------------------------------------------------------------------------
# scores


def _weight_score(coef: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(coef * coef, axis=0))


def _neurox_entry(coef: np.ndarray, search_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """For every neuron: the first sweep step s (0..search_stride) at which NeuroX's
    ``get_top_neurons(probe, s / search_stride)`` selects it (``search_stride + 1`` if never), and
    the exact mass fraction at which it enters (the limit of an infinitely fine sweep).

    NeuroX, per class c and percentage p: sort |w_c| descending, ``cum = cumsum``, take the neurons up
    to and including the first position j with ``cum[j] >= total_mass * p`` (all neurons if there is
    none).  So the neuron at sorted position r is taken at p iff r == 0 or ``cum[r-1] < total * p``:
    its entry step is the first s whose threshold exceeds ``cum[r-1]``, a ``searchsorted`` over the
    (non-decreasing) thresholds, computed with NeuroX's own floating-point expressions.  The
    "none reaches the threshold" fallback needs no special case: then ``cum[r-1] <= cum[-1] <
    threshold`` for every r.  A neuron's global entry (step and fraction) is its minimum over classes.
    """
    weights = np.abs(coef)
    n_rows, n_features = weights.shape
    percentages = np.arange(search_stride + 1) / search_stride  # p / search_stride, as NeuroX
    entry = np.full(n_features, search_stride + 1, dtype=np.int64)
    fraction = np.full(n_features, np.inf)
    for c in range(n_rows):
        row = weights[c]
        total_mass = np.sum(row)
        thresholds = total_mass * percentages
        sort_idx = np.argsort(-row, kind="stable")
        cum = np.cumsum(row[sort_idx])
        before = np.concatenate([[0.0], cum[:-1]])  # mass ahead of each sorted position
        steps = np.searchsorted(thresholds, before, side="right")
        steps[0] = 0
        class_entry = np.empty(n_features, dtype=np.int64)
        class_entry[sort_idx] = steps
        np.minimum(entry, class_entry, out=entry)
        class_fraction = np.empty(n_features)
        class_fraction[sort_idx] = before / total_mass if total_mass > 0 else np.where(np.arange(n_features) == 0, 0.0, 1.0)
        np.minimum(fraction, class_fraction, out=fraction)
    return entry, fraction


def _neurox_order(coef: np.ndarray, search_stride: int) -> tuple[np.ndarray, np.ndarray]:
    entry, fraction = _neurox_entry(coef, search_stride)
    # Within a step (NeuroX: arbitrary set order) by the exact entry fraction, then weight norm, then
    # index: content before position, so the ordering is permutation-equivariant up to exact ties.
    # Neurons NeuroX never selects get entry search_stride + 1 and come last, in the same way.
    idx = np.arange(coef.shape[1])
    order = np.lexsort((idx, -_weight_score(coef), fraction, entry)).astype(np.intp)
    cutoffs = np.searchsorted(np.sort(entry), np.arange(search_stride + 1), side="right")
    return order, cutoffs


def _data(method: str, X: Any, y: Any, n_features: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Checked features (float64) and labels for the methods that rank from data."""
    if X is None or y is None:
        raise ValueError(f'method "{method}" needs the features and labels: rank_neurons(probe, "{method}", X=X, y=y)')
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X is not a numeric array ({exc})") from None
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be 1-D with one label per row of X: X has {len(X)} rows, y has shape {y.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features but the probe has {n_features}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or Inf")
    if y.dtype.kind == "f" and np.any(np.isnan(y)):
        raise ValueError("y contains NaN")
    if np.unique(y).shape[0] < 2:
        raise ValueError(f"{method} ranking needs at least 2 classes in y, got {np.unique(y).shape[0]}")
    return X, y


def _probeless_score(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    classes, codes = np.unique(y, return_inverse=True)
    Z = _standardise(X)
    counts = np.bincount(codes, minlength=len(classes)).astype(np.float64)
    sums = np.zeros((len(classes), Z.shape[1]))
    np.add.at(sums, codes, Z)
    means = np.sort(sums / counts[:, None], axis=0)  # (K, D), each column ascending
    # sum_{a<b} |m_a - m_b| = sum_k (2k - K + 1) m_(k) over the sorted means m_(0) <= ... <= m_(K-1)
    k = len(classes)
    coeffs = 2.0 * np.arange(k) - k + 1.0
    return coeffs @ means


# ----------------------------------------------------------------------------------------------
# public rankings


def rank_neurons(
    probe: Any,
    method: str = DEFAULT_METHOD,
    *,
    X: Any = None,
    y: Any = None,
    search_stride: int = 100,
) -> np.ndarray:
    """Every neuron index, most salient first (ties: lower index first).

    Parameters
    ----------
    probe
        A fitted linear model with ``coef_`` of shape (n_classes, n_features) in standardised
        feature units (a binary model may have one row), or such an array.  May be ``None`` for
        ``"probeless"``, which does not use the probe.
    method
        ``"path"`` (default): the order in which neurons enter a group-lasso softmax probe along a
        decreasing sequence of L1 strengths (:class:`probing.path.RegularisationPath`, fitted on ``X``
        and ``y``; the probe is used for a shape check only). On correlated features (a real encoder's)
        it is the one of these that finds the neurons: a dense probe's weights are large where
        correlated neurons cancel each other, so ``"weight"`` and ``"neurox"`` can rank no better than
        random neurons there (see the README's "Neuron rankings" section). Needs ``X`` and ``y``.

        ``"weight"``: the L2 norm over classes of each neuron's weights.  The weights must
        be in standardised units (the probe saw z-scored features): a raw weight is large for a
        neuron of small scale and tiny for one of large scale, and an offset moves weight into the
        intercept, so ranking raw weights would rank neurons by their units, not by what they
        carry.  In standardised units, multiplying a neuron by 1000 or adding 50 changes nothing.

        ``"neurox"``: NeuroX's cumulative weight-mass ordering (Dalvi et al., AAAI 2019;
        ``neurox.interpretation.linear_probe.get_neuron_ordering``).  For each percentage
        p = s / search_stride, s = 0..search_stride, each class takes its neurons by descending |w|
        until their cumulative mass reaches p of the class's total mass (including the neuron that
        crosses it); a neuron's rank is the first s at which any class takes it.  Computed exactly
        in one vectorised pass instead of search_stride + 1 thresholded passes; see
        :func:`neurox_ordering` for its quirks.

        ``"probeless"``: Antverg & Belinkov, "On the Pitfalls of Analyzing Individual Neurons in
        Language Models" (ICLR 2022): a neuron's score is the sum over class pairs of
        |mean_a - mean_b| of its values, computed on ``X`` standardised per neuron (so scale and
        offset do not count).  Needs ``X`` and ``y``; the probe is not used beyond a shape check.
    X, y
        Features (n_samples, n_features) and labels (the training split), for ``"path"`` and
        ``"probeless"`` only.
    search_stride
        Number of percentage steps of the NeuroX sweep (NeuroX's default is 100).
    """
    if method not in METHODS:
        raise ValueError(f"unknown ranking method {method!r}; known methods: {', '.join(METHODS)}")
    if method in DATA_METHODS:
        n_features = None if probe is None else _coef(probe).shape[1]
        X, y = _data(method, X, y, n_features)
        if method == "probeless":
            return _order(_probeless_score(X, y))
        from speechprobe.probing.path import RegularisationPath

        return RegularisationPath().fit(X, y).ranking_
    if probe is None:
        raise ValueError(f'method "{method}" needs a fitted probe ("path" and "probeless" work without one)')
    coef = _coef(probe)
    if method == "weight":
        return _order(_weight_score(coef))
    _check_stride(search_stride)
    return _neurox_order(coef, search_stride)[0]


def _check_stride(search_stride: int) -> None:
    if isinstance(search_stride, bool) or not isinstance(search_stride, (int, np.integer)) or search_stride < 1:
        raise ValueError(f"search_stride must be a positive integer, got {search_stride!r}")


def neurox_ordering(probe: Any, search_stride: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """NeuroX's ``get_neuron_ordering``: ``(ordering, cutoffs)``, vectorised and deterministic.

    ``ordering`` holds every neuron (NeuroX's may hold fewer, see below); ``cutoffs[s]`` is the
    number of neurons taken by sweep step s (0..search_stride), as NeuroX's ``cutoffs``.

    Semantics kept from NeuroX, worth knowing when comparing with published numbers:

    - at p = 0 every class still takes its single largest neuron (``cum[0] >= 0`` always holds), so
      the first block is the union of each class's top neuron;
    - the neuron that crosses the threshold is included, and a neuron is taken at step s iff the
      mass *before* it is strictly below p x total;
    - neurons after the point where the cumulative sum reaches the total (zero weight in every
      class, common with L1, or below floating-point resolution) are never taken: NeuroX's ordering
      silently omits them (so its length can be < n_features); here they come last;
    - within one step NeuroX's order is that of a Python set (arbitrary); here by the exact mass
      fraction at which the neuron enters (what an infinitely fine sweep would give), then weight
      norm, then lower index, so the ordering does not depend on where a neuron sits;
    - ties in |w| inside a class are taken lower index first (NeuroX's ``argsort()[::-1]`` takes
      them in an unspecified order, for exact zeros in practice highest index first);
    - the weights are whatever the probe holds: NeuroX's probes usually see raw features, ours
      standardised ones.
    """
    _check_stride(search_stride)
    order, cutoffs = _neurox_order(_coef(probe), search_stride)
    return order, cutoffs


def rank_per_class(probe: Any, *, signed: bool = False) -> dict[Hashable, np.ndarray]:
    """Each class's own ordering of every neuron by its standardised weight for that class.

    By magnitude (NeuroX's per-class top neurons use |w|) unless ``signed``, which orders by the
    weight itself: neurons whose activation is evidence *for* the class first.  A binary probe with
    one row (scikit-learn's convention: the row scores ``classes_[1]``) gives both classes the same
    magnitude ordering; signed, ``classes_[0]`` is ordered by the negated row.
    """
    coef = _coef(probe)
    classes = _classes(probe, coef)
    if coef.shape[0] == 1:
        rows = [-coef[0], coef[0]]
    else:
        rows = list(coef)
    return {c: _order(row if signed else np.abs(row)) for c, row in zip(classes, rows)}


def rank_across_layers(
    probes_or_coefs: Sequence[Any],
    layer_names: Sequence[Hashable],
    *,
    k: int | None = None,
    method: str = "weight",
    search_stride: int = 100,
) -> tuple[list[tuple[Hashable, int]], dict[Hashable, int]]:
    """One ranking over the neurons of all layers, and how many of the top ``k`` each layer holds.

    Each layer's probe (or coef array) is trained on that layer alone; their weight matrices are
    concatenated along the neuron axis and ranked as one probe (``"weight"`` or ``"neurox"``).
    Weights of different layers are comparable only because they are in standardised units (and
    only as far as the probes were regularised alike: compare probes of one sweep setting).

    Returns ``(ranking, counts)``: ``ranking`` is every ``(layer_name, neuron_index)`` pair, most
    salient first (ties: earlier layer, then lower index); ``counts`` maps every layer name, in the
    given order, to its number of neurons among the top ``k`` (default: 5% of all neurons, at
    least 1).
    """
    if method not in ("weight", "neurox"):
        raise ValueError(f"unknown cross-layer ranking method {method!r}; known methods: weight, neurox")
    probes = list(probes_or_coefs)
    names = list(layer_names)
    if len(probes) == 0:
        raise ValueError("rank_across_layers needs at least one layer")
    if len(probes) != len(names):
        raise ValueError(f"got {len(probes)} probes but {len(names)} layer names")
    if len(set(names)) != len(names):
        raise ValueError("layer names must be unique")
    coefs = [_coef(p, what=f"layer {name!r}") for p, name in zip(probes, names)]
    n_rows = {c.shape[0] for c in coefs}
    if len(n_rows) != 1:
        raise ValueError(f"the layers' probes have different numbers of classes (coef_ rows {sorted(n_rows)})")
    class_sets = {tuple(np.asarray(p.classes_).tolist()) for p in probes if getattr(p, "classes_", None) is not None}
    if len(class_sets) > 1:
        raise ValueError("the layers' probes were trained on different classes")
    coef = np.concatenate(coefs, axis=1)
    total = coef.shape[1]
    if k is None:
        k = max(1, int(round(0.05 * total)))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= total:
        raise ValueError(f"k must be an integer between 0 and the {total} neurons of all layers, got {k!r}")
    if method == "weight":
        order = _order(_weight_score(coef))
    else:
        _check_stride(search_stride)
        order = _neurox_order(coef, search_stride)[0]
    widths = np.array([c.shape[1] for c in coefs])
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    layer_of = np.repeat(np.arange(len(coefs)), widths)
    ranking = [(names[layer_of[i]], int(i - starts[layer_of[i]])) for i in order]
    top_counts = np.bincount(layer_of[order[:k]], minlength=len(coefs))
    counts = {name: int(n) for name, n in zip(names, top_counts)}
    return ranking, counts


# ----------------------------------------------------------------------------------------------
# overlap of salient sets


def _as_set(a: Iterable[int], what: str, n: int | None = None) -> set[int]:
    arr = np.asarray(list(a) if not isinstance(a, np.ndarray) else a)
    if arr.size == 0:
        return set()
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a 1-D collection of integer neuron indices")
    if arr.min() < 0 or (n is not None and arr.max() >= n):
        raise ValueError(f"{what} holds neuron indices outside [0, {n})" if n is not None else f"{what} holds negative neuron indices")
    return set(arr.tolist())


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B| of two sets of neuron indices (0.0 when both are empty)."""
    sa, sb = _as_set(a, "a"), _as_set(b, "b")
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def _check_sizes(size_a: int, size_b: int, n: int) -> None:
    for name, v in (("size_a", size_a), ("size_b", size_b), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if n < 1 or not (0 <= size_a <= n and 0 <= size_b <= n):
        raise ValueError(f"set sizes must lie in [0, n] with n >= 1, got size_a={size_a}, size_b={size_b}, n={n}")


def chance_jaccard(size_a: int, size_b: int, n: int) -> float:
    """Expected Jaccard index of two independent uniformly random subsets of sizes ``size_a`` and
    ``size_b`` of ``n`` neurons, exactly: the intersection K is hypergeometric (population n,
    size_a marked, size_b drawn) and the result is E[K / (size_a + size_b - K)] (0.0 if a set is
    empty)."""
    _check_sizes(size_a, size_b, n)
    if size_a == 0 or size_b == 0:
        return 0.0
    k = np.arange(max(0, size_a + size_b - n), min(size_a, size_b) + 1)
    pmf = hypergeom.pmf(k, n, size_a, size_b)
    return float(np.sum(pmf * k / (size_a + size_b - k)))


@dataclass(frozen=True)
class Overlap:
    """Overlap of two salient sets beside chance.

    ``jaccard``: observed; ``chance``: expected for random sets of the same sizes; ``ratio``:
    jaccard / chance (NaN when chance is 0, i.e. a set is empty); ``p_value``: P(|A ∩ B| >= observed)
    for random sets of those sizes (one-sided hypergeometric test: is the overlap above chance?).
    """

    jaccard: float
    chance: float
    ratio: float
    p_value: float
    intersection: int
    size_a: int
    size_b: int
    n: int


def overlap(a: Iterable[int], b: Iterable[int], n: int) -> Overlap:
    """Jaccard of two sets of neuron indices out of ``n``, beside its chance level and p-value."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of neurons, got {n!r}")
    sa, sb = _as_set(a, "a", n), _as_set(b, "b", n)
    inter = len(sa & sb)
    union = len(sa | sb)
    observed = inter / union if union else 0.0
    chance = chance_jaccard(len(sa), len(sb), int(n))
    ratio = observed / chance if chance > 0 else float("nan")
    p_value = float(min(1.0, max(0.0, hypergeom.sf(inter - 1, n, len(sa), len(sb)))))
    return Overlap(
        jaccard=float(observed),
        chance=chance,
        ratio=float(ratio),
        p_value=p_value,
        intersection=inter,
        size_a=len(sa),
        size_b=len(sb),
        n=int(n),
    )


TOP_FRACTION = 0.05  # "top_counts": neurons of each layer among the top 5% of a concatenated ranking


def top_counts(names: list[str], widths: Any, ranking: np.ndarray) -> tuple[int, dict[str, int]]:
    """For a ranking over concatenated layers: k of the top 5%, and how many of them each layer holds."""
    layer_of = np.repeat(np.arange(len(names)), np.asarray(widths))
    top_k = max(1, int(round(TOP_FRACTION * len(layer_of))))
    counts = np.bincount(layer_of[ranking[:top_k]], minlength=len(names))
    return top_k, {name: int(n) for name, n in zip(names, counts)}


def layer_locations(names: list[str], widths: list[int], ranking: np.ndarray) -> dict:
    """For a ranking over concatenated layers: each neuron's (layer, index) and the top 5% per layer."""
    widths_a = np.asarray(widths)
    starts = np.concatenate([[0], np.cumsum(widths_a)[:-1]])
    layer_of = np.repeat(np.arange(len(names)), widths_a)
    top_k, counts = top_counts(names, widths_a, ranking)
    return {
        "layers": [{"name": n, "start": int(s), "dim": int(w)} for n, s, w in zip(names, starts, widths_a)],
        "layer_of_neuron": [[names[layer_of[i]], int(i - starts[layer_of[i]])] for i in ranking],
        "top_k": top_k,
        "top_counts": counts,
    }
