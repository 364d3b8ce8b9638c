"""Utterance-level pooling over the valid frames of a padded batch, on the encoder's device.

Only pooled vectors leave the device; padded frames never enter a statistic, so an utterance's vector
does not depend on what it was batched with.
"""
from __future__ import annotations

import torch
from torch import Tensor

from speechprobe.encoders.choices import POOLINGS


def pooled_dim(dim: int, pooling: str) -> int:
    return 2 * dim if pooling == "meanstd" else dim


def pool(states: Tensor, lengths: Tensor, pooling: str = "mean") -> Tensor:
    """(batch, frames, dim) -> (batch, dim), or (batch, 2 dim) for meanstd (mean then std)."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
    frames = states.shape[1]
    mask = (torch.arange(frames, device=states.device)[None, :] < lengths[:, None].to(states.device))
    states = states.float()  # statistics in float32 even under bf16 autocast
    if pooling == "max":
        return states.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
    weights = mask[..., None].float()
    count = weights.sum(dim=1).clamp_min(1.0)
    mean = (states * weights).sum(dim=1) / count
    if pooling == "mean":
        return mean
    variance = (((states - mean[:, None]) ** 2) * weights).sum(dim=1) / count
    return torch.cat([mean, variance.clamp_min(0.0).sqrt()], dim=1)
