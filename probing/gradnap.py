"""Gradient-adjusted neuron activation profiles (GradNAPs; Krug & Stober 2020) of one layer, for groups of inputs.

Public API
----------
- :func:`probe_relevance` - relevance of every neuron for every input under a trained linear softmax probe:
  activation x gradient of the log-probability of the probe's prediction, in closed form, vectorised.
- :func:`gradnap_profiles` - one profile per group: the group's mean relevance minus the mean over all
  inputs, divided by the spread (standard deviation) over all inputs; a neuron without spread gets 0.
- :func:`separation_test` - how much of the relevance variance the groups explain (mean over neurons of
  the between-group share, eta squared), against a seeded permutation null of the group labels.
- :func:`analyse_layer` - all of it for one layer: profiles, euclidean and cosine distances, average-
  linkage clustering, the root split of the dendrogram, the separation test; a :class:`LayerGradNAP`.

Why the prediction, not the true label: the gradient of log p(y | a) depends on y, so with the true label
the relevance of a neuron would differ between the label's groups by construction, even on activations
that carry nothing about the label. The prediction is a function of the activations alone, so on inputs
the probe never saw, groups that the activations do not separate give exchangeable relevances and the
permutation null is exact. (Pass ``target`` to use other classes, e.g. the true labels.)

Works on plain arrays only (never imports ``encoders`` or ``tasks``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from speechprobe.probing.options import TrainingOptions

__all__ = ["LayerGradNAP", "analyse_layer", "cosine_distances", "euclidean_distances", "gradnap_profiles",
           "crossfitted_relevance", "probe_relevance", "relevance", "separation_test"]

N_PERMUTATIONS = 200
ALPHA = 0.01
TOP_NEURONS = 20


# --------------------------------------------------------------------------------------------------
# relevance


def relevance(X: Any, coef: Any, intercept: Any, mean: Any, scale: Any, target: Any = None) -> np.ndarray:
    """Activation x d log p(target | x) / d x for a linear softmax on standardised inputs, (n, d) float64.

    logits = ((x - mean) / scale) @ coef.T + intercept; p = softmax(logits);
    d log p_t / d x_j = (coef[t, j] - sum_k p_k coef[k, j]) / scale_j. ``target``: class indices (n,),
    default the predicted class (argmax of the logits).
    """
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(coef, dtype=np.float64)
    if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[1]:
        raise ValueError(f"X {X.shape} and coef {W.shape} do not match: need (n, d) and (classes, d)")
    Z = (X - np.asarray(mean, dtype=np.float64)) / np.asarray(scale, dtype=np.float64)
    logits = Z @ W.T + np.asarray(intercept, dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    if target is None:
        t = np.argmax(logits, axis=1)
    else:
        t = np.asarray(target)
        if t.shape != (X.shape[0],) or t.dtype.kind not in "iu" or (t.size and (t.min() < 0 or t.max() >= W.shape[0])):
            raise ValueError(f"target must hold {X.shape[0]} class indices in [0, {W.shape[0]})")
    gradient = (W[t] - p @ W) / np.asarray(scale, dtype=np.float64)
    return X * gradient


def probe_relevance(probe: Any, X: Any, target: Any = None) -> np.ndarray:
    """:func:`relevance` under a fitted :class:`probing.probe.ElasticNetProbe` (its standardisation included)."""
    return relevance(X, probe.coef_, probe.intercept_, probe.mean_, probe.scale_, target)


def crossfitted_relevance(X: Any, labels: Any, splits: Any, *, l1: float, l2: float,
                          options: Union[TrainingOptions, Mapping[str, Any], None] = None,
                          probes: Optional[dict] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, relevance of those rows, the probes' predictions for them): every split's test rows under a probe
    fitted on that split's train rows.

    Each split trains one :class:`probing.probe.ElasticNetProbe` at (l1, l2) with ``options`` (training options,
    seed included) and early stopping on its validation rows, unless ``probes`` holds one for that split's
    position already. A row tested by several splits keeps the last; the rows come back sorted.
    """
    from speechprobe.probing.probe import ElasticNetProbe

    options = TrainingOptions.coerce(options)
    X = np.asarray(X)
    labels = np.asarray(labels)
    probes = probes or {}
    R, predicted = {}, {}
    for k, split in enumerate(splits):
        train, val, test = (np.asarray(getattr(split, part)) for part in ("train", "validation", "test"))
        probe = probes.get(k)
        if probe is None:
            probe = ElasticNetProbe(l1, l2, **options.as_dict()).fit(X[train], labels[train], X[val], labels[val])
        for row, value, label in zip(test, probe_relevance(probe, X[test]), probe.predict(X[test])):
            R[int(row)], predicted[int(row)] = value, label
    rows = np.array(sorted(R), dtype=np.intp)
    return rows, np.stack([R[int(r)] for r in rows]), np.array([predicted[int(r)] for r in rows])


# --------------------------------------------------------------------------------------------------
# profiles, distances, separation


def _group_codes(groups: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape}; need one group per input ({n})")
    try:
        names, codes = np.unique(groups.astype(str), return_inverse=True)
    except TypeError as error:
        raise ValueError(f"groups cannot be sorted: {error}") from None
    if names.size < 2:
        raise ValueError(f"a single group ({names[0] if names.size else 'none'}): profiles compare at least 2")
    return names, codes.reshape(-1)


def _spread(R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, spread and which neurons vary at all (spread above a relative floor)."""
    mean = R.mean(axis=0)
    std = R.std(axis=0)
    varies = std > 1e-12 * np.maximum(np.abs(R).max(axis=0), 1e-300)
    return mean, np.where(varies, std, 1.0), varies


def gradnap_profiles(R: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group names, sizes, profiles (groups, d)): (group mean - overall mean) / overall spread, 0 without spread.

    The size-weighted mean of the profiles is 0 for every neuron.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 2:
        raise ValueError(f"relevance must be (n >= 2, d), got shape {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError("relevance holds NaN or infinite values")
    names, codes = _group_codes(groups, R.shape[0])
    sizes = np.bincount(codes, minlength=names.size)
    sums = np.zeros((names.size, R.shape[1]))
    np.add.at(sums, codes, R)
    mean, spread, varies = _spread(R)
    profiles = (sums / sizes[:, None] - mean) / spread
    profiles[:, ~varies] = 0.0
    return names, sizes, profiles


def euclidean_distances(P: np.ndarray) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    square = (P * P).sum(axis=1)
    D = np.sqrt(np.maximum(square[:, None] + square[None, :] - 2 * P @ P.T, 0.0))
    np.fill_diagonal(D, 0.0)
    return (D + D.T) / 2


def cosine_distances(P: np.ndarray) -> np.ndarray:
    """1 - cosine similarity; a zero profile is at distance 1 from every other (0 from itself)."""
    P = np.asarray(P, dtype=np.float64)
    norm = np.linalg.norm(P, axis=1)
    unit = P / np.where(norm > 0, norm, 1.0)[:, None]
    D = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    return (D + D.T) / 2


def _eta_squared(R: np.ndarray, codes: np.ndarray, n_groups: int, mean: np.ndarray, spread: np.ndarray,
                 varies: np.ndarray) -> np.ndarray:
    """Mean over varying neurons of the between-group share of the variance, for each row of ``codes`` (p, n)."""
    codes = np.atleast_2d(codes)
    Rv = (R[:, varies] - mean[varies]) / spread[varies]
    out = np.empty(codes.shape[0])
    for i, row in enumerate(codes):
        onehot = np.zeros((n_groups, R.shape[0]))
        onehot[row, np.arange(R.shape[0])] = 1.0
        sizes = onehot.sum(axis=1)
        group_means = (onehot @ Rv) / np.maximum(sizes, 1)[:, None]
        out[i] = float((sizes[:, None] * group_means ** 2).sum(axis=0).mean() / R.shape[0]) if Rv.shape[1] else 0.0
    return out


def _permuted(codes: np.ndarray, blocks: Optional[np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` shuffles of the group codes: of whole blocks when every block lies in one group, else within blocks."""
    if blocks is None:
        return np.stack([rng.permutation(codes) for _ in range(n)])
    _, first, block_codes = np.unique(blocks, return_index=True, return_inverse=True)
    block_codes = block_codes.reshape(-1)
    block_group = codes[first]
    if np.array_equal(block_group[block_codes], codes):  # groups constant within blocks: shuffle blocks
        return np.stack([rng.permutation(block_group)[block_codes] for _ in range(n)])
    base = np.argsort(block_codes, kind="stable")
    rows = []
    for _ in range(n):
        order = np.lexsort((rng.random(codes.size), block_codes))  # a random order inside every block
        shuffled = np.empty_like(codes)
        shuffled[base] = codes[order]
        rows.append(shuffled)
    return np.stack(rows)


def separation_test(R: Any, groups: Any, *, blocks: Any = None, n_permutations: int = N_PERMUTATIONS,
                    seed: int = 0, alpha: float = ALPHA) -> dict:
    """Share of the relevance variance the groups explain (mean eta squared), against shuffled groups.

    ``blocks`` (e.g. speakers): inputs that are not exchangeable with each other. When every block lies in
    one group (dialect, gender), whole blocks are shuffled between groups; otherwise labels are shuffled
    within each block (channel); when there are no more blocks than groups (speakers grouped by speaker), single
    inputs are shuffled. ``separates`` only when the permutation p-value is at most ``alpha``.
    ``excess`` = separation - null mean is the chance-corrected score that compares layers.
    """
    R = np.asarray(R, dtype=np.float64)
    names, codes = _group_codes(groups, R.shape[0])
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    blocks = None if blocks is None else np.asarray(blocks).astype(str)
    if blocks is not None and blocks.shape != codes.shape:
        raise ValueError(f"blocks has shape {blocks.shape}; need one block per input ({codes.size})")
    if blocks is not None and np.unique(blocks).size <= names.size:
        blocks = None  # one block per group (speaker groups by speaker): only inputs can be shuffled
    mean, spread, varies = _spread(R)
    observed = float(_eta_squared(R, codes, names.size, mean, spread, varies)[0])
    rng = np.random.default_rng(seed)
    null = _eta_squared(R, _permuted(codes, blocks, rng, n_permutations), names.size, mean, spread, varies)
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations))
    return {"separation": observed, "null_mean": float(null.mean()), "null_std": float(null.std()),
            "excess": observed - float(null.mean()), "p_value": p_value, "n_permutations": int(n_permutations),
            "alpha": alpha, "separates": bool(p_value <= alpha and observed > null.mean()),
            "permuted": "inputs" if blocks is None else "blocks"}


# --------------------------------------------------------------------------------------------------
# one layer


@dataclass(frozen=True)
class LayerGradNAP:
    """One layer's GradNAPs (group order: sorted names) and how its groups relate."""

    groups: list[str]
    sizes: list[int]
    profiles: np.ndarray  # (groups, neurons)
    euclidean: np.ndarray  # (groups, groups)
    cosine: np.ndarray
    linkage: np.ndarray  # scipy linkage matrix of the euclidean distances, average linkage
    leaves: list[str]  # dendrogram leaf order
    root_split: tuple[list[str], list[str]]  # the two clusters joined last
    closest_pair: tuple[str, str]
    top_neurons: list[int]  # largest |profile| over groups first
    test: dict = field(default_factory=dict)

    def as_dict(self, *, profiles: bool = False) -> dict:
        """Plain JSON values; the full profile matrix only on request (the top neurons' columns always)."""
        out = {"groups": self.groups, "sizes": self.sizes, "euclidean": self.euclidean.tolist(),
               "cosine": self.cosine.tolist(), "linkage": self.linkage.tolist(), "leaves": self.leaves,
               "root_split": [list(self.root_split[0]), list(self.root_split[1])],
               "closest_pair": list(self.closest_pair), "top_neurons": self.top_neurons,
               "top_profiles": self.profiles[:, self.top_neurons].tolist(), **self.test}
        if profiles:
            out["profiles"] = self.profiles.tolist()
        return out


def analyse_layer(R: Any, groups: Any, *, blocks: Any = None, n_permutations: int = N_PERMUTATIONS, seed: int = 0,
                  alpha: float = ALPHA, top: int = TOP_NEURONS) -> LayerGradNAP:
    """Profiles, distances, average-linkage clustering (euclidean) and the separation test of one layer."""
    from scipy.cluster.hierarchy import leaves_list, linkage, to_tree
    from scipy.spatial.distance import squareform

    names, sizes, profiles = gradnap_profiles(R, groups)
    euclid = euclidean_distances(profiles)
    cosine = cosine_distances(profiles)
    Z = linkage(squareform(euclid, checks=False), method="average")
    labels = [str(n) for n in names]
    root = to_tree(Z)
    split = ([labels[i] for i in sorted(root.get_left().pre_order())],
             [labels[i] for i in sorted(root.get_right().pre_order())])
    masked = euclid + np.diag(np.full(len(labels), np.inf))
    i, j = np.unravel_index(np.argmin(masked), masked.shape)
    order = np.argsort(-np.abs(profiles).max(axis=0), kind="stable")[: min(top, profiles.shape[1])]
    test = separation_test(R, groups, blocks=blocks, n_permutations=n_permutations, seed=seed, alpha=alpha)
    return LayerGradNAP(groups=labels, sizes=[int(s) for s in sizes], profiles=profiles, euclidean=euclid,
                        cosine=cosine, linkage=Z, leaves=[labels[k] for k in leaves_list(Z)], root_split=split,
                        closest_pair=(labels[min(i, j)], labels[max(i, j)]), top_neurons=[int(k) for k in order],
                        test=test)


def gradnap_layers(layers: Mapping[str, Any], labels: Any, groups: Any, splits: list, *, blocks: Any = None,
                   settings: Mapping[str, tuple[float, float]],
                   options: Union[TrainingOptions, Mapping[str, Any], None] = None, seed: int = 0,
                   probes: Optional[Mapping[str, dict]] = None, n_permutations: Optional[int] = None,
                   tell: Callable[[str], None] = lambda message: None) -> tuple[dict, dict]:
    """Per layer: cross-fitted relevance, profiles, clustering and the separation test.

    Returns (results: plain values, profiles: layer -> full (groups, neurons) matrix). ``settings``: layer ->
    (l1, l2); ``options``: how the probes not given are trained; ``probes``: layer -> {split position: a fitted
    probe to reuse} (the sweep's first fold); ``seed``: the permutation test's.
    """
    options = TrainingOptions.coerce(options)
    groups = np.asarray(groups).astype(str)
    blocks = None if blocks is None else np.asarray(blocks).astype(str)
    out, profiles = [], {}
    for position, (name, X) in enumerate(layers.items(), 1):
        l1, l2 = settings[name]
        tell(f"gradnap layer {position}/{len(layers)} {name}: {len(splits)} probe{'s' if len(splits) > 1 else ''}, "
             "profiles, permutation test")
        rows, R, predicted = crossfitted_relevance(np.asarray(X), labels, splits, l1=l1, l2=l2, options=options,
                                                   probes=(probes or {}).get(name))
        result = analyse_layer(R, groups[rows], blocks=None if blocks is None else blocks[rows], seed=seed,
                               n_permutations=n_permutations or N_PERMUTATIONS)
        out.append({"layer": name, "l1": l1, "l2": l2, "n_neurons": int(R.shape[1]), "n_utterances": int(rows.size),
                    "probe_accuracy": float(np.mean(predicted == np.asarray(labels)[rows])), **result.as_dict()})
        profiles[name] = result.profiles
    separating = [layer for layer in out if layer["separates"]]
    best = max(separating, key=lambda layer: layer["excess"])["layer"] if separating else None
    return {"layers": out, "most_separating": best}, profiles
