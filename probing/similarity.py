"""Layer similarity (CKA, SVCCA, PWCCA) on plain (n_utterances, n_neurons) arrays.

Two layers are compared through the same N utterances in the same order (rows), whatever their
widths (columns); nothing here knows about audio or encoders. Everything is computed in float64.

Why several measures: they answer different questions. Linear CKA (Kornblith et al. 2019) compares
the geometry of two representations and is invariant to rotations, isotropic scaling and offsets but
not to rescaling single neurons; it is the default because its feature-space form needs no N x N
matrix and scales to hundreds of thousands of frames. RBF CKA looks at local neighbourhoods but needs
N x N kernels, so it is for small N. SVCCA (Raghu et al. 2017) and PWCCA (Morcos et al. 2018) are
invariant to any invertible linear map of the neurons, which makes them blind to directions a probe
could find in either layer equally well; PWCCA discounts canonical directions that carry little of
the first layer's activity (noise directions that CCA happily matches).

Public API
----------
- :func:`linear_cka` - linear CKA, feature-space form (no N x N matrix); ``unbiased=True`` for the
  debiased estimator via Gram matrices (small N only).
- :func:`rbf_cka` - CKA with Gaussian kernels, bandwidth a fraction of the median distance.
- :func:`hsic`, :func:`cka_from_grams` - biased and unbiased (Song et al. 2012) HSIC / CKA on
  kernel matrices.
- :func:`svcca` - mean canonical correlation after keeping the top-variance SVD directions.
- :func:`pwcca` - canonical correlations weighted by how much of X each direction accounts for.
- :func:`similarity_matrix` - layer x layer matrix within one encoder or between two.

Conventions: a side with no variance at all (every neuron constant over the utterances) has no
geometry to compare, and every measure returns 0.0 for it rather than NaN. Constant neurons beside
varying ones are simply ignored.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np

from speechprobe.probing.checks import feature_matrix
from speechprobe.probing.choices import SIMILARITY_MEASURES

__all__ = [
    "MAX_GRAM_N",
    "MEASURES",
    "cka_from_grams",
    "hsic",
    "linear_cka",
    "pwcca",
    "rbf_cka",
    "similarity_matrix",
    "svcca",
]

MEASURES = SIMILARITY_MEASURES

# Gram-matrix measures hold a few N x N float64 matrices (200 MB each at N = 5000); above this they
# are refused rather than left to exhaust memory. Linear CKA in feature space has no such limit.
MAX_GRAM_N = 5000

# Default RBF bandwidth as a fraction of the median pairwise distance (Kornblith et al. 2019).
_DEFAULT_SIGMA = 0.8


# --------------------------------------------------------------------------------------------------
# input handling


def _pair(X: Any, Y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two finite float64 matrices over the same utterances (same number of rows, at least 2)."""
    x = feature_matrix("X", X)
    y = feature_matrix("Y", Y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y have different numbers of rows ({x.shape[0]} vs {y.shape[0]}); "
            "similarity compares the same utterances in the same order"
        )
    _enough_rows("X and Y", x.shape[0])
    return x, y


def _enough_rows(what: str, n: int) -> None:
    if n < 2:
        raise ValueError(f"{what} need at least 2 rows (utterances) to measure similarity, got {n}")


def _gram_limit(n: int, what: str) -> None:
    if n > MAX_GRAM_N:
        raise ValueError(
            f"{what} builds N x N kernel matrices and is limited to N <= {MAX_GRAM_N}, got N = {n}; "
            "use linear_cka (feature-space form) or a subsample of the utterances"
        )


def _centre(X: np.ndarray) -> np.ndarray:
    """Column-centred copy, constant columns exactly zero, rescaled so that its largest entry is 1.

    Constant neurons are zeroed explicitly because subtracting a computed mean can leave 1e-17
    residues that would otherwise pass for signal (and make an all-constant layer look like noise).
    The rescaling changes none of the measures here (all are scale-invariant) but keeps squares and
    products of very large or very small activations away from overflow and underflow.
    """
    centred = X - X.mean(axis=0)
    centred[:, X.max(axis=0) == X.min(axis=0)] = 0.0
    scale = max(float(centred.max()), -float(centred.min()))
    if scale > 0.0:
        centred /= scale
    return centred


def _fraction(name: str, value: Any, low_open: float, high: Optional[float]) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number <= low_open or (high is not None and number > high):
        bound = f"in ({low_open:g}, {high:g}]" if high is not None else f"> {low_open:g}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return number


# --------------------------------------------------------------------------------------------------
# HSIC and CKA on kernel matrices


def _gram_pair(K: Any, L: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two finite, square, symmetric float64 kernel matrices of the same size."""
    grams = []
    for name, value in (("K", K), ("L", L)):
        gram = feature_matrix(name, value)
        if gram.shape[0] != gram.shape[1]:
            raise ValueError(f"{name} must be a square (n, n) kernel matrix, got shape {gram.shape}")
        scale = float(np.max(np.abs(gram)))
        if not np.allclose(gram, gram.T, rtol=1e-8, atol=1e-12 * scale):
            raise ValueError(f"{name} must be a symmetric kernel matrix; it differs from its transpose")
        grams.append(gram)
    if grams[0].shape != grams[1].shape:
        raise ValueError(f"K and L have different sizes ({grams[0].shape[0]} vs {grams[1].shape[0]})")
    return grams[0], grams[1]


def _centre_gram(gram: np.ndarray, unbiased: bool) -> np.ndarray:
    """HKH (biased), or the U-centred matrix of Szekely & Rizzo (2014) (unbiased).

    U-centring zeroes the diagonal and removes row/column means with the (n-2) and (n-1)(n-2)
    denominators; the Frobenius inner product of two U-centred matrices divided by n(n-3) is exactly
    Song et al.'s unbiased HSIC, and it is a genuine inner product, so unbiased CKA stays in [-1, 1].
    """
    n = gram.shape[0]
    gram = np.array(gram, dtype=np.float64, copy=True)
    if not unbiased:
        means = gram.mean(axis=0)
        gram -= means[None, :]
        gram -= gram.mean(axis=1)[:, None]
        return gram
    np.fill_diagonal(gram, 0.0)
    means = gram.sum(axis=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[None, :]
    gram -= means[:, None]
    np.fill_diagonal(gram, 0.0)
    return gram


def _check_n(n: int, unbiased: bool) -> None:
    if unbiased and n <= 3:
        raise ValueError(f"the unbiased HSIC estimator needs n > 3 examples, got n = {n}")
    _enough_rows("kernel matrices", n)


def hsic(K: Any, L: Any, unbiased: bool = False) -> float:
    """Hilbert-Schmidt independence criterion of two n x n kernel matrices over the same examples.

    Biased (Gretton et al. 2005): ``tr(K H L H) / (n-1)^2`` with ``H`` the centring matrix; it is
    positive even for independent data, by about 1/n. Unbiased (Song et al. 2012, needs n > 3):
    its expectation is the population HSIC, so it is near 0 (and may be negative) for independent
    data, which matters when comparing layers on few utterances.
    """
    k, l = _gram_pair(K, L)
    n = k.shape[0]
    _check_n(n, unbiased)
    inner = float(np.vdot(_centre_gram(k, unbiased), _centre_gram(l, unbiased)))
    return inner / (n * (n - 3)) if unbiased else inner / (n - 1) ** 2


def _cka_from_centred(kc: np.ndarray, lc: np.ndarray, norm_k: float, norm_l: float) -> float:
    if norm_k == 0.0 or norm_l == 0.0:
        return 0.0
    return float(np.clip(np.vdot(kc, lc) / (norm_k * norm_l), -1.0, 1.0))


def cka_from_grams(K: Any, L: Any, unbiased: bool = False) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) on two kernel matrices.

    The biased form lies in [0, 1] for positive semi-definite kernels; the unbiased form lies in
    [-1, 1] and is near 0 for independent data even at small n. A kernel with no variation left
    after centring (all examples alike) gives 0.0, not NaN.
    """
    k, l = _gram_pair(K, L)
    _check_n(k.shape[0], unbiased)
    kc, lc = _centre_gram(k, unbiased), _centre_gram(l, unbiased)
    return _cka_from_centred(kc, lc, float(np.linalg.norm(kc)), float(np.linalg.norm(lc)))


# --------------------------------------------------------------------------------------------------
# per-layer preparation and pairwise values (shared by the single functions and the matrix)


class _Linear(NamedTuple):
    centred: np.ndarray
    norm: float  # ||Xc^T Xc||_F

    @property
    def empty(self) -> bool:
        return self.norm == 0.0


def _prep_linear(X: np.ndarray) -> _Linear:
    centred = _centre(X)
    return _Linear(centred, float(np.linalg.norm(centred.T @ centred)))


def _pair_linear(a: _Linear, b: _Linear) -> tuple[float, float]:
    if a.empty or b.empty:
        return 0.0, 0.0
    cross = float(np.linalg.norm(a.centred.T @ b.centred)) ** 2
    value = min(max(cross / (a.norm * b.norm), 0.0), 1.0)
    return value, value


class _Gram(NamedTuple):
    centred: np.ndarray  # H K H
    norm: float

    @property
    def empty(self) -> bool:
        return self.norm == 0.0


def _rbf_gram(centred: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian kernel exp(-d^2 / (2 s^2)) with s = sigma x the median pairwise distance.

    The median is over distinct pairs (diagonal excluded). If over half of the pairs coincide the
    median is 0, and the median of the non-zero distances is used; if all rows coincide the kernel
    is all ones (and CKA with it is 0).
    """
    n = centred.shape[0]
    sq = np.einsum("ij,ij->i", centred, centred)
    d2 = centred @ centred.T
    d2 *= -2.0
    d2 += sq[:, None]
    d2 += sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    # every distinct pair appears twice off the diagonal, so the two middle values of the n(n-1)
    # entries are the median pair(s); distances, not squared ones, are averaged when they differ
    pairs = d2.ravel()[1:].reshape(n - 1, n + 1)[:, :-1].ravel()  # a copy, diagonal left out
    middle = pairs.size // 2
    pairs.partition([middle - 1, middle])
    median = 0.5 * (np.sqrt(pairs[middle - 1]) + np.sqrt(pairs[middle]))
    if median == 0.0:
        positive = pairs[pairs > 0.0]
        if positive.size == 0:
            return np.ones((n, n))
        median = float(np.median(np.sqrt(positive)))
    d2 /= -2.0 * (sigma * median) ** 2
    return np.exp(d2, out=d2)


def _prep_rbf(X: np.ndarray, sigma: float) -> _Gram:
    _gram_limit(X.shape[0], "rbf_cka")
    kc = _centre_gram(_rbf_gram(_centre(X), sigma), unbiased=False)
    return _Gram(kc, float(np.linalg.norm(kc)))


def _pair_gram(a: _Gram, b: _Gram) -> tuple[float, float]:
    value = _cka_from_centred(a.centred, b.centred, a.norm, b.norm)
    return value, value


def _basis(centred: np.ndarray, keep: float = 1.0) -> np.ndarray:
    """Orthonormal basis (N x k) of the column space of a centred matrix, top-variance first.

    Directions with singular values below numerical rank tolerance are dropped (so N < D, or
    duplicated and constant neurons, give a smaller basis rather than noise); with ``keep < 1``, only
    the leading directions that explain a ``keep`` fraction of the variance are kept (SVCCA's step).
    """
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return u[:, :0]
    rank = int(np.sum(s > s[0] * max(centred.shape) * np.finfo(np.float64).eps))
    k = rank
    if keep < 1.0:
        variance = s[:rank] ** 2
        explained = np.cumsum(variance) / variance.sum()
        k = min(int(np.searchsorted(explained, keep)) + 1, rank)
    return u[:, :k]


def _cca(qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations and variates of two subspaces given by orthonormal bases.

    The canonical correlations are the singular values of Qx^T Qy (cosines of the principal angles,
    Bjorck & Golub 1973): no covariance matrix is inverted, so collinear neurons cannot blow it up.
    Returns (correlations, X-side variates, Y-side variates), variates as unit-norm N-vectors.
    """
    u, rho, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), qx @ u, qy @ vt.T


class _Basis(NamedTuple):
    basis: np.ndarray
    centred: Optional[np.ndarray] = None  # kept for PWCCA's weights

    @property
    def empty(self) -> bool:
        return self.basis.shape[1] == 0


def _prep_svcca(X: np.ndarray, keep: float) -> _Basis:
    return _Basis(_basis(_centre(X), keep))


def _pair_svcca(a: _Basis, b: _Basis) -> tuple[float, float]:
    if a.empty or b.empty:
        return 0.0, 0.0
    value = float(np.mean(np.linalg.svd(a.basis.T @ b.basis, compute_uv=False).clip(0.0, 1.0)))
    return value, value


def _prep_pwcca(X: np.ndarray) -> _Basis:
    centred = _centre(X)
    return _Basis(_basis(centred), centred)


def _weighted(rho: np.ndarray, variates: np.ndarray, centred: np.ndarray) -> float:
    weights = np.abs(variates.T @ centred).sum(axis=1)
    total = float(weights.sum())
    return float(np.dot(weights, rho) / total) if total > 0.0 else 0.0


def _pair_pwcca(a: _Basis, b: _Basis) -> tuple[float, float]:
    """PWCCA with a's neurons as weights, and with b's: one CCA serves both directions."""
    if a.empty or b.empty:
        return 0.0, 0.0
    rho, ha, hb = _cca(a.basis, b.basis)
    assert a.centred is not None and b.centred is not None
    return _weighted(rho, ha, a.centred), _weighted(rho, hb, b.centred)


# --------------------------------------------------------------------------------------------------
# public pairwise measures


def linear_cka(X: Any, Y: Any, unbiased: bool = False) -> float:
    """Linear CKA between two layers over the same N utterances, in [0, 1].

    Feature-space form: with column-centred Xc, Yc,
    ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, which equals the Gram-matrix definition
    but costs O(N (D1 + D2)^2) time and O(N D + D^2) memory, so it runs on every frame of a corpus.
    Constant neurons are ignored; if one side is constant altogether, the result is 0.0 (no variance
    to share), not NaN.

    ``unbiased=True`` uses the unbiased HSIC estimator (Song et al. 2012) on the N x N linear Gram
    matrices, removing the positive bias of CKA at small N (independent layers of 50 utterances and
    a few dozen neurons score ~0.3 biased, ~0 unbiased); it needs 3 < N <= MAX_GRAM_N, may be
    slightly negative, and is not clipped.
    """
    x, y = _pair(X, Y)
    if not unbiased:
        return _pair_linear(_prep_linear(x), _prep_linear(y))[0]
    _gram_limit(x.shape[0], "linear_cka(unbiased=True)")
    _check_n(x.shape[0], unbiased=True)
    xc, yc = _centre(x), _centre(y)
    kc = _centre_gram(xc @ xc.T, unbiased=True)
    lc = _centre_gram(yc @ yc.T, unbiased=True)
    return _cka_from_centred(kc, lc, float(np.linalg.norm(kc)), float(np.linalg.norm(lc)))


def rbf_cka(X: Any, Y: Any, sigma: Optional[float] = None) -> float:
    """CKA with Gaussian (RBF) kernels, for small N (at most MAX_GRAM_N utterances).

    ``sigma`` is the kernel width as a fraction of each layer's median pairwise distance (default
    0.8, Kornblith et al. 2019), so the result does not depend on a layer's overall scale. Small
    sigma emphasises local neighbourhoods; as sigma grows the result tends to linear CKA.
    """
    x, y = _pair(X, Y)
    s = _DEFAULT_SIGMA if sigma is None else _fraction("sigma", sigma, 0.0, None)
    _gram_limit(x.shape[0], "rbf_cka")
    return _pair_gram(_prep_rbf(x, s), _prep_rbf(y, s))[0]


def svcca(X: Any, Y: Any, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): mean canonical correlation between the top-variance subspaces.

    Each centred side is reduced to its leading SVD directions explaining ``keep`` of its variance
    (dropping low-variance noise directions that CCA would otherwise match), then CCA runs between
    the reduced sides. Invariant to any invertible linear map of the neurons. When a side keeps as
    many directions as N - 1 (e.g. N < D), CCA is perfect for any data: lower ``keep`` or use more
    utterances. An all-constant side gives 0.0.
    """
    x, y = _pair(X, Y)
    k = _fraction("keep", keep, 0.0, 1.0)
    return _pair_svcca(_prep_svcca(x, k), _prep_svcca(y, k))[0]


def pwcca(X: Any, Y: Any) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): canonical correlations weighted by X's use of them.

    Each canonical direction h_i of X gets weight ``sum_j |<h_i, x_j>|`` over X's centred neurons
    x_j, normalised to sum to 1, so directions that carry little of X's activity (where CCA matches
    noise) count little. Not symmetric: ``pwcca(X, Y) != pwcca(Y, X)`` in general, X supplies the
    weights. CCA runs on the full numerical rank of each side; an all-constant side gives 0.0.
    """
    x, y = _pair(X, Y)
    return _pair_pwcca(_prep_pwcca(x), _prep_pwcca(y))[0]


# --------------------------------------------------------------------------------------------------
# layer x layer


def _measure(measure: str, sigma: Optional[float], keep: float) -> tuple[Callable, Callable]:
    """(prepare one layer, value for a pair of prepared layers) for a measure name."""
    if measure == "linear_cka":
        return _prep_linear, _pair_linear
    if measure == "rbf_cka":
        s = _DEFAULT_SIGMA if sigma is None else _fraction("sigma", sigma, 0.0, None)
        return (lambda X: _prep_rbf(X, s)), _pair_gram
    if measure == "svcca":
        k = _fraction("keep", keep, 0.0, 1.0)
        return (lambda X: _prep_svcca(X, k)), _pair_svcca
    if measure == "pwcca":
        return _prep_pwcca, _pair_pwcca
    valid = ", ".join(repr(m) for m in MEASURES)
    raise ValueError(f"unknown similarity measure {measure!r}; valid measures: {valid}")


def _layers(what: str, layers: Any) -> tuple[list, list[np.ndarray]]:
    if not isinstance(layers, Mapping) or len(layers) == 0:
        raise ValueError(f"{what} must be a non-empty mapping of layer name -> (N, D) array")
    names = list(layers)
    return names, [feature_matrix(f"layer {name!r}", layers[name]) for name in names]


def similarity_matrix(
    layers_a: Mapping[str, Any],
    layers_b: Optional[Mapping[str, Any]] = None,
    measure: str = "linear_cka",
    *,
    sigma: Optional[float] = None,
    keep: float = 0.99,
) -> tuple[list[str], list[str], np.ndarray]:
    """Layer x layer similarity: ``(names_a, names_b, matrix)`` with ``matrix[i, j]`` for a_i vs b_j.

    ``layers_b=None`` compares one encoder's layers with each other: each unordered pair is computed
    once and the diagonal is exactly 1.0 (0.0 for a layer that is constant altogether). With
    ``layers_b`` it compares two encoders over the same utterances (shape ``(len(a), len(b))``).
    All layers must have the same number of rows N.

    Each layer is prepared once (for linear CKA its centred features and ``||Xc^T Xc||_F``, for
    SVCCA/PWCCA its SVD basis, for RBF CKA its centred kernel), so an L x L matrix costs L
    preparations and L(L-1)/2 cross terms. Memory holds every prepared layer at once (for RBF CKA,
    one N x N matrix per layer). PWCCA is asymmetric: ``matrix[i, j] = pwcca(a_i, b_j)`` (row layer
    supplies the weights), so its within-encoder matrix is not symmetric; both orders of a pair
    come from one CCA. ``sigma`` applies to ``"rbf_cka"``, ``keep`` to ``"svcca"``.
    """
    prepare, pair = _measure(measure, sigma, keep)
    names_a, arrays_a = _layers("layers_a", layers_a)
    names_b, arrays_b = (names_a, arrays_a) if layers_b is None else _layers("layers_b", layers_b)

    first_name, n = names_a[0], arrays_a[0].shape[0]
    for name, array in zip(names_a + (names_b if layers_b is not None else []), arrays_a + arrays_b):
        if array.shape[0] != n:
            raise ValueError(
                f"layers {first_name!r} (N={n}) and {name!r} (N={array.shape[0]}) have different "
                "numbers of rows; similarity compares the same utterances in the same order"
            )
    _enough_rows(f"layer {first_name!r} and the others", n)

    prepared_a = [prepare(array) for array in arrays_a]
    if layers_b is None:
        size = len(prepared_a)
        matrix = np.empty((size, size))
        for i in range(size):
            matrix[i, i] = 0.0 if prepared_a[i].empty else 1.0
            for j in range(i + 1, size):
                matrix[i, j], matrix[j, i] = pair(prepared_a[i], prepared_a[j])
        return list(names_a), list(names_a), matrix

    prepared_b = [prepare(array) for array in arrays_b]
    matrix = np.empty((len(prepared_a), len(prepared_b)))
    for i, a in enumerate(prepared_a):
        for j, b in enumerate(prepared_b):
            matrix[i, j] = pair(a, b)[0]
    return list(names_a), list(names_b), matrix
