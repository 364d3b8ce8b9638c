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

Inputs here are already standardised float arrays; :mod:`probing.probe` does the checking and the
standardisation. This module knows nothing about encoders or tasks.
"""
from __future__ import annotations

import logging
import warnings
from typing import Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = ["ArrayDataModule", "ProbeBank", "train_probe_bank"]


class _Rows(Dataset):
    """Rows of a (G, N, D) feature tensor and their labels, indexed by a whole batch of row ids at once."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return self.y.shape[0]

    def __getitem__(self, index):  # index: a list of row ids (a BatchSampler batch)
        index = torch.as_tensor(index, dtype=torch.long)
        return self.X[:, index], self.y[index]


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
        batch_size: Optional[int] = 64,
        seed: int = 0,
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
        batch_size: Optional[int] = 64,
        lr: float = 3e-3,
        patience: Optional[int] = 5,
        min_delta: float = 3e-3,
        neurox_loss: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["feature_mask", "input_index"])
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
        # Adam's moments
        for name in ("weight", "bias"):
            self.register_buffer(f"adam_m_{name}", torch.zeros_like(getattr(self, name)))
            self.register_buffer(f"adam_v_{name}", torch.zeros_like(getattr(self, name)))
        self.adam_steps = 0
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

    def _grouped_weight(self) -> torch.Tensor:
        # The update never moves a masked weight off 0 (its gradient is masked); the product keeps
        # autograd's view of the loss (``training_loss``) right as well.
        return self.weight * self.mask if self.masked else self.weight

    def effective_weight(self) -> torch.Tensor:
        """Every probe's weights, (P, D, C), masked features at exactly 0."""
        G, D, S, C = self.weight.shape
        return self._grouped_weight().transpose(1, 2).reshape(G * S, D, C)

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
        l1, l2 = self.l1.view(G, 1, S, 1), self.l2.view(G, 1, S, 1)  # per probe, over the grouped weights
        grad_weight.add_(W.sign().mul_(l1))
        if self.hparams.neurox_loss:  # d ||W||_F = W / ||W||_F (0 at W = 0, as autograd's subgradient)
            norm = torch.linalg.vector_norm(W, dim=(1, 3), keepdim=True)
            grad_weight.add_(W / norm.clamp_min(torch.finfo(W.dtype).tiny) * l2)
        else:
            grad_weight.add_(W * (2 * l2))
        if self.masked:
            grad_weight.mul_(self.mask)
        return grad_weight, grad_bias

    @torch.no_grad()
    def _adam_step(self, grad_weight: torch.Tensor, grad_bias: torch.Tensor) -> None:
        """torch.optim.Adam's update (default betas and eps), written out: see :meth:`gradients`."""
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.adam_steps += 1
        correction1 = 1 - beta1 ** self.adam_steps
        correction2_sqrt = (1 - beta2 ** self.adam_steps) ** 0.5
        for name, grad in (("weight", grad_weight), ("bias", grad_bias)):
            m, v = getattr(self, f"adam_m_{name}"), getattr(self, f"adam_v_{name}")
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denominator = (v.sqrt() / correction2_sqrt).add_(eps)
            getattr(self, name).addcdiv_(m, denominator, value=-self.hparams.lr / correction1)

    def training_step(self, batch, batch_idx):
        X, y = batch
        size = y.shape[0] if self.hparams.batch_size is None else int(self.hparams.batch_size)
        for start in range(0, y.shape[0], size):
            self._adam_step(*self.gradients(X[:, start:start + size], y[start:start + size]))

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_n = None, 0

    def validation_step(self, batch, batch_idx):
        X, y = batch
        ce = self._cross_entropy(self(X), y).detach().double()
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
            self.best_bias[improved] = self.bias[improved]
            if self.hparams.patience is not None:
                stalled = self.active & ~improved
                self.wait[improved] = 0
                self.wait[stalled] += 1
                self.active &= self.wait < int(self.hparams.patience)
                if not bool(self.active.any()):
                    self.trainer.should_stop = True

    def configure_optimizers(self):
        return None  # the Adam update is written out in _adam_step (manual optimisation)


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
    max_epochs: int = 100,
    batch_size: Optional[int] = 64,
    lr: float = 3e-3,
    patience: Optional[int] = 5,
    min_delta: float = 3e-3,
    seed: int = 0,
    neurox_loss: bool = False,
) -> ProbeBank:
    """Train a :class:`ProbeBank` on standardised (G, N, D) arrays and return it (best weights in ``best_*``)."""
    # No pl.seed_everything / deterministic=True: both change the caller's global state. Nothing here
    # draws from a global RNG (zero start, batch order from a generator seeded with ``seed``), and the
    # CPU kernels used are deterministic.
    data = ArrayDataModule(X_train, y_train, X_val, y_val, batch_size=batch_size, seed=seed)
    model = ProbeBank(
        X_train.shape[-1],
        n_classes,
        l1,
        l2,
        feature_mask=feature_mask,
        input_index=input_index,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        min_delta=min_delta,
        neurox_loss=neurox_loss,
    )
    quiet = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's CPU/worker/tip notices say nothing about the probes
            trainer = pl.Trainer(
                accelerator="cpu",
                devices=1,
                max_epochs=max_epochs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
            )
            trainer.fit(model, datamodule=data)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return model
