"""Neuron rankings from the elastic-net regularisation path: the order in which neurons enter the probe.

Why the path and not the weights: the neurons of a real encoder are strongly correlated (neighbouring
units, the same unit in consecutive layers). A dense probe over correlated inputs puts large weights of
opposite sign on neurons that cancel each other, not on the neurons that carry the property, so ranking
by weight magnitude picks neurons no better than random ones (issue 13: GE2E's top-3 gender neurons by
weight 0.47 test accuracy, 3 random ones 0.46, the path's 0.91). Along a decreasing sequence of L1
strengths the penalty admits one neuron at a time, each the one that adds most *given those already in*:
of several correlated copies the first to enter is the most informative, and the others enter late,
since the first already explains what they carry.

The model is the probe's: a linear softmax over z-scored features, mean cross-entropy plus
``lam * sum_j ||W_j||_2`` (group lasso: neuron j's weights over all classes are one group, so a neuron
enters when any class needs it, and a binary task's two rows enter together) plus an optional fixed
ridge term ``l2 * ||W||^2`` (the elastic net's L2 part). The bias is not penalised.

Solver: accelerated proximal gradient (FISTA, Beck & Teboulle 2009) with adaptive restart (O'Donoghue
& Candes 2015), full batch, warm-started from one strength to the next. The proximal step
(group soft-thresholding) sets a neuron's weights to *exactly* zero until the data outweighs the
penalty, so "enters" is exact, not a threshold on small weights (Adam alone leaves them near zero).
Each strength is solved on the neurons already in plus those the sequential strong rule admits, and
checked on all of them (glmnet's screening), with backtracking steps. Written here rather than taken
from scikit-learn: it has no group penalty across classes for the multinomial loss (a neuron would enter
per class), and its saga solver costs seconds per strength on a 1024-neuron layer. Torch tensors, so that
``device`` can put large inputs on a GPU; on the CPU small problems run on one thread (see
:func:`_threads_for`).

Strengths: ``lam_t = lam_max * lambda_ratio ** ((t + 1) / n_lambdas)``, t = 0..n_lambdas-1, where
``lam_max`` (the largest per-neuron gradient norm of the intercept-only model) is the smallest strength
at which no neuron is in. Ranking: by the first strength at which a neuron is in; ties (neurons entering
at the same step) by how close each was to entering at the step before (its gradient norm there over
the strength, the KKT quantity that reaches 1 when a neuron enters), then lower index; neurons that
never enter come last, ordered by the same quantity at the end of the path. The path stops once
``max_active`` neurons (default 64) have entered, or the probe explains 99.9% of the training deviance
(glmnet's rule): the order among the first few dozen neurons is what the minimal subsets and the checks
against random read, and the late steps, with many neurons in, cost the most. Group lasso paths are not
always monotone (a neuron can leave after entering); ``n_left_`` counts the neurons that did.

Cost (benchmarks/ranking_methods.py): 0.08-0.4 s per layer of the demo's stores and about half a second
for 3,200 rows x 384 neurons x 8 classes: 0.7-3.6x an early-stopped 8-setting grid fit of the same
layer, which stops after a handful of epochs on data this small.

Works on plain arrays only (never imports ``encoders`` or ``tasks``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator

from speechprobe.probing.checks import label_vector

__all__ = ["PathResult", "RegularisationPath", "path_rankings", "regularisation_path"]


@dataclass(frozen=True)
class PathResult:
    """One input's path: ``ranking`` (every neuron, first to enter first), ``entry_step`` (D,; the path
    step at which each neuron entered, ``n_lambdas`` if never), ``lambdas`` (T,), ``n_active`` (T,; neurons
    in the model at each step), ``n_left`` (neurons that left after entering), ``n_iter`` (T,; FISTA
    iterations per step), ``coef`` (C, D; the last step's weights, standardised units) and ``intercept``."""

    ranking: np.ndarray
    entry_step: np.ndarray
    lambdas: np.ndarray
    n_active: np.ndarray
    n_left: int
    n_iter: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray


def _lipschitz(X: torch.Tensor, l2: float, iters: int = 30) -> float:
    """A bound on the curvature of mean cross-entropy + ridge in (W, b) on the columns X (N, k): the
    softmax's Hessian in the logits is at most 1/2 (Boehning), so L <= sigma_max([X, 1])^2 / (2N) + 2 l2
    (X is centred, so the bias column adds max(., 1)). sigma_max by power iteration, padded by 5%: it
    approaches from below, and a step longer than 1/L can diverge."""
    n = X.shape[0]
    v = torch.ones(X.shape[1], dtype=X.dtype, device=X.device)
    for _ in range(iters):
        v = X.T @ (X @ v)
        v = v / torch.linalg.vector_norm(v).clamp_min(torch.finfo(X.dtype).tiny)
    sigma2 = float(torch.linalg.vector_norm(X @ v)) ** 2
    return 0.5 * max(1.05 * sigma2 / n, 1.0) + 2.0 * l2


def _cross_entropy(logits: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of (N, C) logits and the softmax residual softmax(logits) - Y, from one log-softmax."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p * onehot).sum() / logits.shape[0], log_p.exp_().sub_(onehot)


def _smooth(X: torch.Tensor, onehot: torch.Tensor, theta: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (+ ridge on the weights) and the softmax residual, for theta = [W; b] on X = [X, 1]."""
    value, residual = _cross_entropy(X @ theta, onehot)
    if l2:
        value = value + l2 * theta[:-1].square().sum()
    return value, residual


def _fista(X, onehot, W, b, lam, l2, max_iter, tol):
    """Group-lasso-penalised softmax regression on the columns X (N, k), warm-started at (W, b); returns
    the solution and the iterations used.

    The weights and the bias are one matrix theta = [W; b] over the columns [X, 1] (half the tensor
    operations of keeping them apart: at a path's sizes each operation's overhead, not its arithmetic, is
    the cost). The step starts at 4 / L, L the global curvature bound, and halves until the quadratic
    upper bound holds (backtracking): the softmax is rarely as curved as the bound allows, so most steps are
    several times longer than 1 / L."""
    n, k = X.shape
    Xa = torch.cat([X, X.new_ones(n, 1)], dim=1)
    bound = _lipschitz(X, l2)
    step = 4.0 / bound
    theta = torch.cat([W, b[None]], dim=0)
    tiny = torch.finfo(X.dtype).tiny
    Y, momentum = theta, 1.0
    for it in range(1, max_iter + 1):
        f_y, residual = _smooth(Xa, onehot, Y, l2)
        grad = Xa.T @ residual / n
        if l2:
            grad[:-1] += 2.0 * l2 * Y[:-1]
        while True:
            Z = Y - step * grad
            shrink = torch.clamp(1.0 - step * lam / torch.linalg.vector_norm(Z[:-1], dim=1, keepdim=True).clamp_min(tiny),
                                 min=0.0)
            new = torch.cat([Z[:-1] * shrink, Z[-1:]], dim=0)
            diff = new - Y
            f_new, _ = _smooth(Xa, onehot, new, l2)
            gap = float(f_new - f_y - (grad * diff).sum() - diff.square().sum() / (2.0 * step))
            if gap <= 1e-12 or step <= 1.0 / bound:
                break
            step = max(step / 2.0, 1.0 / bound)
        delta = new - theta
        # adaptive restart: momentum is dropped when the step points uphill
        if float(((Y - new) * delta).sum()) > 0:
            momentum, beta = 1.0, 0.0
        else:
            following = (1.0 + (1.0 + 4.0 * momentum * momentum) ** 0.5) / 2.0
            beta, momentum = (momentum - 1.0) / following, following
        Y = new + beta * delta if beta else new
        theta = new
        change, scale = torch.stack([delta.abs().max(), theta[:-1].abs().max() if k else delta.new_zeros(())]).tolist()
        if change <= tol * max(1.0, scale):
            break
    return theta[:-1], theta[-1], it


@contextmanager
def _threads_for(elements: int):
    """One intra-op thread for small problems: the path's tensors are small (a step reads N x k features for
    the k candidate neurons), and on a busy 2-core machine a 2-thread softmax of 800 x 2 took 6 ms, one
    thread 0.05 ms (thread hand-offs, not arithmetic). Large inputs keep torch's threads."""
    previous = torch.get_num_threads()
    if elements < SMALL_ELEMENTS and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


SMALL_ELEMENTS = 2**22


def regularisation_path(
    X: Any,
    codes: Any,
    n_classes: int,
    *,
    n_lambdas: int = 30,
    lambda_ratio: float = 0.05,
    l2: float = 0.0,
    max_iter: int = 500,
    tol: float = 1e-3,
    max_explained: float = 0.999,
    max_active: Optional[int] = 64,
    device: Optional[str] = None,
) -> PathResult:
    """The group-lasso regularisation path of one input.

    ``X`` is (N, D), already standardised per neuron (z-scores of the training split); ``codes`` (N,) are
    class indices in [0, n_classes). Each step runs FISTA until the largest change is below ``tol`` x
    max(1, largest weight), at most ``max_iter`` iterations, on the neurons already in and those that
    the sequential strong rule (Tibshirani et al. 2012: ``||grad_j|| >= 2 lam_t - lam_{t-1}``) lets in;
    then every left-out neuron's optimality condition is checked on all D and violators are added and the
    step re-solved, so the screening changes no result, only the cost (a step costs its candidates, not
    D). The path stops early once the probe explains ``max_explained`` of the null model's training
    deviance (glmnet's rule: further entries fit noise) or once every neuron is in.
    """
    dtype = torch.float64 if device in (None, "cpu") else torch.float32
    Xt = torch.as_tensor(np.asarray(X), dtype=dtype, device=device)
    N, D = Xt.shape
    y = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=device)
    onehot = torch.nn.functional.one_hot(y, n_classes).to(dtype)

    # the null model: intercept only (the class log-priors), and the strength at which the first neuron enters
    b = onehot.mean(dim=0).clamp_min(1e-12).log()
    W_full = Xt.new_zeros(D, n_classes)
    null_deviance, residual = _cross_entropy(b.expand(N, n_classes), onehot)
    null_deviance = float(null_deviance)
    grad_norm = torch.linalg.vector_norm(Xt.T @ residual / N, dim=1)
    lam_max = max(float(grad_norm.max()), 1e-12)
    lambdas = lam_max * lambda_ratio ** ((np.arange(n_lambdas) + 1.0) / n_lambdas)

    entry = np.full(D, n_lambdas, np.int64)
    closeness = (grad_norm / lam_max).cpu().numpy()  # the KKT quantity at the step before each entry
    tie = np.zeros(D)
    ever = np.zeros(D, bool)
    active = np.zeros(D, bool)  # in the model at the previous step (none in the null model)
    left = np.zeros(D, bool)
    n_active, n_iter = [], []
    previous_lam = lam_max
    for t, lam in enumerate(lambdas):
        strong = closeness * previous_lam >= 2.0 * lam - previous_lam
        candidates = np.flatnonzero(active | strong)
        iterations = 0
        while True:
            idx = torch.as_tensor(candidates, device=Xt.device)
            W_sub, b, used = _fista(Xt[:, idx], onehot, W_full[idx], b, float(lam), l2, max_iter, tol)
            iterations += used
            W_full = Xt.new_zeros(D, n_classes)
            W_full[idx] = W_sub
            deviance, residual = _cross_entropy(torch.addmm(b, Xt[:, idx], W_sub), onehot)
            grad = Xt.T @ residual / N
            if l2:
                grad = grad + 2.0 * l2 * W_full
            norms = torch.linalg.vector_norm(grad, dim=1).cpu().numpy()
            outside = np.ones(D, bool)
            outside[candidates] = False
            violators = np.flatnonzero(outside & (norms > lam * (1.0 + 1e-6)))
            if violators.size == 0:
                break
            candidates = np.union1d(candidates, violators)
        active = torch.linalg.vector_norm(W_full, dim=1).cpu().numpy() > 0  # exact: the prox leaves zeros
        new = active & ~ever
        entry[new] = t
        tie[new] = closeness[new]
        left |= ever & ~active
        ever |= active
        n_active.append(int(active.sum()))
        n_iter.append(iterations)
        closeness = norms / lam
        previous_lam = lam
        explained = 1.0 - float(deviance) / null_deviance if null_deviance > 0 else 1.0
        if ever.all() or explained >= max_explained or (max_active is not None and ever.sum() >= max_active):
            lambdas = lambdas[:t + 1]
            break
    tie[~ever] = closeness[~ever]  # never entered: how close each came at the end of the path
    index = np.arange(D)
    return PathResult(
        ranking=np.lexsort((index, -tie, entry)).astype(np.intp),
        entry_step=entry,
        lambdas=np.asarray(lambdas, np.float64),
        n_active=np.asarray(n_active, np.int64),
        n_left=int(left.sum()),
        n_iter=np.asarray(n_iter, np.int64),
        coef=W_full.T.cpu().numpy().astype(np.float64),
        intercept=b.cpu().numpy().astype(np.float64),
    )


class RegularisationPath(BaseEstimator):
    """Rank neurons by the elastic-net regularisation path (scikit-learn estimator API).

    ``fit(X, y)`` standardises X (training-split mean and scale, as :class:`probing.probe.ElasticNetProbe`)
    and sets ``ranking_`` (every neuron index, first to enter first), ``entry_step_``, ``lambdas_``,
    ``n_active_``, ``n_left_``, ``n_iter_``, ``coef_`` (C, D; the last step's standardised weights),
    ``intercept_``, ``classes_``, ``mean_``, ``scale_``. See the module docstring for the model and solver.
    """

    def __init__(
        self,
        n_lambdas: int = 30,
        lambda_ratio: float = 0.05,
        l2: float = 0.0,
        *,
        max_active: Optional[int] = 64,
        max_iter: int = 500,
        tol: float = 1e-3,
        device: Optional[str] = None,
    ) -> None:
        self.n_lambdas = n_lambdas
        self.lambda_ratio = lambda_ratio
        self.l2 = l2
        self.max_active = max_active
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def _check_params(self) -> None:
        for name in ("n_lambdas", "max_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (0.0 < float(self.lambda_ratio) < 1.0):
            raise ValueError(f"lambda_ratio must lie in (0, 1), got {self.lambda_ratio!r}")
        if not (np.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be finite and >= 0, got {self.l2!r}")
        if self.max_active is not None and (isinstance(self.max_active, bool) or not isinstance(self.max_active, (int, np.integer))
                                            or self.max_active < 1):
            raise ValueError(f"max_active must be a positive integer or None, got {self.max_active!r}")
        if not (np.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be a positive number, got {self.tol!r}")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # the path is supervised: fit needs class labels
        return tags

    def fit(self, X: Any, y: Any) -> "RegularisationPath":
        from speechprobe.probing.probe import _estimator_X, _estimator_y

        self._check_params()
        result, (mean, scale), classes = _fit_path(_estimator_X(X), _estimator_y(self, y), self)
        self.mean_, self.scale_ = mean, scale
        self.classes_ = classes
        self.n_features_in_ = result.ranking.shape[0]
        self.ranking_ = result.ranking
        self.entry_step_ = result.entry_step
        self.lambdas_ = result.lambdas
        self.n_active_ = result.n_active
        self.n_left_ = result.n_left
        self.n_iter_ = result.n_iter
        self.coef_ = result.coef
        self.intercept_ = result.intercept
        return self


def _fit_path(X: np.ndarray, y: Any, params: RegularisationPath):
    """The path of one checked (N, D) float64 feature matrix: its result, (mean, scale) and classes."""
    from speechprobe.probing.budget import standardisation
    from speechprobe.probing.probe import _classes

    classes, codes = _classes(label_vector("y", y, X.shape[0], "X"))
    mean, scale = standardisation(X)
    with _threads_for(X.size):
        result = regularisation_path(
            (X - mean) / scale, codes, len(classes), n_lambdas=int(params.n_lambdas),
            lambda_ratio=float(params.lambda_ratio), l2=float(params.l2), max_iter=int(params.max_iter),
            tol=float(params.tol), max_active=params.max_active, device=params.device,
        )
    return result, (mean, scale), classes


def path_rankings(layers: dict[str, Any], y: Any, **params: Any) -> dict[str, np.ndarray]:
    """The path ranking of every layer (name -> (N, D) features) on labels ``y``, with one set of
    :class:`RegularisationPath` parameters."""
    return {name: RegularisationPath(**params).fit(X, y).ranking_ for name, X in layers.items()}
