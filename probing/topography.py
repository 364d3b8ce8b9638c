"""Post-hoc topographic maps of one layer's neurons (after Krug & Stober, "Visualizing DNNs for speech
recognition with learned topographic filter maps"), on plain (n_utterances, n_neurons) arrays.

Krug & Stober train a network so that neighbouring filters on a 2-D map respond alike. Our encoders are
already trained, so the map is built after the fact: the neurons are laid out one per cell of a grid so
that grid neighbours respond alike over the corpus. Per-neuron values (a GradNAP profile, a probe's
weights, the minimal subset) then become an image, and a property's salient neurons can be asked whether
they gather in one region.

Similarity: the Pearson correlation of two neurons' activation profiles over the utterances, SIGNED. A
neuron and its negation are not "alike": a map of a signed quantity (profile, weight) would otherwise put
opposite colours side by side. A constant neuron has correlation 0 with every other neuron (it is placed
wherever the embedding leaves it).

Layout (:func:`neuron_layout`), three steps:

1. Embedding. Laplacian eigenmap (sklearn ``SpectralEmbedding``) of the affinity max(corr, 0) + 1e-3:
   neurons that rise and fall together attract, uncorrelated and anti-correlated ones do not; the small
   floor keeps the graph connected (constant and isolated neurons). Why spectral: it is fast (0.3-0.5 s at
   D = 768 on 2 cores) and its layouts do not depend on the seed, while metric MDS (5 s) and t-SNE (9-35 s,
   so not offered) gave only slightly better maps before refinement, and t-SNE's agree over seeds only at
   0.4-0.9 (Spearman of grid distances). ``method="mds"`` (SMACOF from classical MDS) is there for comparison.
2. Gridding. The embedding is rotated to its principal axes (the first along the longer grid side),
   every axis is rank-transformed to a uniform spread (so that dense clusters do not crowd one corner),
   scaled to the grid, and neurons are assigned one-to-one to cells with
   ``scipy.optimize.linear_sum_assignment`` on squared distances to the cell centres.
3. Refinement (``refine`` iterations, default 5). A 2-D embedding cannot keep six clusters apart, so the
   assignment is improved directly for the quantity the map is for: the sum over 4-neighbour pairs of
   their correlation, a quadratic assignment problem, with the FAQ Frank-Wolfe method
   (``scipy.optimize.quadratic_assignment``, Vogelstein et al. 2015) started from step 2; the better of
   the two is kept. Measured on held-out utterances (layout from 600, quality on 600 others; 6 blocks of
   96 correlated neurons + 192 independent ones, D = 768): gain 0.272 without, 0.294 with 5 iterations
   (1.5 s more), 0.297 with 10 (MDS: 0.294, t-SNE: 0.290, random assignment: 0.000 +- 0.003); on
   anisotropic and mixed-size blocks 5 iterations added 10-35 %. More iterations mostly fit noise.

Everything is seeded and deterministic (same input and seed -> identical layout).

Quality (:func:`layout_quality`): the mean correlation of 4-neighbour (rook) pairs of occupied cells,
the mean over all pairs of neurons, and their difference, the neighbour gain. Its reference is a random
assignment of the same neurons to the same cells (its gain is 0 in expectation; mean and spread over
seeded permutations are reported). Caution: the layout fits sampling noise too. On independent neurons
(D = 768, n = 600) the in-sample gain is about +0.06 (+0.01 with ``refine=0``) while it is 0.000 on other
utterances, so pass held-out activations (or a correlation from them) when the number matters.

Stability (:func:`layout_stability`): layouts from several seeds (optionally each on a random subsample
of the utterances) compared through their neuron-pair grid distance matrices (Spearman, a Mantel-style
statistic): 1 = the same map up to rotations and reflections of the grid. Measured on block data (D = 256,
n = 800): 1.0 over seeds; 0.24-0.35 over half-samples of the utterances, against 0.00 for independent
neurons: the blocks land together on every map, but where each block lies relative to the others (equally
strong, unrelated blocks) is not determined by the data.

Clustering (:func:`clustering_test`): the salient neurons (a boolean mask, or the top-k of a score) gather
when the mean grid distance (euclidean, in cells) from each salient neuron to the nearest other salient
neuron is small; the null places the same number of neurons at random among the layout's occupied cells
(seeded permutations, one-sided p with the +1 correction). For a per-neuron value map, Moran's I with rook
(4-neighbour, default) or queen (8-neighbour) binary weights over occupied cells, against the values
shuffled over the neurons. Both nulls condition on the layout, so they test the salient set (or the
values), not the layout.

Works on plain arrays only (numpy, scipy, scikit-learn; never imports ``encoders``, audio or torch).
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["ADJACENCIES", "METHODS", "NeuronLayout", "clustering_test", "default_shape", "layout_from_correlation",
           "layout_quality", "layout_stability", "neuron_correlations", "neuron_layout"]

METHODS = ("spectral", "mds")
ADJACENCIES = ("rook", "queen")
REFINE_ITERATIONS = 5
N_PERMUTATIONS = 1000
_AFFINITY_FLOOR = 1e-3
# Rows of X read at a time (memmaps stay on disk) and entries of the (permutations, k, k) blocks built at once.
_CHUNK_ENTRIES = 4_000_000


# --------------------------------------------------------------------------------------------------
# the layout


@dataclass(frozen=True, eq=False)
class NeuronLayout:
    """Neuron -> grid cell of one layer. Checked and made read-only on creation, so that a layout read back
    from JSON (:meth:`from_dict`) or built by hand is as valid as a computed one and cannot drift after tests."""

    positions: np.ndarray  # (D, 2) int: (row, col) of every neuron
    shape: tuple[int, int]  # (rows, cols)
    method: str = "given"
    seed: int = 0
    refine: int = 0
    embedding: Optional[np.ndarray] = None  # (D, 2) float: the 2-D embedding before gridding (scatter plots)

    def __post_init__(self) -> None:
        positions = np.array(self.positions)
        try:
            rows, cols = (int(s) for s in self.shape)
        except (TypeError, ValueError):
            raise ValueError(f"shape must be (rows, cols), got {self.shape!r}") from None
        if positions.ndim != 2 or positions.shape[1] != 2 or positions.dtype.kind not in "iu":
            raise ValueError(f"positions must be (D, 2) integer (row, col) cells, got shape {positions.shape} "
                             f"of dtype {positions.dtype}")
        positions = positions.astype(np.intp)
        if positions.size and (positions.min() < 0 or positions[:, 0].max() >= rows or positions[:, 1].max() >= cols):
            raise ValueError(f"positions fall outside the ({rows}, {cols}) grid")
        if np.unique(positions[:, 0] * cols + positions[:, 1]).size != positions.shape[0]:
            raise ValueError("positions put two neurons in one cell")
        positions.setflags(write=False)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "shape", (rows, cols))
        if self.embedding is not None:
            embedding = np.array(self.embedding, dtype=np.float64)
            embedding.setflags(write=False)
            object.__setattr__(self, "embedding", embedding)

    @property
    def n_neurons(self) -> int:
        return int(self.positions.shape[0])

    def cells(self) -> np.ndarray:
        """(rows, cols) neuron index in every cell, -1 where empty: the inverse of ``positions``."""
        grid = np.full(self.shape, -1, dtype=np.intp)
        grid[self.positions[:, 0], self.positions[:, 1]] = np.arange(self.n_neurons)
        return grid

    def image(self, values: Any) -> np.ndarray:
        """Paint per-neuron values (..., D) as (..., rows, cols) float64 images, NaN in empty cells (so that
        plotting shows them blank rather than as a value)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 0 or values.shape[-1] != self.n_neurons:
            raise ValueError(f"values have shape {values.shape}; need one value per neuron ({self.n_neurons}) "
                             "in the last axis")
        out = np.full(values.shape[:-1] + tuple(self.shape), np.nan)
        out[..., self.positions[:, 0], self.positions[:, 1]] = values
        return out

    def grid_distances(self) -> np.ndarray:
        """(D, D) euclidean distances between the neurons' cells, in cells."""
        p = self.positions.astype(np.float64)
        return np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1))

    def as_dict(self) -> dict:
        """Plain JSON values (without the embedding)."""
        return {"shape": list(self.shape), "positions": self.positions.tolist(), "method": self.method,
                "seed": self.seed, "refine": self.refine}

    @classmethod
    def from_dict(cls, data: dict) -> "NeuronLayout":
        """The layout :meth:`as_dict` wrote, so that later analyses paint the same map."""
        return cls(positions=np.asarray(data["positions"], dtype=np.intp).reshape(-1, 2), shape=tuple(data["shape"]),
                   method=str(data.get("method", "given")), seed=int(data.get("seed", 0)),
                   refine=int(data.get("refine", 0)))


def default_shape(n_neurons: int) -> tuple[int, int]:
    """Near-square grid with rows >= cols and at most one row's worth of empty cells."""
    rows = max(1, math.ceil(math.sqrt(n_neurons)))
    return rows, max(1, math.ceil(n_neurons / rows))


# --------------------------------------------------------------------------------------------------
# similarity


def neuron_correlations(X: Any) -> np.ndarray:
    """(D, D) Pearson correlations of the neurons over the utterances (rows), float64, unit diagonal.

    Read in row chunks, so a memmap of float32 activations is never copied whole into float64. A neuron
    that is constant (or whose spread is below 1e-12 of its magnitude, i.e. rounding) correlates 0 with all.
    """
    X = _activations(X)
    n, d = X.shape
    step = max(1, _CHUNK_ENTRIES // d)
    total = np.zeros(d)
    low, high = np.full(d, np.inf), np.full(d, -np.inf)
    for start in range(0, n, step):
        chunk = np.asarray(X[start:start + step], dtype=np.float64)
        if not np.all(np.isfinite(chunk)):
            raise ValueError(f"X contains NaN or Inf (rows {start}-{start + chunk.shape[0] - 1})")
        total += chunk.sum(axis=0)
        low, high = np.minimum(low, chunk.min(axis=0)), np.maximum(high, chunk.max(axis=0))
    mean = total / n
    gram = np.zeros((d, d))
    for start in range(0, n, step):
        chunk = np.asarray(X[start:start + step], dtype=np.float64) - mean
        gram += chunk.T @ chunk
    std = np.sqrt(np.maximum(np.diag(gram), 0.0) / n)
    varies = (high > low) & (std > 1e-12 * np.maximum(np.maximum(np.abs(low), np.abs(high)), 1e-300))
    scale = np.where(varies, std * math.sqrt(n), 1.0)
    corr = gram / scale[:, None] / scale[None, :]
    corr[~varies, :] = 0.0
    corr[:, ~varies] = 0.0
    np.clip(corr, -1.0, 1.0, out=corr)
    corr = (corr + corr.T) / 2
    np.fill_diagonal(corr, 1.0)
    return corr


def _activations(X: Any) -> Any:
    """X as a 2-D numeric array (a memmap stays a memmap) with enough utterances for a correlation."""
    array = X if isinstance(X, np.ndarray) else np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"X must be 2-D (n_utterances, n_neurons), got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"X must be numeric, got dtype {array.dtype}")
    if array.shape[0] < 3:
        raise ValueError(f"X has {array.shape[0]} utterances (rows); correlations need at least 3 "
                         "(with 2 every correlation is +-1)")
    if array.shape[1] < 1:
        raise ValueError(f"X has no neurons (shape {array.shape})")
    return array


def _correlation(C: Any) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 1:
        raise ValueError(f"correlation must be a square (D, D) matrix, got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError("correlation contains NaN or Inf (a constant neuron? use neuron_correlations)")
    return C


def _looks_like_correlation(A: np.ndarray, d: int) -> bool:
    """A (d, d) symmetric matrix with unit diagonal and entries in [-1, 1]; activations with as many
    utterances as neurons are (almost surely) none of these."""
    return (A.ndim == 2 and A.shape == (d, d) and bool(np.all(np.isfinite(A)))
            and np.allclose(np.diag(A), 1.0, atol=1e-6) and np.allclose(A, A.T, atol=1e-8)
            and float(np.abs(A).max()) <= 1.0 + 1e-6)


# --------------------------------------------------------------------------------------------------
# building the layout


def neuron_layout(X: Any, *, shape: Optional[Sequence[int]] = None, seed: int = 0, method: str = "spectral",
                  refine: int = REFINE_ITERATIONS) -> NeuronLayout:
    """Lay out one layer's neurons (columns of X, (n_utterances, D)) on a grid so that neighbours correlate.

    ``shape``: (rows, cols) with rows * cols >= D, default :func:`default_shape`; ``refine``: FAQ iterations
    (0 = embedding and assignment only; each costs O(D^3) time and a few dense (cells, cells) matrices, about
    0.5 s at D = 1024 on 2 cores, so consider 0 above a few thousand neurons).
    """
    X = _activations(X)
    _layout_options(X.shape[1], shape, method, refine)  # fail before the O(n D^2) correlation
    return layout_from_correlation(neuron_correlations(X), shape=shape, seed=seed, method=method, refine=refine)


def layout_from_correlation(C: Any, *, shape: Optional[Sequence[int]] = None, seed: int = 0,
                            method: str = "spectral", refine: int = REFINE_ITERATIONS) -> NeuronLayout:
    """:func:`neuron_layout` from a (D, D) correlation matrix already at hand (e.g. from frame-level data)."""
    C = _correlation(C)
    d = C.shape[0]
    rows, cols = _layout_options(d, shape, method, refine)
    embedding = _embed(C, method, int(seed))
    cell_of = _grid_assign(embedding, (rows, cols))
    if refine > 0 and d > 2:
        cell_of = _refine(C, cell_of, (rows, cols), int(refine))
    positions = np.stack(np.unravel_index(cell_of, (rows, cols)), axis=1).astype(np.intp)
    return NeuronLayout(positions=positions, shape=(rows, cols), method=method, seed=int(seed), refine=int(refine),
                        embedding=embedding)


def _layout_options(d: int, shape: Optional[Sequence[int]], method: str, refine: int) -> tuple[int, int]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise ValueError(f"refine must be a non-negative integer (FAQ iterations), got {refine!r}")
    if shape is None:
        return default_shape(d)
    try:
        rows, cols = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (rows, cols), got {shape!r}") from None
    if rows < 1 or cols < 1 or rows * cols < d:
        raise ValueError(f"shape {tuple(shape)!r} has {max(rows, 0) * max(cols, 0)} cells, too few for {d} neurons")
    return rows, cols


def _embed(C: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(D, 2) coordinates in which correlated neurons are close."""
    d = C.shape[0]
    if d < 4:  # too few neurons to embed (and on the default <= 2 x 2 grid every placement is as good): index order
        return np.stack([np.arange(d, dtype=np.float64), np.zeros(d)], axis=1)
    distance = np.clip(1.0 - C, 0.0, 2.0)  # signed: 0 for identical, 1 for unrelated, 2 for opposite
    np.fill_diagonal(distance, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # connectivity and convergence chatter; the result is checked below
        if method == "spectral":
            from sklearn.manifold import SpectralEmbedding

            affinity = np.clip(C, 0.0, None) + _AFFINITY_FLOOR
            affinity = (affinity + affinity.T) / 2
            Y = SpectralEmbedding(n_components=2, affinity="precomputed", random_state=seed).fit_transform(affinity)
        else:
            from sklearn.manifold import MDS

            Y = MDS(n_components=2, metric="precomputed", init="classical_mds", random_state=seed,
                    normalized_stress="auto").fit_transform(distance)
    Y = np.asarray(Y, dtype=np.float64)
    if not np.all(np.isfinite(Y)):
        raise ValueError(f"the {method} embedding returned NaN or Inf; try another method")
    Y = Y - Y.mean(axis=0)
    _, _, vt = np.linalg.svd(Y, full_matrices=False)  # principal axes, the larger first
    Y = Y @ vt.T
    return Y * np.where((Y ** 3).sum(axis=0) < 0, -1.0, 1.0)  # a fixed orientation, whatever the solver's signs


def _grid_assign(Y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cell index (row-major) of every neuron: one-to-one, nearest to its rank-scaled embedded point."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = shape
    d = Y.shape[0]
    if rows < cols:  # the principal axis goes along the longer side
        Y = Y[:, ::-1]
    ranks = np.argsort(np.argsort(Y, axis=0, kind="stable"), axis=0, kind="stable").astype(np.float64)
    scaled = ranks / max(d - 1, 1) * np.array([rows - 1, cols - 1], dtype=np.float64)
    centres = np.stack(np.unravel_index(np.arange(rows * cols), shape), axis=1).astype(np.float64)
    cost = ((scaled[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
    _, cell = linear_sum_assignment(cost)
    return cell.astype(np.intp)


def _cell_pairs(shape: tuple[int, int], adjacency: str = "rook") -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of neighbouring cells (row-major indices)."""
    rows, cols = shape
    cell = np.arange(rows * cols)
    row, col = np.divmod(cell, cols)
    steps = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if adjacency == "queen" else [])
    first, second = [], []
    for dr, dc in steps:
        ok = (row + dr < rows) & (col + dc >= 0) & (col + dc < cols)
        first.append(cell[ok])
        second.append((row[ok] + dr) * cols + col[ok] + dc)
    return np.concatenate(first), np.concatenate(second)


def _neighbour_pairs(layout: NeuronLayout, adjacency: str = "rook") -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of neurons in neighbouring cells."""
    if adjacency not in ADJACENCIES:
        raise ValueError(f"adjacency must be one of {', '.join(ADJACENCIES)}, got {adjacency!r}")
    a, b = _cell_pairs(layout.shape, adjacency)
    occupant = layout.cells().ravel()
    a, b = occupant[a], occupant[b]
    keep = (a >= 0) & (b >= 0)
    return a[keep], b[keep]


def _neighbour_sum(C: np.ndarray, cell_of: np.ndarray, shape: tuple[int, int]) -> float:
    a, b = _cell_pairs(shape)
    occupant = np.full(shape[0] * shape[1], -1, dtype=np.intp)
    occupant[cell_of] = np.arange(cell_of.size)
    a, b = occupant[a], occupant[b]
    keep = (a >= 0) & (b >= 0)
    return float(C[a[keep], b[keep]].sum())


def _refine(C: np.ndarray, cell_of: np.ndarray, shape: tuple[int, int], iterations: int) -> np.ndarray:
    """Improve the assignment for the sum of 4-neighbour correlations (FAQ from the current one)."""
    from scipy.optimize import quadratic_assignment

    d, n = C.shape[0], shape[0] * shape[1]
    adjacency = np.zeros((n, n))
    a, b = _cell_pairs(shape)
    adjacency[a, b] = adjacency[b, a] = 1.0
    weights = np.zeros((n, n))  # empty cells hold dummy neurons that correlate with nobody
    weights[:d, :d] = C
    np.fill_diagonal(weights, 0.0)
    occupant = np.empty(n, dtype=np.intp)
    occupant[cell_of] = np.arange(d)
    occupant[np.setdiff1d(np.arange(n), cell_of)] = np.arange(d, n)
    start = np.zeros((n, n))
    start[np.arange(n), occupant] = 1.0
    result = quadratic_assignment(adjacency, weights, method="faq",
                                  options={"maximize": True, "P0": start, "maxiter": iterations})
    refined = np.empty(n, dtype=np.intp)
    refined[np.asarray(result.col_ind)] = np.arange(n)  # cell i holds neuron col_ind[i]
    refined = refined[:d]
    return refined if _neighbour_sum(C, refined, shape) > _neighbour_sum(C, cell_of, shape) else cell_of


# --------------------------------------------------------------------------------------------------
# quality and stability


def layout_quality(X_or_corr: Any, layout: NeuronLayout, *, adjacency: str = "rook", n_random: int = 100,
                   seed: int = 0) -> dict:
    """How much more grid neighbours correlate than random pairs of neurons (the neighbour gain).

    ``X_or_corr``: activations (n_utterances, D), best other utterances than the layout was built from (the
    layout fits sampling noise too), or a (D, D) correlation matrix (recognised by its unit diagonal and
    symmetry). Reference: ``n_random`` seeded random assignments of the same neurons to the same cells.
    """
    d = layout.n_neurons
    A = X_or_corr if isinstance(X_or_corr, np.ndarray) else np.asarray(X_or_corr)
    if A.ndim == 2 and A.shape == (d, d) and A.dtype.kind in "biuf" and _looks_like_correlation(
            np.asarray(A, dtype=np.float64), d):
        C = np.asarray(A, dtype=np.float64)
    else:
        A = _activations(A)
        if A.shape[1] != d:
            raise ValueError(f"X has {A.shape[1]} neurons (columns); the layout has {d}")
        C = neuron_correlations(A)
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 1:
        raise ValueError(f"n_random must be a positive integer, got {n_random!r}")
    a, b = _neighbour_pairs(layout, adjacency)
    all_mean = float((C.sum() - np.trace(C)) / (d * (d - 1))) if d > 1 else float("nan")
    neighbour_mean = float(C[a, b].mean()) if a.size else float("nan")
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_random, d)), axis=1)
    random_means = C[perms[:, a], perms[:, b]].mean(axis=1) if a.size else np.full(n_random, np.nan)
    random_gain = random_means - all_mean
    spread = float(random_gain.std(ddof=1)) if n_random > 1 else float("nan")
    gain = neighbour_mean - all_mean
    return {"neighbour_mean": neighbour_mean, "all_mean": all_mean, "gain": gain,
            "random_neighbour_mean": float(random_means.mean()), "random_gain": float(random_gain.mean()),
            "random_gain_std": spread, "z": float((gain - random_gain.mean()) / spread) if spread > 0 else float("nan"),
            "n_pairs": int(a.size), "adjacency": adjacency, "n_random": int(n_random)}


def layout_stability(X: Any, seeds: Sequence[int] = (0, 1, 2), *, subsample: Optional[float] = None,
                     **kw: Any) -> dict:
    """Agreement of the layouts from several seeds: Spearman correlation of their neuron-pair grid distances.

    Distances are invariant to the grid's rotations and reflections, so 1 = the same map. With the default
    method the seed hardly matters; ``subsample`` (a fraction in (0, 1)) also draws that share of the
    utterances per seed, which asks the more useful question: does the map reflect the layer or the sample?
    ``kw`` goes to :func:`neuron_layout`.
    """
    from scipy.stats import spearmanr

    X = _activations(X)
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2:
        raise ValueError(f"seeds must hold at least 2 seeds to compare, got {seeds}")
    if subsample is not None and not (0.0 < float(subsample) < 1.0):
        raise ValueError(f"subsample must be a fraction in (0, 1), got {subsample!r}")
    if X.shape[1] < 3:
        raise ValueError(f"X has {X.shape[1]} neurons; stability compares distances among at least 3")
    shared = None if subsample is not None else neuron_correlations(X)
    upper = np.triu_indices(X.shape[1], 1)
    distances = []
    for seed in seeds:
        if shared is None:
            rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], max(3, round(subsample * X.shape[0])),
                                                              replace=False))
            C = neuron_correlations(X[rows])
        else:
            C = shared
        distances.append(layout_from_correlation(C, seed=seed, **kw).grid_distances()[upper])
    pairs = []
    for (i, first), (j, second) in itertools.combinations(enumerate(distances), 2):
        rho = spearmanr(first, second)[0]
        pairs.append({"seeds": [seeds[i], seeds[j]], "spearman": float(rho) if np.isfinite(rho) else 0.0})
    values = np.array([p["spearman"] for p in pairs])
    return {"mean": float(values.mean()), "min": float(values.min()), "pairs": pairs, "seeds": seeds,
            "subsample": None if subsample is None else float(subsample)}


# --------------------------------------------------------------------------------------------------
# clustering of salient neurons


def clustering_test(layout: NeuronLayout, values_or_mask: Any, *, k: Optional[int] = None,
                    n_permutations: int = N_PERMUTATIONS, seed: int = 0, adjacency: str = "rook") -> dict:
    """Do the salient neurons gather on the map, and is a value map smooth?

    ``values_or_mask``: a boolean mask of salient neurons, or per-neuron values; with values, ``k`` makes the
    k largest salient (pass np.abs(weights) when the sign does not matter) and Moran's I is computed.
    Nearest-neighbour statistic: mean grid distance from each salient neuron to the nearest other salient one,
    small = gathered; ``nn_ratio`` = observed / null mean (0.5: twice as close as random). Keys of a part that
    does not apply are None.
    """
    d = layout.n_neurons
    given = np.asarray(values_or_mask)
    if given.ndim != 1 or given.shape[0] != d:
        raise ValueError(f"values_or_mask has shape {given.shape}; the layout has {d} neurons")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    if adjacency not in ADJACENCIES:
        raise ValueError(f"adjacency must be one of {', '.join(ADJACENCIES)}, got {adjacency!r}")
    values: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    if given.dtype == bool:
        if k is not None:
            raise ValueError(f"k={k!r} selects the top-k of a score; values_or_mask is already a boolean mask")
        mask = given
        if not 2 <= int(mask.sum()) <= d - 1:
            raise ValueError(f"the mask selects {int(mask.sum())} of {d} neurons; need between 2 and {d - 1}")
    else:
        if given.dtype.kind not in "iuf":
            raise ValueError(f"values_or_mask must be boolean or numeric, got dtype {given.dtype}")
        values = given.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("values contain NaN or Inf")
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= d - 1:
                raise ValueError(f"k must be an integer in [2, {d - 1}], got {k!r}")
            mask = np.zeros(d, dtype=bool)
            mask[np.argsort(-values, kind="stable")[:k]] = True
    rng = np.random.default_rng(seed)
    out: dict = {"n_neurons": d, "n_permutations": int(n_permutations), "seed": int(seed), "adjacency": adjacency}
    out.update(_nearest_test(layout, mask, n_permutations, rng) if mask is not None else
               {key: None for key in ("n_salient", "nn_distance", "nn_null_mean", "nn_null_std", "nn_ratio", "nn_p_value")})
    out.update(_moran_test(layout, values, n_permutations, rng, adjacency) if values is not None else
               {key: None for key in ("moran_i", "moran_expected", "moran_null_std", "moran_p_value")})
    return out


def _nearest_distances(points: np.ndarray) -> np.ndarray:
    """(p, m, 2) cells -> (p,) mean over the m points of the distance to the nearest other point."""
    rows, cols = points[..., 0], points[..., 1]
    dr, dc = rows[:, :, None] - rows[:, None, :], cols[:, :, None] - cols[:, None, :]
    squared = dr * dr + dc * dc
    m = points.shape[1]
    squared[:, np.arange(m), np.arange(m)] = np.inf
    return np.sqrt(squared.min(axis=2)).mean(axis=1)


def _nearest_test(layout: NeuronLayout, mask: np.ndarray, n: int, rng: np.random.Generator) -> dict:
    positions = layout.positions.astype(np.float64)
    m, d = int(mask.sum()), layout.n_neurons
    observed = float(_nearest_distances(positions[mask][None])[0])
    step = max(1, _CHUNK_ENTRIES // (m * m))
    null = np.empty(n)
    for start in range(0, n, step):
        size = min(step, n - start)
        chosen = np.argpartition(rng.random((size, d)), m - 1, axis=1)[:, :m]  # m random neurons per row
        null[start:start + size] = _nearest_distances(positions[chosen])
    p_value = float((1 + np.sum(null <= observed + 1e-9)) / (1 + n))
    mean = float(null.mean())
    return {"n_salient": m, "nn_distance": observed, "nn_null_mean": mean, "nn_null_std": float(null.std()),
            "nn_ratio": observed / mean if mean > 0 else float("nan"), "nn_p_value": p_value}


def _moran_test(layout: NeuronLayout, values: np.ndarray, n: int, rng: np.random.Generator, adjacency: str) -> dict:
    """Moran's I = (D / E) * sum over neighbour pairs z_a z_b / sum z^2 (binary symmetric weights, E pairs)."""
    d = layout.n_neurons
    a, b = _neighbour_pairs(layout, adjacency)
    z = values - values.mean()
    denominator = float((z * z).sum())
    expected = -1.0 / (d - 1)
    if a.size == 0 or math.sqrt(denominator / d) <= 1e-12 * float(np.abs(values).max()):  # constant, up to rounding
        return {"moran_i": float("nan"), "moran_expected": expected, "moran_null_std": float("nan"),
                "moran_p_value": float("nan")}
    factor = d / (a.size * denominator)
    observed = float(factor * (z[a] * z[b]).sum())
    step = max(1, _CHUNK_ENTRIES // max(d, a.size))
    null = np.empty(n)
    for start in range(0, n, step):
        size = min(step, n - start)
        shuffled = rng.permuted(np.broadcast_to(z, (size, d)), axis=1)
        null[start:start + size] = factor * (shuffled[:, a] * shuffled[:, b]).sum(axis=1)
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n))
    return {"moran_i": observed, "moran_expected": expected, "moran_null_std": float(null.std()),
            "moran_p_value": p_value}
