"""Linear concept erasure on plain arrays: LEACE in closed form, and an orthogonal-projection baseline.

Why beside neuron ablation: ablating neurons removes a property only where it sits in few neurons; in a
speech encoder it is usually spread over many correlated ones. Concept erasure instead removes, from the
whole vector, everything a linear probe could read about the concept, and leaves the rest: an erased
layer that a downstream task still solves says the task did not need the concept (linearly).

Public API
----------
- :class:`LeaceEraser` - LEACE (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in closed
  form"): the affine eraser that makes the concept linearly unreadable (every class has the same mean, so
  no linear classifier beats a constant one) while changing the vectors least, in squared distance under
  any inner-product norm (the paper's Theorem 4.1); fitted on one layer's training vectors.
- :class:`ProjectionEraser` - the plain baseline: an orthogonal projection removing the span of the class
  mean differences. It guards just as well, but moves the vectors more where features are correlated.

Both are scikit-learn transformers: ``fit(X, y)`` (X the (N, D) vectors, y class labels, any number of
classes), ``transform(X)``, ``fit_transform``; learned state ``mean_`` (D,), ``proj_left_`` (D, r),
``proj_right_`` (r, D), ``rank_`` (r, the directions erased, at most n_classes - 1), ``classes_``,
``n_features_in_``, and for LEACE ``shrinkage_`` (the coefficient used); the property ``proj_`` is the
(D, D) matrix P. Erasing is

    x' = x - P (x - mean_),   P = proj_left_ @ proj_right_,

so in an encoder's forward pass (someone else's code) it is ``h - ((h - mean_) @ proj_right_.T) @
proj_left_.T``, O(D r) per vector. P is a projection (P P = P); the mean of the training vectors is kept.

The closed form (concept Z = one-hot of the classes, as LEACE does for categorical concepts): whitening
W = Sigma_XX^(-1/2) (a pseudo-inverse square root), P = W^+ Proj_{col(W Sigma_XZ)} W. It is computed
from the SVD of the centred training matrix Xc = U S V^T (through a QR of [Xc | Zc], so the (N, D) U is
never formed), not from an eigendecomposition of Sigma_XX: the same in exact arithmetic, but a direction
the SVD calls null holds at most ~eps x s_max of the data, one an eigendecomposition of Sigma_XX calls
null up to ~sqrt(eps) x s_max. Then W Sigma_XZ = V U^T Zc / sqrt(N - 1) and
P = V diag(s) a a^T diag(1/s) V^T, with a the left singular vectors of U^T Zc. Directions of Xc whose
singular value is at most ``tol`` x the largest are treated as absent (rank-deficient covariance:
duplicated or collinear neurons, N <= D); so are concept directions whose whitened cross-covariance is at
most ``tol`` x its largest possible value (sqrt ||Sigma_ZZ||, reached when the classes are an exact
linear function of X): the centred one-hot always has one such direction, collinear class means add
more. The default ``tol`` is max(N, D) x machine epsilon, numpy's ``matrix_rank`` rule.

Guarantee and its limit: on the *training* rows the class means of the erased vectors are equal (to
rounding); on new rows they are equal only as far as the training statistics estimate the population's.
With few rows per dimension (N near D) plain LEACE whitens by the smallest, worst-estimated eigenvalues
and can move *held-out* vectors far: on correlated synthetic data with 64 distinct neurons, fitting on
64 rows moved held-out vectors ~35x more than fitting on 1500 did (with Ledoit-Wolf shrinkage, ~1x).
``shrinkage`` (LeaceEraser only) mixes Sigma_XX with (trace / D) x identity: it keeps the training
guarantee and steadies held-out rows; ``"ledoit-wolf"`` picks the coefficient from the data;
``shrinkage=1`` gives :class:`ProjectionEraser`'s orthogonal projection. The default is 0, the paper's
estimator, whose least-change optimality is exact on the training rows.

Not offered: concept-erasure's trace constraint (its ``constrain_cov_trace``) and streaming ``update``
(fit holds a few float64 copies of X; N x D of 100,000 x 1,024 is 0.8 GB each).

Everything is computed in float64 and ``transform`` returns float64.

Works on plain arrays only (never imports ``encoders`` or ``tasks``).
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.utils.validation import check_is_fitted

from speechprobe.probing.checks import estimator_matrix, label_vector

__all__ = ["LEDOIT_WOLF", "LeaceEraser", "ProjectionEraser"]

LEDOIT_WOLF = "ledoit-wolf"  # LeaceEraser(shrinkage=LEDOIT_WOLF): scikit-learn's Ledoit-Wolf coefficient

_EPS = float(np.finfo(np.float64).eps)


def _tolerance(tol: Any, shape: tuple[int, int]) -> float:
    if tol is None:
        return max(shape) * _EPS
    if isinstance(tol, bool):
        raise ValueError(f"tol must be None or a number in [0, 1), got {tol!r}")
    try:
        number = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"tol must be None or a number in [0, 1), got {tol!r}") from None
    if not (0.0 <= number < 1.0):
        raise ValueError(f"tol must be None or lie in [0, 1), got {tol!r}")
    return number


def _shrinkage(value: Any) -> Any:
    """A number in [0, 1], or the string "ledoit-wolf" (the coefficient is then estimated at fit)."""
    if isinstance(value, str):
        if value != LEDOIT_WOLF:
            raise ValueError(f"shrinkage must be a number in [0, 1] or {LEDOIT_WOLF!r}, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ValueError(f"shrinkage must be a number in [0, 1] or {LEDOIT_WOLF!r}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"shrinkage must be a number in [0, 1] or {LEDOIT_WOLF!r}, got {value!r}") from None
    if not (0.0 <= number <= 1.0):
        raise ValueError(f"shrinkage must lie in [0, 1] (or be {LEDOIT_WOLF!r}), got {value!r}")
    return number


def _matrix(X: Any, name: str = "X") -> np.ndarray:
    """X as float64 (N, D), checked as the probes' input is (:func:`probing.checks.estimator_matrix`: one line
    for sparse, complex, 1-D, featureless, non-numeric or non-finite input, in scikit-learn's words)."""
    return np.asarray(estimator_matrix(X, name), dtype=np.float64)


def _labels(estimator: Any, y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted classes and each row's class index; one clear line for None, a bad shape, one class."""
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None")
    y = label_vector("y", y, n)
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as error:
        raise ValueError(f"labels cannot be sorted (mixed types?): {error}") from None
    if classes.shape[0] < 2:
        raise ValueError(f"y has a single class ({classes[0]!r}); erasing a concept needs at least 2 classes, "
                         "not one class")
    if classes.dtype.kind == "f" and np.any(classes != np.round(classes)):
        raise ValueError("Unknown label type: continuous (y holds non-integer numbers); erasure needs class labels")
    return classes, codes.reshape(-1)


def _centred_one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    z = np.zeros((codes.shape[0], n_classes))
    z[np.arange(codes.shape[0]), codes] = 1.0
    return z - z.mean(axis=0)


class _LinearEraser(TransformerMixin, BaseEstimator):
    """Shared fit / transform of the affine erasers x' = x - P (x - mean_), P = proj_left_ @ proj_right_."""

    tol: Optional[float]

    def _factors(self, Xc: np.ndarray, Zc: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _check_params(self) -> None:
        """Raise ValueError on a bad constructor parameter (checked at fit time, as scikit-learn does)."""

    def fit(self, X: Any, y: Any) -> "_LinearEraser":
        """Learn the eraser of the classes ``y`` from the vectors ``X`` (N, D); returns self."""
        self._check_params()
        X = _matrix(X)
        classes, codes = _labels(self, y, X.shape[0])
        tol = _tolerance(self.tol, X.shape)
        mean = X.mean(axis=0)
        left, right = self._factors(X - mean, _centred_one_hot(codes, classes.shape[0]), tol)
        self.mean_ = mean
        self.proj_left_ = left
        self.proj_right_ = right
        self.rank_ = int(left.shape[1])
        self.classes_ = classes
        self.n_features_in_ = int(X.shape[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The erased vectors (N, D), float64: x - P (x - mean_)."""
        check_is_fitted(self)
        X = _matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input (the number it was fitted on)")
        return X - ((X - self.mean_) @ self.proj_right_.T) @ self.proj_left_.T

    @property
    def proj_(self) -> np.ndarray:
        """The (D, D) erasure matrix P (x' = x - P (x - mean_)); a projection of rank ``rank_``."""
        check_is_fitted(self)
        return self.proj_left_ @ self.proj_right_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # the concept's labels: fit without y is meaningless
        return tags


class LeaceEraser(_LinearEraser):
    """LEACE: the least-change affine eraser that leaves every class with the same mean (see the module).

    Parameters
    ----------
    tol
        Relative rank tolerance, for the centred training matrix and for the whitened cross-covariance;
        None: max(N, D) x machine epsilon.
    shrinkage
        In [0, 1]: Sigma_XX is replaced by (1 - shrinkage) Sigma_XX + shrinkage (trace / D) I before
        whitening. 0 (default) is the paper's plain LEACE; 1 is the orthogonal projection;
        ``"ledoit-wolf"`` estimates the coefficient from the training rows
        (:func:`sklearn.covariance.ledoit_wolf_shrinkage`), the choice when N is not many times D.
        Training rows are guarded exactly at any value; the coefficient used is ``shrinkage_``.
    """

    def __init__(self, tol: Optional[float] = None, shrinkage: Union[float, str] = 0.0) -> None:
        self.tol = tol
        self.shrinkage = shrinkage

    def _check_params(self) -> None:
        _shrinkage(self.shrinkage)

    def _factors(self, Xc: np.ndarray, Zc: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
        n, d = Xc.shape
        alpha = _shrinkage(self.shrinkage)
        if alpha == LEDOIT_WOLF:
            alpha = float(ledoit_wolf_shrinkage(Xc, assume_centered=True))
        self.shrinkage_ = float(alpha)
        # [Xc | Zc] = Q [R1 | R2], then R1 = u S V^T: Xc = (Q u) S V^T and (Q u)^T Zc = u^T R2, without
        # forming the (N, D) left singular vectors of Xc
        R = np.linalg.qr(np.hstack([Xc, Zc]), mode="r")
        u, s, Vt = np.linalg.svd(R[:, :d], full_matrices=False)
        keep = s > tol * s[0] if s[0] > 0 else np.zeros(s.shape, dtype=bool)
        if not keep.any():  # constant vectors: nothing any probe could read
            return np.zeros((d, 0)), np.zeros((0, d))
        u, s, V = u[:, keep], s[keep], Vt[keep].T
        # Sigma_XX's eigenvalues along V, shrunk toward their mean, are g ** 2: W = V diag(1/g) V^T on V's span
        eigen = s ** 2 / (n - 1)
        g = np.sqrt((1.0 - alpha) * eigen + alpha * eigen.sum() / d)
        # the whitened cross-covariance W Sigma_XZ in V's coordinates, diag(s / g) U^T Zc / (n - 1); its
        # singular values are at most sqrt ||Sigma_ZZ|| (reached when a linear map of X gives Z exactly)
        whitened = (s / g)[:, None] * (u.T @ R[:, d:]) / (n - 1)
        a, rho, _ = np.linalg.svd(whitened, full_matrices=False)
        a = a[:, rho > tol * np.linalg.norm(Zc, 2) / np.sqrt(n - 1)]
        return V @ (g[:, None] * a), (a / g[:, None]).T @ V.T


class ProjectionEraser(_LinearEraser):
    """The baseline eraser: orthogonal projection removing span{class mean - mean} (concept-erasure's
    ``method="orth"``). Guards as LEACE does, but removes those directions' full variance, not only the
    concept's share: with correlated features it changes the vectors more.

    Parameters
    ----------
    tol
        Relative rank tolerance of the cross-covariance; None: max(N, D) x machine epsilon.
    """

    def __init__(self, tol: Optional[float] = None) -> None:
        self.tol = tol

    def _factors(self, Xc: np.ndarray, Zc: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
        u, sigma, _ = np.linalg.svd(Xc.T @ Zc, full_matrices=False)
        u = u[:, sigma > tol * np.linalg.norm(Xc) * np.linalg.norm(Zc)]
        return u, u.T.copy()
