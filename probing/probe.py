"""Elastic-net linear softmax probes with scikit-learn's estimator API, trained by :mod:`probing.training`.

Public API
----------
- :class:`ElasticNetProbe` - one probe: ``fit``, ``predict``, ``predict_proba``, ``score``, ``save``/``load``.
- :func:`fit_probes` - many probes (regularisation settings, feature subsets, inputs of equal width)
  trained together as one batched model; one fitted :class:`ElasticNetProbe` per setting.

Works on plain arrays only (never imports ``encoders`` or ``tasks``).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from dataclasses import fields
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.model_selection import train_test_split

from speechprobe.errors import SpeechprobeError
from speechprobe.probing.budget import check_finite, numeric_matrix, standardisation, standardise_
from speechprobe.probing.checks import estimator_matrix, label_vector
from speechprobe.probing.metrics import accuracy
from speechprobe.probing.options import TRAINING_PARAMS, TrainingOptions
from speechprobe.probing.training import train_probe_bank

__all__ = ["TRAINING_PARAMS", "ElasticNetProbe", "ProbeFileError", "TrainingOptions", "fit_probes"]

# The probe's training defaults are TrainingOptions' (one place says them).
_DEFAULTS = TrainingOptions()

_TENSORS = "probe.safetensors"
_META = "probe.json"
_FORMAT = "speechprobe.ElasticNetProbe/1"


# --------------------------------------------------------------------------------------------------
# input checks


def _classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as error:
        raise ValueError(f"labels cannot be sorted (mixed types?): {error}") from None
    if classes.shape[0] < 2:
        raise ValueError(f"y has a single class ({classes[0]!r}); a probe needs at least 2, not one class")
    if classes.dtype.kind == "f" and np.any(classes != np.round(classes)):
        # a regression target passed by mistake: every value would become a class of its own
        raise ValueError("Unknown label type: continuous (y holds non-integer numbers); a probe needs class labels")
    return classes, codes.reshape(-1)


def _estimator_X(X: Any, name: str = "X") -> np.ndarray:
    """:func:`probing.checks.estimator_matrix`: float32 stays float32 (fitting standardises it into float32
    anyway, and prediction computes in float64 from its exact values)."""
    return estimator_matrix(X, name)


def _estimator_y(estimator: Any, y: Any) -> Any:
    """y for an estimator's ``fit``: None is an error naming the estimator, a column vector (n, 1) is
    flattened with scikit-learn's DataConversionWarning (what its classifiers accept); the rest is
    :func:`label_vector`'s to check."""
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None")
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected: y is flattened",
                      DataConversionWarning, stacklevel=3)
        return array.ravel()
    return y


def _encode_val(classes: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    try:
        unseen = np.setdiff1d(np.unique(y_val), classes)
    except TypeError as error:
        raise ValueError(f"y_val labels cannot be compared with y's: {error}") from None
    if unseen.size:
        raise ValueError(f"y_val has classes never seen in training: {unseen.tolist()}")
    return np.searchsorted(classes, y_val)


def _standardised(blocks: Sequence[np.ndarray], stats: Sequence[tuple[np.ndarray, np.ndarray]],
                  source: Optional[np.ndarray] = None) -> np.ndarray:
    """The (G, n, d) float32 standardised inputs: ``source`` itself, standardised in place, when it is a
    writeable C-ordered float32 array (``blocks`` are its views), else a new array."""
    in_place = (source is not None and source.dtype == np.float32 and source.flags.c_contiguous
                and source.flags.writeable)
    out = source if in_place else np.empty((len(blocks),) + blocks[0].shape, dtype=np.float32)
    for g, (block, (mean, scale)) in enumerate(zip(blocks, stats)):
        standardise_(out[g] if in_place else block, mean, scale, out=None if in_place else out[g])
    return out


def _check_strength(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return number


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# reading saved probes


class ProbeFileError(SpeechprobeError, ValueError):
    """A saved probe's files are missing or damaged; the message names the file and the problem."""


# What each saved parameter may hold (the constructor's own checks run only at fit time): the penalty, then
# the training options by their declared types.
_KINDS_OF_TYPES = {"int": "int", "Optional[int]": "int|None", "float": "number", "bool": "bool", "str": "str"}
_PARAM_KINDS = {"l1": "strength", "l2": "strength",
                **{f.name: _KINDS_OF_TYPES[str(f.type)] for f in fields(TrainingOptions)}}


def _fits(kind: str, value: Any) -> bool:
    if value is None:
        return kind.endswith("|None")
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if kind.startswith("int"):
        return isinstance(value, int)
    if not isinstance(value, (int, float)) or not np.isfinite(value):
        return False
    return kind != "strength" or value >= 0


def _read_meta(path: Path) -> dict:
    """probe.json, checked key by key: a damaged file is one clear error, never a KeyError or TypeError."""
    try:
        meta = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ProbeFileError(f"{path}: not a text file (expected the probe's JSON metadata)") from None
    except json.JSONDecodeError as error:
        raise ProbeFileError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    if not isinstance(meta, dict):
        raise ProbeFileError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != _FORMAT:
        raise ProbeFileError(f"{path}: unknown format {meta.get('format')!r} (expected {_FORMAT!r})")
    checks = {
        "params": lambda v: isinstance(v, dict),
        "classes_kind": lambda v: v in ("int", "str"),
        "classes": lambda v: isinstance(v, list) and len(v) >= 2 and len(set(map(str, v))) == len(v)
        and all(isinstance(c, str) if meta.get("classes_kind") == "str" else _fits("int", c) for c in v),
        "n_features": lambda v: _fits("int", v) and v >= 1,
        "best_epoch": lambda v: _fits("int", v) and v >= 0,
        "best_val_loss": lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    for key, valid in checks.items():
        if key not in meta:
            raise ProbeFileError(f"{path}: {key!r} is missing")
        if not valid(meta[key]):
            raise ProbeFileError(f"{path}: {key!r} has an invalid value {meta[key]!r}")
    return meta


def _read_params(path: Path, params: dict, known: Sequence[str]) -> dict:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ProbeFileError(f"{path}: unknown probe parameter(s) {', '.join(map(repr, unknown))}; "
                             f"an ElasticNetProbe takes {', '.join(known)}")
    for name, value in params.items():
        kind = _PARAM_KINDS.get(name)
        if kind is not None and not _fits(kind, value):
            raise ProbeFileError(f"{path}: parameter {name!r} has an invalid value {value!r}")
    return params


# --------------------------------------------------------------------------------------------------
# estimator


class ElasticNetProbe(ClassifierMixin, BaseEstimator):
    """Linear softmax probe with elastic-net regularisation on the weights (never the bias).

    Features are standardised on the training split (``mean_``, ``scale_``; a constant neuron gets
    scale 1) and the probe is fitted in standardised units, so ``coef_`` (n_classes, n_features; two rows
    for a binary task, one per class) compares neurons by what they carry, not by their scale.

    Two parametrisations of the penalty, chosen by ``neurox_loss``:

    - ``neurox_loss=False`` (default):  ``mean CE + l1 * sum|W| + l2 * sum W**2``. The loss is a mean over
      examples, so the strengths do not depend on the batch size, and it is scikit-learn's objective
      rescaled: ``LogisticRegression(C=C)`` minimises ``C * sum CE + 0.5 * ||W||**2``; dividing by
      ``C * n_train`` gives ``l2 = 1 / (2 * C * n_train)`` (and for the L1 part of ``penalty="elasticnet"``,
      ``l1 = l1_ratio / (C * n_train)`` with ``l2 = (1 - l1_ratio) / (2 * C * n_train)``).
    - ``neurox_loss=True``: NeuroX's ``mean CE + l1 * sum|W| + l2 * ||W||_F`` (Frobenius norm, *not*
      squared), added to every mini-batch mean exactly as NeuroX's ``train_logistic_regression_probe``
      does, so lambdas from published NeuroX work (e.g. 0.001 / 0.01) carry over.

    Training (see :mod:`probing.training`): Adam on mini-batches of ``batch_size`` rows in a seeded
    order (``batch_size=None``: full batch), up to ``max_epochs`` epochs, early stopping on validation
    cross-entropy with ``patience`` epochs, keeping the best epoch's weights (``patience=None``: no early
    stopping, the last epoch's weights); an epoch improves only by lowering the best validation loss by
    more than ``min_delta`` (0.003 nats of mean cross-entropy). Why: on separable data the loss keeps
    falling as the weights grow, by less each epoch: on benchmarks/probe_training.py's best layer a probe
    ran 89 epochs with no threshold, 50 with 0.001 and 33 with 0.003 for the same test accuracy (1.0,
    1.0, 0.995); on the small demo stores (384 training rows) the best epoch is 0-4 either way. 0.01
    stopped tiny training sets too early. Without validation data, ``fit`` holds out a seeded, stratified
    10% of the training rows for early stopping. The same ``seed`` gives the same probe. ``accelerator`` and
    ``device``: where it trains (Lightning's accelerator names; "auto" is a GPU where there is one), which
    changes the result by float rounding at most (the batch order is drawn on the CPU either way).
    """

    def __init__(
        self,
        l1: float = 0.0,
        l2: float = 0.0,
        *,
        max_epochs: int = _DEFAULTS.max_epochs,
        batch_size: Optional[int] = _DEFAULTS.batch_size,
        lr: float = _DEFAULTS.lr,
        patience: Optional[int] = _DEFAULTS.patience,
        min_delta: float = _DEFAULTS.min_delta,
        seed: int = _DEFAULTS.seed,
        neurox_loss: bool = _DEFAULTS.neurox_loss,
        accelerator: str = _DEFAULTS.accelerator,
        device: Optional[int] = _DEFAULTS.device,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.min_delta = min_delta
        self.seed = seed
        self.neurox_loss = neurox_loss
        self.accelerator = accelerator
        self.device = device

    # ---- fitting --------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "ElasticNetProbe":
        """Fit on (X, y); early stopping on (X_val, y_val), or on a stratified 10% hold-out of X if omitted."""
        X, y = _estimator_X(X), _estimator_y(self, y)
        X_val = None if X_val is None else _estimator_X(X_val, "X_val")
        y_val = None if y_val is None else _estimator_y(self, y_val)
        (fitted,) = fit_probes(X, y, X_val, y_val, [(self.l1, self.l2)], options=TrainingOptions.from_probe(self))
        for name in ("coef_", "intercept_", "classes_", "mean_", "scale_", "n_features_in_", "best_epoch_", "best_val_loss_"):
            setattr(self, name, getattr(fitted, name))
        return self

    # ---- prediction -----------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this ElasticNetProbe is not fitted yet: call fit (or ElasticNetProbe.load)")

    def _logits(self, X: Any) -> np.ndarray:
        """Logits (n_examples, n_classes) on raw (unstandardised) features."""
        self._check_fitted()
        X = _estimator_X(X)
        if X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.coef_.shape[1]} features as input (the number it was fitted on)")
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores as scikit-learn's linear classifiers give them (what its metrics, e.g. ``roc_auc_score``,
        read): the logits (n_examples, n_classes), or for two classes the log-odds of ``classes_[1]``
        (n_examples,; positive where it is predicted)."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        return _softmax(self._logits(X))

    def predict(self, X: Any) -> np.ndarray:
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy, as ClassifierMixin's, minus scikit-learn's per-call validation (3 ms; a sweep
        scores dozens of probes)."""
        if sample_weight is not None:
            return super().score(X, y, sample_weight=sample_weight)
        predicted = self.predict(X)
        return accuracy(label_vector("y", y, predicted.shape[0], "X"), predicted)

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, path: Any) -> Path:
        """Write the probe into folder ``path``: tensors as safetensors, parameters and classes as JSON."""
        self._check_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        if self.classes_.dtype.kind in "iub":
            classes, kind = [int(c) for c in self.classes_], "int"
        elif self.classes_.dtype.kind == "U":
            classes, kind = [str(c) for c in self.classes_], "str"
        elif all(isinstance(c, str) for c in self.classes_):
            classes, kind = [str(c) for c in self.classes_], "str"
        else:
            raise ValueError(f"only int or string class labels can be saved, got dtype {self.classes_.dtype}")
        tensors = {
            name: np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            for name in ("coef_", "intercept_", "mean_", "scale_")
        }
        save_file(tensors, str(folder / _TENSORS))
        meta = {
            "format": _FORMAT,
            "params": self.get_params(),
            "classes": classes,
            "classes_kind": kind,
            "n_features": int(self.coef_.shape[1]),
            "best_epoch": int(self.best_epoch_),
            "best_val_loss": float(self.best_val_loss_),
        }
        (folder / _META).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, path: Any) -> "ElasticNetProbe":
        """Read a probe written by :meth:`save` (no pickle: nothing in the files can run code).

        A folder that is not a saved probe, or whose files are damaged (not JSON, not safetensors, an
        unknown parameter, tensors of the wrong shape, non-finite numbers), raises :class:`ProbeFileError`
        (a ValueError) naming the file and the problem.
        """
        folder = Path(path)
        meta_path, tensors_path = folder / _META, folder / _TENSORS
        if not meta_path.is_file() or not tensors_path.is_file():
            raise ProbeFileError(f"{folder} is not a saved ElasticNetProbe (needs {_META} and {_TENSORS})")
        meta = _read_meta(meta_path)
        probe = cls(**_read_params(meta_path, meta["params"], cls._get_param_names()))
        classes, kind, D = meta["classes"], meta["classes_kind"], meta["n_features"]
        try:
            tensors = load_file(str(tensors_path))
        except SafetensorError as error:
            raise ProbeFileError(f"{tensors_path}: not a readable safetensors file ({error})") from None
        C = len(classes)
        expected = {"coef_": (C, D), "intercept_": (C,), "mean_": (D,), "scale_": (D,)}
        for name, shape in expected.items():
            tensor = tensors.get(name)
            if tensor is None or tuple(tensor.shape) != shape:
                found = "missing" if tensor is None else f"of shape {tuple(tensor.shape)}"
                raise ProbeFileError(f"{tensors_path}: {name} is {found}, expected shape {shape} "
                                     f"({C} classes x {D} features, as {_META} says)")
            if tensor.dtype.kind != "f":
                raise ProbeFileError(f"{tensors_path}: {name} holds {tensor.dtype} numbers, not floating point")
            values = tensor.astype(np.float64)
            if not np.all(np.isfinite(values)):
                raise ProbeFileError(f"{tensors_path}: {name} holds non-finite numbers (NaN or infinity)")
            if name == "scale_" and np.any(values <= 0):
                raise ProbeFileError(f"{tensors_path}: scale_ holds numbers <= 0")
            setattr(probe, name, values)
        probe.classes_ = np.array(classes, dtype=np.int64 if kind == "int" else str)
        probe.n_features_in_ = D
        probe.best_epoch_ = meta["best_epoch"]
        probe.best_val_loss_ = meta["best_val_loss"]
        return probe


# --------------------------------------------------------------------------------------------------
# many probes at once


def fit_probes(
    X: Any,
    y: Any,
    X_val: Any,
    y_val: Any,
    settings: Sequence[tuple[float, float]],
    feature_masks: Any = None,
    *,
    inputs: Optional[Sequence[int]] = None,
    options: Union[TrainingOptions, Mapping[str, Any], None] = None,
    copy: bool = True,
) -> list[ElasticNetProbe]:
    """Train one probe per ``(l1, l2)`` setting, all together as one batched model; return them fitted.

    ``X`` is (N, D), or (G, N, D) for G inputs of equal width (e.g. layers), with ``inputs[p]`` saying
    which one probe p reads (``X_val`` shaped alike). ``feature_masks`` (P, D) of 0/1 restricts probe p to
    the features where its mask is 1 (its other weights are exactly 0). Each probe is trained exactly as
    it would be alone (see :mod:`probing.training`). ``X_val=None`` and ``y_val=None``: a seeded,
    stratified 10% of the training rows is held out for early stopping (the same rows for every probe).
    ``options``: how every probe is trained (:class:`TrainingOptions`, or a mapping of some of its
    fields; default the defaults); the penalties are ``settings``. ``copy=False``: with X_val given, float32
    C-ordered ``X`` and ``X_val`` are standardised in place (their values are lost), saving a copy of the data
    (what :func:`probing.sweep.probe_layers` does with the rows it gathered); otherwise a float32 copy is made.
    Memory: the standardised float32 copy and one block of rows (:data:`probing.budget.BLOCK_BYTES`) at a time.
    """
    options = TrainingOptions.coerce(options)
    X_arr = np.asarray(X) if not isinstance(X, (list, tuple)) else np.stack([np.asarray(x) for x in X])
    stacked = X_arr.ndim == 3
    blocks = [numeric_matrix("X", b) for b in (X_arr if stacked else [X_arr])]
    n, d = blocks[0].shape
    if any(b.shape != (n, d) for b in blocks):
        raise ValueError("every input block of X must have the same shape")
    for b in blocks:
        check_finite("X", b)
    y_arr = label_vector("y", y, n, "X")
    classes, codes = _classes(y_arr)
    settings = [(_check_strength("l1", a), _check_strength("l2", b)) for a, b in settings]
    if not settings:
        raise ValueError("settings is empty: give at least one (l1, l2)")
    P, G = len(settings), len(blocks)
    index = np.zeros(P, np.int64) if inputs is None else np.asarray(inputs, np.int64)
    if index.shape != (P,) or index.min() < 0 or index.max() >= G:
        raise ValueError(f"inputs must give one input index in [0, {G}) per setting ({P})")
    if not stacked and inputs is not None and G == 1 and index.max() > 0:
        raise ValueError("inputs given but X is a single (N, D) array")
    mask = None
    if feature_masks is not None:
        mask = np.asarray(feature_masks, dtype=np.float64)
        if mask.shape != (P, d) or not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"feature_masks must be a 0/1 array of shape ({P}, {d})")
        if np.any(mask.sum(axis=1) == 0):
            raise ValueError("a feature mask selects no feature")

    if (X_val is None) != (y_val is None):
        raise ValueError("give both X_val and y_val, or neither")
    train_source = val_source = None  # the (G, n, d) arrays that may be standardised in place
    if X_val is None:
        counts = np.bincount(codes)
        if counts.min() < 2:
            raise ValueError(
                f"class {classes[np.argmin(counts)]!r} has a single example: a stratified validation hold-out is "
                "impossible; pass X_val and y_val"
            )
        n_val = max(int(round(0.1 * n)), len(classes))
        if n - n_val < len(classes):
            raise ValueError(f"too few examples ({n}) to hold out a validation split for {len(classes)} classes")
        train_rows, val_rows = train_test_split(
            np.arange(n), test_size=n_val, stratify=codes, random_state=options.seed, shuffle=True
        )
        train_rows, val_rows = np.sort(train_rows), np.sort(val_rows)
        val_blocks = [b[val_rows] for b in blocks]
        blocks = [b[train_rows] for b in blocks]
        val_codes, codes = codes[val_rows], codes[train_rows]
        if np.unique(codes).shape[0] < len(classes):
            raise ValueError("the hold-out left a class without training examples; pass X_val and y_val")
    else:
        Xv = np.asarray(X_val) if not isinstance(X_val, (list, tuple)) else np.stack([np.asarray(x) for x in X_val])
        if Xv.ndim != X_arr.ndim:
            raise ValueError(f"X_val must have the same number of dimensions as X ({X_arr.ndim}), got {Xv.ndim}")
        val_blocks = [numeric_matrix("X_val", b) for b in (Xv if stacked else [Xv])]
        if len(val_blocks) != G or any(b.shape[1] != d for b in val_blocks):
            raise ValueError(f"X_val must have {G} input block(s) of {d} features, like X")
        if len({b.shape[0] for b in val_blocks}) != 1:
            raise ValueError("every input block of X_val must have the same number of rows")
        for b in val_blocks:
            check_finite("X_val", b)
        val_codes = _encode_val(classes, label_vector("y_val", y_val, val_blocks[0].shape[0], "X_val"))
        if not copy:
            train_source, val_source = X_arr if stacked else X_arr[None], Xv if stacked else Xv[None]

    # Standardised float32 inputs, one block of rows at a time (probing.budget): never a float64 copy of the
    # data, and with copy=False the caller's float32 arrays become them.
    stats = [standardisation(b) for b in blocks]
    X_train = _standardised(blocks, stats, train_source)
    X_valid = _standardised(val_blocks, stats, val_source)

    # Probes sorted by input (stable) let the bank run one matmul per input; results come back in order.
    order = np.argsort(index, kind="stable")
    bank = train_probe_bank(
        X_train,
        codes,
        X_valid,
        val_codes,
        len(classes),
        [settings[p][0] for p in order],
        [settings[p][1] for p in order],
        feature_mask=None if mask is None else mask[order],
        input_index=index[order],
        options=options,
    )
    position = np.empty(P, np.int64)
    position[order] = np.arange(P)
    W = bank.best_weight.detach().double().numpy()[position]
    b = bank.best_bias.detach().double().numpy()[position]
    best_epoch = bank.best_epoch.numpy()[position]
    best_loss = bank.best_loss.numpy()[position]
    probes = []
    for p, (l1, l2) in enumerate(settings):
        probe = ElasticNetProbe(l1, l2, **options.as_dict())
        probe.coef_ = W[p].T.copy()
        probe.intercept_ = b[p].copy()
        probe.classes_ = classes
        probe.mean_, probe.scale_ = stats[index[p]][0].copy(), stats[index[p]][1].copy()
        probe.n_features_in_ = d
        probe.best_epoch_ = int(best_epoch[p])
        probe.best_val_loss_ = float(best_loss[p])
        probes.append(probe)
    return probes
