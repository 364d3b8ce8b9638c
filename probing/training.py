"""Many linear softmax probes trained at once, as one batched tensor program (PyTorch Lightning).

:class:`ProbeBank` holds ``P`` probes as one weight tensor (read per probe as (P, D, C)) and biases
(P, C). Probe ``p`` reads input block ``input_index[p]`` of a (G, B, D) batch (G equal-width inputs,
e.g. layers), sees only the features where ``feature_mask[p] == 1``, and has its own elastic-net
strengths ``l1[p]``, ``l2[p]``. The training loss is the *sum over probes* of each probe's own loss,
so the gradient with respect to probe ``p``'s parameters is exactly the gradient it would get if it
were trained alone (the other terms do not depend on its parameters).

Optimiser: Adam, on mini-batches whose order is shared by every probe. Adam's moment estimates and
update are elementwise, so each probe's trajectory depends only on its own gradients: batched training
*is* separate training, step for step (up to float reduction order). Full-batch L-BFGS was rejected:
(1) its line search and curvature memory are global over the whole parameter vector, which couples the
probes (one probe's step length would depend on the others'), breaking "batched equals separate";
(2) the L1 term is not differentiable at 0, which L-BFGS's curvature pairs handle badly; (3) full-batch
passes do not scale to large N. Weights start at zero (the problem is convex, so the start does not
change the optimum, and a zero start makes the fit independent of the seed except for batch order and
the hold-out split).

Early stopping is per probe: after every epoch each still-active probe's validation loss (mean
cross-entropy, without the penalty) is compared with its best; on improvement its weights are copied
as its best, otherwise its wait counter grows, and after ``patience`` stalled epochs the probe is
frozen for good (later updates of its live weights are ignored, its best weights are what is kept),
exactly what training it alone with the same rule would give. An epoch counts as an improvement only
if it lowers the best loss by more than ``min_delta``. Training stops when every probe is
frozen or at ``max_epochs``. ``patience=None`` disables early stopping and keeps the final weights.

:class:`RaggedProbeBank` trains probes on nested feature subsets of one input (masks that are all
prefixes of one feature order, e.g. the top k of a ranking for many k) with each probe costing its own
k features, not D, and drops frozen probes from the computation; ``train_probe_bank`` picks it for
such masks.

Device: a bank trains where ``TrainingOptions.accelerator`` says ("auto": a GPU where there is one, else
the CPU), on *one* device (``TrainingOptions.device``, None: the accelerator's first), never split over
several: its Adam step, closed-form gradients and per-probe early stopping are one process's state, and
data parallelism would split each mini-batch without summing the gradients of its parts. The arrays stay
on the CPU in :class:`ArrayDataModule`, whose batch order comes from a CPU generator seeded with ``seed``,
so every device sees the same batches in the same order, and Lightning moves each chunk to the device.
Every tensor a bank holds follows it there (and to any dtype): parameters and buffers as in any module,
the plain tensor attributes (scratch space, Adam's step counts, a ragged bank's per-probe state and tier
index) through :meth:`ProbeBank._apply`, and a ragged bank's per-tier views of its weights are rebuilt
on the moved tensors rather than moved. Results agree with the CPU's to float rounding (reduction order
differs), as long as float32 matrix products run in full float32 (``torch.get_float32_matmul_precision()``
"highest", torch's default: TF32 would round far more). :func:`train_probe_bank` returns the bank on the
CPU, however it was trained.

Inputs here are already standardised float arrays; :mod:`probing.probe` does the checking and the
standardisation. This module knows nothing about encoders or tasks.
"""
from __future__ import annotations

import inspect
import logging
import warnings
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from speechprobe.compat import adam_update_
from speechprobe.probing.options import TrainingOptions

_DEFAULTS = TrainingOptions()  # the engine's defaults are the probe's

__all__ = ["ArrayDataModule", "ProbeBank", "RaggedProbeBank", "train_probe_bank"]


class _Rows(Dataset):
    """Rows of a (G, N, D) feature tensor and their labels, indexed by a whole batch of row ids at once."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return self.y.shape[0]

    def __getitem__(self, index):  # index: a list of row ids (a BatchSampler batch)
        index = torch.as_tensor(index, dtype=torch.long)
        return self.X.index_select(1, index), self.y[index]  # index_select: ~1.7x faster than X[:, index]


# Rows gathered per training chunk are bounded by this many bytes of features (G x rows x D float32).
CHUNK_BYTES = 32 * 2**20


class ArrayDataModule(pl.LightningDataModule):
    """In-memory train/validation arrays: X of shape (G, N, D) float32 (G inputs of equal width), y (N,) ints.

    The training order is one seeded permutation per epoch, shared by every probe (they all see the
    same mini-batches in the same order). ``batch_size=None`` means full batch.

    The training loader yields *chunks* of consecutive mini-batches of that permutation (as many as fit
    in :data:`CHUNK_BYTES`), which :class:`ProbeBank` splits into its optimiser steps. Why: Lightning's
    per-step machinery cost about 3 ms, more than a step of a 40-probe bank itself; one Lightning step
    per chunk leaves the batches, their order and every update exactly as before, at a fraction of it.
    """

    def __init__(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        batch_size: Optional[int] = _DEFAULTS.batch_size,
        seed: int = _DEFAULTS.seed,
    ) -> None:
        super().__init__()
        self.train = _Rows(torch.as_tensor(X_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=torch.long))
        self.val = _Rows(torch.as_tensor(X_val, dtype=torch.float32), torch.as_tensor(y_val, dtype=torch.long))
        self.batch_size = batch_size
        self.seed = int(seed)

    def _size(self, n: int) -> int:
        return n if self.batch_size is None else max(1, min(int(self.batch_size), n))

    def steps_per_chunk(self) -> int:
        G, _, D = self.train.X.shape
        batch = self._size(len(self.train))
        return max(1, CHUNK_BYTES // (4 * G * D * batch))

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler = BatchSampler(
            RandomSampler(range(len(self.train)), generator=generator),
            self._size(len(self.train)) * self.steps_per_chunk(),
            drop_last=False,
        )
        return DataLoader(self.train, sampler=sampler, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        sampler = BatchSampler(SequentialSampler(range(len(self.val))), 8192, drop_last=False)
        return DataLoader(self.val, sampler=sampler, batch_size=None)


class ProbeBank(pl.LightningModule):
    """P linear softmax probes, weights (P, D, C) and biases (P, C), trained as one model.

    Loss of probe p on a batch: mean cross-entropy + l1[p] * sum|W_p| + l2[p] * sum W_p^2, or with
    ``neurox_loss=True`` mean cross-entropy + l1[p] * sum|W_p| + l2[p] * ||W_p||_F (NeuroX's form).
    The penalty is on the weights only, never the biases.

    Each training step receives a chunk of consecutive mini-batches (see :class:`ArrayDataModule`) and
    makes one Adam step per mini-batch of ``batch_size`` rows (manual optimisation, closed-form
    gradients: see :meth:`gradients`).
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        l1: Sequence[float],
        l2: Sequence[float],
        *,
        feature_mask: Optional[np.ndarray] = None,
        input_index: Optional[Sequence[int]] = None,
        batch_size: Optional[int] = _DEFAULTS.batch_size,
        lr: float = _DEFAULTS.lr,
        patience: Optional[int] = _DEFAULTS.patience,
        min_delta: float = _DEFAULTS.min_delta,
        neurox_loss: bool = _DEFAULTS.neurox_loss,
    ) -> None:
        super().__init__()
        # Our frame passed in directly, never held in a variable: Lightning's default keeps a reference from its
        # own frame to itself, a cycle that holds this frame's callers, and with them the caller's training
        # arrays, until the garbage collector happens to run (large arrays never prompt it): a sweep's memory
        # grew by a bank per bank. A frame bound to a local here would make the same cycle through f_locals.
        self.save_hyperparameters(ignore=["feature_mask", "input_index", "feature_order", "ordered_inputs"],
                                  frame=inspect.currentframe())
        self.automatic_optimization = False
        l1_t = torch.as_tensor(np.asarray(l1, dtype=np.float32))
        l2_t = torch.as_tensor(np.asarray(l2, dtype=np.float32))
        P = l1_t.shape[0]
        index = np.zeros(P, np.int64) if input_index is None else np.asarray(input_index, np.int64)
        self.register_buffer("l1", l1_t)
        self.register_buffer("l2", l2_t)
        # Weights live grouped by input, (G, D, S, C) for G inputs with S probes each, so that one batched
        # matmul per input, (B, D) @ (D, S * C), serves all its probes: 2x faster per step than P thin
        # (B, D) @ (D, C) ones. Probes given in any other order (or unevenly) become G = P groups of one.
        groups, counts = np.unique(index, return_counts=True)
        if np.all(np.diff(index) >= 0) and np.all(counts == counts[0]):
            S = int(counts[0])
        else:
            groups, S = index, 1
        self.group_size = S
        self.register_buffer("groups", torch.as_tensor(groups))
        self._groups_are_inputs = bool(np.array_equal(groups, np.arange(len(groups))))
        self.masked = feature_mask is not None
        if self.masked:
            mask = torch.as_tensor(np.asarray(feature_mask, np.float32))  # (P, D)
            self.register_buffer("mask", mask.view(-1, S, n_features).transpose(1, 2)[..., None].contiguous())
        self.weight = torch.nn.Parameter(torch.zeros(len(groups), n_features, S, n_classes))
        self.bias = torch.nn.Parameter(torch.zeros(P, n_classes))
        # Per-probe penalty strengths (and the mask) spread to the weights' full shape once: multiplying by
        # a (G, 1, S, 1) broadcast view runs an 8-element inner loop, 10x slower per step than by a
        # full-size tensor. Non-persistent: derived from l1, l2 and mask, not state.
        shape = self.weight.shape
        grouped = lambda values: values.view(len(groups), 1, S, 1).expand(shape).contiguous()
        l2_factor = l2_t if neurox_loss else 2 * l2_t  # d(l2 W^2) = 2 l2 W; NeuroX's form: l2 W / ||W||
        self.register_buffer("_l1_full", grouped(l1_t), persistent=False)
        self.register_buffer("_l2_full", grouped(l2_factor), persistent=False)
        if self.masked:
            self.register_buffer("_mask_full", self.mask.expand(shape).contiguous(), persistent=False)
        self._scratch = torch.empty(shape)  # reused by every step for sign(W) and Adam's denominator
        # Adam's moments
        for name in ("weight", "bias"):
            self.register_buffer(f"adam_m_{name}", torch.zeros_like(getattr(self, name)))
            self.register_buffer(f"adam_v_{name}", torch.zeros_like(getattr(self, name)))
        self.adam_steps = 0
        self._adam_step_counts = [torch.zeros(()), torch.zeros(())]  # filled per step: cheaper than new tensors
        # early-stopping state, per probe
        self.register_buffer("best_loss", torch.full((P,), float("inf"), dtype=torch.float64))
        self.register_buffer("best_weight", torch.zeros(P, n_features, n_classes))
        self.register_buffer("best_bias", torch.zeros(P, n_classes))
        self.register_buffer("best_epoch", torch.full((P,), -1, dtype=torch.long))
        self.register_buffer("wait", torch.zeros(P, dtype=torch.long))
        self.register_buffer("active", torch.ones(P, dtype=torch.bool))
        self._val_sum: Optional[torch.Tensor] = None
        self._val_n = 0

    @property
    def n_probes(self) -> int:
        return self.bias.shape[0]

    def _apply(self, fn, recurse=True):
        """Parameters and buffers, as any module, and the plain tensor attributes too: ``.to()``, ``.cuda()``,
        ``.cpu()``, ``.double()`` (and Lightning's move to the training device) all come through here."""
        super()._apply(fn, recurse)
        self._scratch = fn(self._scratch)
        self._adam_step_counts = [fn(count).float() for count in self._adam_step_counts]  # the kernel's: float32
        if self._val_sum is not None:
            self._val_sum = fn(self._val_sum)
        return self

    def _grouped_weight(self) -> torch.Tensor:
        # The update never moves a masked weight off 0 (its gradient is masked); the product keeps
        # autograd's view of the loss (``training_loss``) right as well.
        return self.weight * self.mask if self.masked else self.weight

    def effective_weight(self) -> torch.Tensor:
        """Every probe's weights, (P, D, C), masked features at exactly 0."""
        G, D, S, C = self.weight.shape
        return self._grouped_weight().transpose(1, 2).reshape(G * S, D, C)

    def effective_bias(self) -> torch.Tensor:
        """Every probe's bias, (P, C)."""
        return self.bias

    def _inputs(self, X: torch.Tensor) -> torch.Tensor:
        """The (G, B, D) inputs of the weight groups, from a (G_in, B, D) batch."""
        if X.shape[0] != self.weight.shape[0] or not self._groups_are_inputs:
            X = X.index_select(0, self.groups)
        return X

    def _logits(self, inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        G, D, S, C = weight.shape
        return torch.baddbmm(self.bias.view(G, 1, S * C), inputs, weight.view(G, D, S * C)).view(G, -1, S, C)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Logits (G, B, S, C) for a (G_in, B, D) batch: probe p = g * S + s reads input ``input_index[p]``."""
        return self._logits(self._inputs(X), self._grouped_weight())

    def _cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-probe *summed* cross-entropy over the batch, shape (P,), from (G, B, S, C) logits."""
        G, B, S, C = logits.shape
        target = y[None, :, None].expand(G, B, S).reshape(-1)
        ce = F.cross_entropy(logits.reshape(-1, C), target, reduction="none")
        return ce.view(G, B, S).sum(dim=1).reshape(G * S)

    def penalty(self) -> torch.Tensor:
        W = self._grouped_weight()
        l1 = W.abs().sum(dim=(1, 3)).reshape(-1)
        if self.hparams.neurox_loss:
            l2 = torch.linalg.vector_norm(W, dim=(1, 3)).reshape(-1)
        else:
            l2 = W.square().sum(dim=(1, 3)).reshape(-1)
        return self.l1 * l1 + self.l2 * l2

    def training_loss(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-probe training loss (P,) on a batch: mean cross-entropy + penalty (what the updates minimise)."""
        return self._cross_entropy(self(X), y) / y.shape[0] + self.penalty()

    @torch.no_grad()
    def gradients(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of ``training_loss(X, y).sum()`` for the weights and biases, in closed form.

        Why not autograd: for a linear softmax model the gradient is X^T (softmax - onehot) / B, one
        batched matmul; with the penalty's gradient added directly this step costs about 40% of
        autograd + torch.optim.Adam at probe-bank sizes, whose per-call machinery outweighs the
        arithmetic. ``tests/probing`` checks it against autograd.
        """
        inputs = self._inputs(X)
        G, D, S, C = self.weight.shape
        B = y.shape[0]
        residual = torch.softmax(self._logits(inputs, self.weight), dim=-1)  # (G, B, S, C)
        residual.scatter_add_(3, y.view(1, B, 1, 1).expand(G, B, S, 1), residual.new_full((1, 1, 1, 1), -1.0).expand(G, B, S, 1))
        residual.div_(B)
        grad_weight = torch.bmm(inputs.transpose(1, 2), residual.view(G, B, S * C)).view(G, D, S, C)
        grad_bias = residual.sum(dim=1).view(G * S, C)
        W = self.weight
        if self.masked:  # masked weights stay 0, so their penalty terms below are 0 already
            grad_weight.mul_(self._mask_full)
        grad_weight.addcmul_(torch.sign(W, out=self._scratch), self._l1_full)
        if self.hparams.neurox_loss:  # d ||W||_F = W / ||W||_F (0 at W = 0, as autograd's subgradient)
            norm = torch.linalg.vector_norm(W, dim=(1, 3), keepdim=True)
            grad_weight.add_(W / norm.clamp_min(torch.finfo(W.dtype).tiny) * self.l2.view(G, 1, S, 1))
        else:
            grad_weight.addcmul_(W, self._l2_full)
        return grad_weight, grad_bias

    @torch.no_grad()
    def _adam_step(self, grad_weight: torch.Tensor, grad_bias: torch.Tensor) -> None:
        """torch.optim.Adam's update (default betas and eps), for weights and biases in one call.

        Through :func:`speechprobe.compat.adam_update_`: torch's fused Adam kernel where this torch has it
        (one pass over each tensor instead of ten elementwise ops: 0.05 ms against 0.27 ms a step for 40
        probes of 384 x 8, a fifth of a whole step), the same update written out otherwise.
        ``tests/probing`` checks it against torch.optim.Adam.
        """
        self.adam_steps += 1
        steps = self._adam_step_counts  # the update reads, not increments, them
        for count in steps:
            count.fill_(float(self.adam_steps))
        adam_update_([self.weight.data, self.bias.data], [grad_weight, grad_bias],
                     [self.adam_m_weight, self.adam_m_bias], [self.adam_v_weight, self.adam_v_bias], steps,
                     lr=self.hparams.lr, beta1=0.9, beta2=0.999, eps=1e-8)

    def training_step(self, batch, batch_idx):
        X, y = batch
        size = y.shape[0] if self.hparams.batch_size is None else int(self.hparams.batch_size)
        for start in range(0, y.shape[0], size):
            self._adam_step(*self.gradients(X[:, start:start + size], y[start:start + size]))

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_n = None, 0

    def _probe_cross_entropy(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-probe summed cross-entropy (P,) on a batch."""
        return self._cross_entropy(self(X), y)

    def validation_step(self, batch, batch_idx):
        X, y = batch
        ce = self._probe_cross_entropy(X, y).detach().double()
        self._val_sum = ce if self._val_sum is None else self._val_sum + ce
        self._val_n += y.shape[0]

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._val_sum is None:
            return
        loss = self._val_sum / self._val_n
        with torch.no_grad():
            if self.hparams.patience is None:
                improved = self.active.clone()  # keep the latest weights, never stop
            else:
                improved = self.active & (loss < self.best_loss - float(self.hparams.min_delta))
            self.best_loss[improved] = loss[improved]
            self.best_epoch[improved] = self.current_epoch
            self.best_weight[improved] = self.effective_weight()[improved]
            self.best_bias[improved] = self.effective_bias()[improved]
            if self.hparams.patience is not None:
                stalled = self.active & ~improved
                self.wait[improved] = 0
                self.wait[stalled] += 1
                was_active = int(self.active.sum())
                self.active &= self.wait < int(self.hparams.patience)
                if not bool(self.active.any()):
                    self.trainer.should_stop = True
                elif int(self.active.sum()) < was_active:
                    self._frozen_some()

    def _frozen_some(self) -> None:
        """Called when some probes froze this epoch (others still train): nothing to do here."""

    def configure_optimizers(self):
        return None  # the Adam update is _adam_step's (manual optimisation)


# A tier's fixed cost per step (its own two matmul calls and slicing, about 20 us) in units of the
# per-step work on one probe's weights for one feature (C weights through every elementwise op and both
# matmuls, about 70 ns on 2 cores): what _tiers weighs against padding narrow probes to a tier's width.
TIER_COST = 256


def nested_feature_order(feature_mask: np.ndarray) -> Optional[np.ndarray]:
    """A feature order in which every probe's mask is a prefix, or None when the masks are not nested.

    Masks are nested when, sorted by size, each contains the one before (e.g. the top k of one ranking
    for several k, as :func:`probing.subset.minimal_subset` trains). Features sorted by how many masks
    hold them (stable) then put every mask's features first.
    """
    mask = np.asarray(feature_mask) != 0
    order = np.argsort(-mask.sum(axis=0), kind="stable")
    prefix = np.arange(mask.shape[1])[None, :] < mask.sum(axis=1)[:, None]
    return order if np.array_equal(mask[:, order], prefix) else None


def _tiers(widths: np.ndarray, cost: float) -> list[np.ndarray]:
    """Probes grouped into tiers of consecutive widths, minimising sum over tiers of (cost + width x probes).

    A tier computes every probe at the tier's largest width, so narrow probes in a wide tier waste work
    and every extra tier costs ``cost``; the best split of the sorted widths is a small dynamic program
    (quadratic in the number of probes, run only when the set of training probes changes).
    """
    order = np.argsort(widths, kind="stable")
    w = widths[order].astype(np.float64)
    n = len(w)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(n + 1, np.int64)
    for j in range(1, n + 1):  # the last tier holds sorted probes i..j-1, at width w[j - 1]
        totals = best[:j] + cost + w[j - 1] * (j - np.arange(j))
        cut[j] = int(np.argmin(totals))
        best[j] = totals[cut[j]]
    tiers, j = [], n
    while j > 0:
        tiers.append(order[cut[j]:j])
        j = cut[j]
    return tiers[::-1]


class _Tier(NamedTuple):
    """One tier of a :class:`RaggedProbeBank`: its probes, their common width, and where they lie (as
    plain ints, computed once per layout: per step, Python-level arithmetic on tensors cost more than
    the tier's matmuls)."""

    ids: torch.Tensor  # probe ids
    width: int  # features read (the first ``width`` in feature order)
    size: int  # number of probes
    offset: int  # the tier's block of the flat weights: [offset, end), read as (width, size * C)
    end: int
    start: int  # its bias rows in the (P_training, C) biases: [start, start + size)


class RaggedProbeBank(ProbeBank):
    """Probes on nested feature subsets of one input, each computed on its own features only.

    For masks that are prefixes of one feature order (:func:`nested_feature_order`), e.g. minimal_subset's
    top-k candidates: the masked :class:`ProbeBank` multiplies all D features for every probe, here a probe
    of k features costs about k. Probes are grouped into a few *tiers* of similar k (:func:`_tiers`); tier
    t reads the first D_t features (in that order) with one matmul for all its probes, and a probe with
    k < D_t keeps its extra D_t - k weights at 0 with a mask, as the masked bank does. All tiers' weights
    are one flat parameter vector (biases one (P, C) tensor), so the penalty and Adam run as single ops.

    Probes that early stopping froze are dropped from the computation (their best weights are kept, their
    live weights were ignored anyway), and the remaining ones are re-tiered: the wide, fast-converging
    candidates stop costing once they are done. Each probe's updates are exactly those of the masked bank
    (same batches, gradients and Adam moments, up to float reduction order); ``tests/probing`` compares them.
    ``weight`` is the flat vector of the probes in training, ``bias`` their biases, in tier order.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        l1: Sequence[float],
        l2: Sequence[float],
        *,
        feature_mask: np.ndarray,
        feature_order: np.ndarray,
        input_index: Optional[Sequence[int]] = None,
        ordered_inputs: bool = False,
        **kwargs,
    ) -> None:
        index = np.zeros(len(l1), np.int64) if input_index is None else np.asarray(input_index, np.int64)
        if np.any(index != index[0]):
            raise ValueError("a RaggedProbeBank's probes all read one input")
        super().__init__(n_features, n_classes, l1, l2, **kwargs)  # unmasked, one group; re-laid out below
        self.register_buffer("feature_order", torch.as_tensor(np.asarray(feature_order, np.int64)))
        self.widths = (np.asarray(feature_mask) != 0).sum(axis=1)
        self._input = int(index[0])
        self.ordered_inputs = bool(ordered_inputs)  # batches come with their features in feature_order already
        P, D, C = len(self.widths), n_features, n_classes
        # Every probe's weights and Adam moments (P, D, C) in ``feature_order`` and biases (P, C): where a
        # probe's state is kept while the tier layout changes (read back from the flat vectors then).
        self._state = {name: torch.zeros(P, D, C) for name in ("weight", "m", "v")}
        self._state.update({name: torch.zeros(P, C) for name in ("bias", "m_bias", "v_bias")})
        self._pack(np.arange(P))

    @property
    def n_probes(self) -> int:
        return self.l1.shape[0]

    def _pack(self, probes: np.ndarray) -> None:
        """Lay out ``probes`` (the ones still training) in tiers of one flat weight vector, from ``_state``."""
        C = self.hparams.n_classes
        device, dtype = self._state["weight"].device, self._state["weight"].dtype
        l2_factor = self.l2 if self.hparams.neurox_loss else 2 * self.l2
        self._training = probes
        self._tiers: list[_Tier] = []
        blocks: dict[str, list[torch.Tensor]] = {name: [] for name in ("weight", "m", "v", "mask", "l1", "l2")}
        offset = start = 0
        for tier in _tiers(self.widths[probes], TIER_COST):
            ids = torch.as_tensor(probes[tier], device=device)
            width, S = int(self.widths[probes[tier]].max()), len(tier)
            self._tiers.append(_Tier(ids, width, S, offset, offset + width * S * C, start))
            for name in ("weight", "m", "v"):  # tier block (width, S, C), flattened
                blocks[name].append(self._state[name][ids, :width].transpose(0, 1).reshape(-1))
            widths = torch.as_tensor(self.widths[probes[tier]], device=device)
            inside = torch.arange(width, device=device)[:, None] < widths[None, :]
            blocks["mask"].append(inside[..., None].expand(width, S, C).reshape(-1).to(dtype))
            blocks["l1"].append(self.l1[ids][None, :, None].expand(width, S, C).reshape(-1))
            blocks["l2"].append(l2_factor[ids][None, :, None].expand(width, S, C).reshape(-1))
            offset += width * S * C
            start += S
        self._packed = torch.cat([tier.ids for tier in self._tiers])
        self._width = max(tier.width for tier in self._tiers)
        self.weight = torch.nn.Parameter(torch.cat(blocks["weight"]))
        self.adam_m_weight, self.adam_v_weight = torch.cat(blocks["m"]), torch.cat(blocks["v"])
        self.bias = torch.nn.Parameter(self._state["bias"][self._packed].clone())
        self.adam_m_bias = self._state["m_bias"][self._packed].clone()
        self.adam_v_bias = self._state["v_bias"][self._packed].clone()
        self._mask_full, self._l1_full, self._l2_full = torch.cat(blocks["mask"]), torch.cat(blocks["l1"]), torch.cat(blocks["l2"])
        self._scratch = torch.empty_like(self.weight)
        # Per step, each tier's matmuls read a slice of the weights and the biases and write a slice of the
        # gradient: those slices, made once per layout, save the Python-level slicing of every step.
        self._grad_weight = torch.empty_like(self.weight)
        self._blocks = self._weight_blocks(self.weight.detach(), self.bias.detach())
        self._grad_blocks = [  # columns [first, last) of the residual -> the tier's gradient block
            (t.start * C, (t.start + t.size) * C, self._grad_weight[t.offset:t.end].view(t.width, t.size * C))
            for t in self._tiers]

    def _unpack(self, names: Sequence[str] = ("weight", "m", "v")) -> None:
        """Write the flat vectors of the probes in training back into ``_state``."""
        C = self.hparams.n_classes
        flats = {"weight": self.weight, "m": self.adam_m_weight, "v": self.adam_v_weight}
        with torch.no_grad():
            for tier in self._tiers:
                for name in names:
                    block = flats[name][tier.offset:tier.end].view(tier.width, tier.size, C)
                    self._state[name][tier.ids, :tier.width] = block.transpose(0, 1)
            for name, tensor in (("bias", self.bias), ("m_bias", self.adam_m_bias), ("v_bias", self.adam_v_bias)):
                self._state[name][self._packed] = tensor

    def _apply(self, fn, recurse=True):
        """As :meth:`ProbeBank._apply`, and the per-probe state too; the flat layout (its tier index, mask,
        gradient buffer and the per-tier views of the weights and gradients, which views of the old tensors
        would not follow) is laid out again, from the moved state, for the same probes."""
        if not hasattr(self, "_tiers"):  # still in __init__
            return super()._apply(fn, recurse)
        self._unpack()
        super()._apply(fn, recurse)
        self._state = {name: fn(tensor) for name, tensor in self._state.items()}
        self._pack(self._training)
        return self

    def _frozen_some(self) -> None:
        self._unpack()
        self._pack(torch.nonzero(self.active).view(-1).cpu().numpy())

    def _ordered(self, X: torch.Tensor) -> torch.Tensor:
        """The (B, D_max) columns that the tiers read, in ``feature_order``, from a (G_in, B, D) batch."""
        if self.ordered_inputs:
            return X[self._input, :, :self._width]
        return X[self._input].index_select(1, self.feature_order[:self._width])

    def _weight_blocks(self, flat: torch.Tensor, bias: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per tier: its width, its weights as (width, size * C) and its biases (size * C,)."""
        C = self.hparams.n_classes
        bias = bias.view(-1)
        return [(t.width, flat[t.offset:t.end].view(t.width, t.size * C), bias[t.start * C:(t.start + t.size) * C])
                for t in self._tiers]

    def _tier_logits(self, Xo: torch.Tensor, blocks: list[tuple[int, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Logits (B, P_training, C) of the probes in training, in tier order, from :meth:`_weight_blocks`."""
        parts = [torch.addmm(bias, Xo[:, :width], weight) for width, weight, bias in blocks]
        logits = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return logits.view(Xo.shape[0], -1, self.hparams.n_classes)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Logits (1, B, P_training, C) of the probes in training (tier order), for a (G_in, B, D) batch."""
        return self._tier_logits(self._ordered(X), self._weight_blocks(self.weight * self._mask_full, self.bias))[None]

    def _tier_views(self, flat: torch.Tensor):
        C = self.hparams.n_classes
        for tier in self._tiers:
            yield tier.ids, flat[tier.offset:tier.end].view(tier.width, tier.size, C)

    def penalty(self) -> torch.Tensor:
        """Per-probe penalty of the probes in training (tier order)."""
        terms = []
        for ids, W in self._tier_views(self.weight * self._mask_full):
            l2 = torch.linalg.vector_norm(W, dim=(0, 2)) if self.hparams.neurox_loss else W.square().sum(dim=(0, 2))
            terms.append(self.l1[ids] * W.abs().sum(dim=(0, 2)) + self.l2[ids] * l2)
        return torch.cat(terms)

    def effective_weight(self) -> torch.Tensor:
        """Every probe's weights (P, D, C) in the input's feature order (frozen probes: as when dropped)."""
        self._unpack(("weight",))
        weight = torch.empty_like(self._state["weight"])
        weight[:, self.feature_order] = self._state["weight"]
        return weight

    def effective_bias(self) -> torch.Tensor:
        bias = self._state["bias"].clone()
        bias[self._packed] = self.bias.detach()
        return bias

    def _probe_cross_entropy(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = self.bias.new_full((self.n_probes,), float("inf"))  # frozen probes: no longer evaluated (never improve)
        ce[self._packed] = self._cross_entropy(self(X), y)
        return ce

    @torch.no_grad()
    def gradients(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form gradients (see :meth:`ProbeBank.gradients`) for the flat weights and the biases."""
        Xo = self._ordered(X)
        B, C = y.shape[0], self.hparams.n_classes
        residual = torch.softmax(self._tier_logits(Xo, self._blocks), dim=-1)  # (B, P_training, C)
        P = residual.shape[1]
        residual.scatter_add_(2, y.view(B, 1, 1).expand(B, P, 1), residual.new_full((1, 1, 1), -1.0).expand(B, P, 1))
        residual.div_(B)
        columns = residual.view(B, P * C)
        grad_weight = self._grad_weight  # filled in full below; consumed by the update before the next step
        for (width, _, _), (first, last, out) in zip(self._blocks, self._grad_blocks):
            torch.mm(Xo[:, :width].t(), columns[:, first:last], out=out)
        grad_bias = residual.sum(dim=0)
        W = self.weight
        grad_weight.mul_(self._mask_full)  # masked weights stay 0, so their penalty terms are 0 already
        grad_weight.addcmul_(torch.sign(W, out=self._scratch), self._l1_full)
        if self.hparams.neurox_loss:  # d ||W||_F = W / ||W||_F per probe (0 at W = 0)
            for (ids, Wt), (_, grad) in zip(self._tier_views(W), self._tier_views(grad_weight)):
                norm = torch.linalg.vector_norm(Wt, dim=(0, 2), keepdim=True)
                grad.add_(Wt / norm.clamp_min(torch.finfo(W.dtype).tiny) * self.l2[ids].view(1, -1, 1))
        else:
            grad_weight.addcmul_(W, self._l2_full)
        return grad_weight, grad_bias


# Whether train_probe_bank trains nested masks as a RaggedProbeBank (tests switch it off to compare).
RAGGED = True


def _available_accelerators() -> list[str]:
    """The accelerator names (of TrainingOptions') that can run on this machine."""
    from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator

    cuda, mps = CUDAAccelerator.is_available(), MPSAccelerator.is_available()
    return ["auto", "cpu"] + (["gpu"] if cuda or mps else []) + (["cuda"] if cuda else []) + (["mps"] if mps else [])


def _placement(options: TrainingOptions) -> dict:
    """The Trainer's ``accelerator`` and ``devices`` for ``options``: one device, always (see the module's
    docstring), ``devices=[device]`` when one is named. Lightning's CPU accelerator takes a process count,
    not a device index, so the CPU (named, or what "auto" gives on a machine without a GPU) is
    ``devices=1``, and device 0 is its only index."""
    accelerator, device = options.accelerator, options.device
    if device is None:
        return {"accelerator": accelerator, "devices": 1}
    if accelerator == "cpu" or (accelerator == "auto" and _available_accelerators() == ["auto", "cpu"]):
        if device != 0:
            raise ValueError(f"device {device} asked for, but accelerator {accelerator!r} trains on the CPU here, "
                             "which has one device (0, or None)")
        return {"accelerator": "cpu", "devices": 1}
    return {"accelerator": accelerator, "devices": [device]}


def train_probe_bank(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    l1: Sequence[float],
    l2: Sequence[float],
    *,
    feature_mask: Optional[np.ndarray] = None,
    input_index: Optional[Sequence[int]] = None,
    options: Optional[TrainingOptions] = None,
) -> ProbeBank:
    """Train a :class:`ProbeBank` on standardised (G, N, D) arrays and return it (best weights in ``best_*``),
    on the CPU whatever device trained it; ``options``: how and where (default
    :class:`~probing.options.TrainingOptions`' defaults). An accelerator or device this machine does not
    have is a ValueError naming it and what is available."""
    options = TrainingOptions.coerce(options)
    placement = _placement(options)
    # No pl.seed_everything / deterministic=True: both change the caller's global state. Nothing here
    # draws from a global RNG (zero start, batch order from a generator seeded with ``seed``), and the
    # CPU kernels used are deterministic.
    order = None
    one_input = input_index is None or len(set(np.asarray(input_index).tolist())) == 1
    if RAGGED and feature_mask is not None and one_input:
        order = nested_feature_order(feature_mask)
    extra = {}
    if order is not None:  # features reordered once here, not gathered per step (the bank reads prefixes)
        X_train, X_val = np.take(X_train, order, axis=-1), np.take(X_val, order, axis=-1)
        extra = {"feature_order": order, "ordered_inputs": True}
    data = ArrayDataModule(X_train, y_train, X_val, y_val, batch_size=options.batch_size, seed=options.seed)
    model = (ProbeBank if order is None else RaggedProbeBank)(
        X_train.shape[-1],
        n_classes,
        l1,
        l2,
        feature_mask=feature_mask,
        input_index=input_index,
        **extra,
        batch_size=options.batch_size,
        lr=options.lr,
        patience=options.patience,
        min_delta=options.min_delta,
        neurox_loss=options.neurox_loss,
    )
    quiet = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's CPU/worker/tip notices say nothing about the probes
            try:
                trainer = pl.Trainer(
                    **placement,
                    max_epochs=options.max_epochs,
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                    num_sanity_val_steps=0,
                )
            except (MisconfigurationException, RuntimeError) as error:  # RuntimeError: a CUDA that fails to start
                # an accelerator or device this machine lacks, as one line in the options' terms (Lightning's
                # own word, several lines in its argument names, only where the accelerator is there)
                available = _available_accelerators()
                why = ("not available on this machine" if options.accelerator not in available
                       else " ".join(str(error).split()))
                device = "" if options.device is None else f" device {options.device}"
                raise ValueError(f"cannot train on accelerator {options.accelerator!r}{device}: {why} "
                                 f"(available here: {', '.join(available)})") from None
            trainer.fit(model, datamodule=data)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
        # The bank and the trainer refer to each other (a cycle that only the garbage collector frees), and the
        # trainer, through its loaders, to the data, whose tensors share the caller's arrays: let go of here.
        for rows in (data.train, data.val):
            rows.X = rows.y = None
    if model.device.type != "cpu":  # Lightning's teardown moves it back already; callers read numpy from it
        model.cpu()
    return model
