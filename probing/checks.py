"""Input checks shared by probes, subset search and ablation: one clear ValueError line each."""
from __future__ import annotations

from typing import Any

import numpy as np


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
