"""Input checks shared by probes, subset search and ablation: one clear ValueError line each."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from speechprobe.probing.budget import check_finite, numeric_matrix


def feature_matrix(name: str, X: Any) -> np.ndarray:
    """A non-empty finite float64 (n_examples, n_features) array (a view where the input allows)."""
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array") from None
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n_examples, n_features), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def label_vector(name: str, y: Any, n: int, X_name: str = "X") -> np.ndarray:
    """A 1-D label array with one label per row of `X_name`; numeric labels must be finite."""
    array = np.asarray(y)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.shape[0] != n:
        raise ValueError(f"{X_name} and {name} have different lengths ({n} vs {array.shape[0]})")
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def estimator_matrix(X: Any, name: str = "X") -> np.ndarray:
    """X checked for an estimator's methods (probes, erasers), kept in its own numeric type. First it says what
    scikit-learn's own estimators say for sparse, complex, 1-D and featureless input (its estimator checks
    read these words), where the plain conversion would densify, drop imaginary parts silently or give a
    vaguer error."""
    if sparse.issparse(X):
        raise ValueError(f"{name} is a sparse matrix: sparse input is not supported, pass a dense array")
    try:
        array = np.asarray(X)
    except (TypeError, ValueError):  # ragged or odd input: feature_matrix's one-line error
        return feature_matrix(name, X)
    if array.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} is complex")
    if array.ndim == 1:
        raise ValueError(f"{name} must be a 2-D array (n_examples, n_features), got shape {array.shape}: Reshape "
                         "your data with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single example")
    if array.ndim == 2 and array.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={array.shape}) while a minimum of 1 is required.")
    array = numeric_matrix(name, array)
    check_finite(name, array)
    return array
