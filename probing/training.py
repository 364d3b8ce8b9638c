"""Many linear softmax probes trained at once, as one batched tensor program (PyTorch Lightning).

:class:`ProbeBank` holds ``P`` probes as one weight tensor ``W`` of shape (P, D, C) and biases ``b``
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
exactly what training it alone with the same rule would give. Training stops when every probe is
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


class ArrayDataModule(pl.LightningDataModule):
    """In-memory train/validation arrays: X of shape (G, N, D) float32 (G inputs of equal width), y (N,) ints.

    The training order is one seeded permutation per epoch, shared by every probe (they all see the
    same mini-batches in the same order). ``batch_size=None`` means full batch.
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

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler = BatchSampler(
            RandomSampler(range(len(self.train)), generator=generator),
            self._size(len(self.train)),
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
        lr: float = 3e-3,
        patience: Optional[int] = 5,
        neurox_loss: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["feature_mask", "input_index"])
        l1_t = torch.as_tensor(np.asarray(l1, dtype=np.float32))
        l2_t = torch.as_tensor(np.asarray(l2, dtype=np.float32))
        P = l1_t.shape[0]
        mask = np.ones((P, n_features), np.float32) if feature_mask is None else np.asarray(feature_mask, np.float32)
        index = np.zeros(P, np.int64) if input_index is None else np.asarray(input_index, np.int64)
        self.register_buffer("l1", l1_t)
        self.register_buffer("l2", l2_t)
        self.register_buffer("mask", torch.as_tensor(mask)[:, :, None])  # (P, D, 1)
        self.register_buffer("input_index", torch.as_tensor(index))
        self.weight = torch.nn.Parameter(torch.zeros(P, n_features, n_classes))
        self.bias = torch.nn.Parameter(torch.zeros(P, n_classes))
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
        return self.weight.shape[0]

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Logits (P, B, C) for a (G, B, D) batch."""
        inputs = X.index_select(0, self.input_index)  # (P, B, D)
        return torch.baddbmm(self.bias[:, None, :], inputs, self.effective_weight())

    def _cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-probe *summed* cross-entropy over the batch, shape (P,)."""
        P, B, C = logits.shape
        ce = F.cross_entropy(logits.reshape(P * B, C), y.repeat(P), reduction="none")
        return ce.reshape(P, B).sum(dim=1)

    def penalty(self) -> torch.Tensor:
        W = self.effective_weight()
        l1 = W.abs().sum(dim=(1, 2))
        if self.hparams.neurox_loss:
            l2 = torch.linalg.vector_norm(W, dim=(1, 2))
        else:
            l2 = W.square().sum(dim=(1, 2))
        return self.l1 * l1 + self.l2 * l2

    def training_step(self, batch, batch_idx):
        X, y = batch
        per_probe = self._cross_entropy(self(X), y) / y.shape[0] + self.penalty()
        return per_probe.sum()

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
                improved = self.active & (loss < self.best_loss)
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
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


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
        lr=lr,
        patience=patience,
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
