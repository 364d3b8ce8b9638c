"""Batched band-limited resampling in torch, on the encoder's device.

A windowed-sinc polyphase filter applied as one strided conv1d over the whole padded batch: the same
algorithm as torchaudio's `functional.resample` (Hann-windowed sinc, 6 zero crossings, 0.99 roll-off),
written here because torchaudio pins its own torch. Rows are zero-padded on the right, and the filter
sees zeros past a row's end whether they come from batch padding or from the filter's own padding, so
a row's resampled samples do not depend on its batch.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

LOWPASS_ZERO_CROSSINGS = 6
ROLLOFF = 0.99


@lru_cache(maxsize=16)
def _kernel(orig: int, new: int) -> tuple[Tensor, int]:
    """(new, 1, taps) polyphase filters in float64 and the left padding `width` (rates already reduced)."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_ZERO_CROSSINGS * orig / base)
    index = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + index) * base
    t = t.clamp(-LOWPASS_ZERO_CROSSINGS, LOWPASS_ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / LOWPASS_ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    return sinc * window * (base / orig), width


def resampled_lengths(lengths: Tensor, orig: int, new: int) -> Tensor:
    """ceil(length * new / orig): every input sample's time is covered."""
    return torch.div(lengths * new + orig - 1, orig, rounding_mode="floor")


def resample_batch(waves: Tensor, lengths: Tensor, orig: int, new: int) -> tuple[Tensor, Tensor]:
    """(batch, samples) at `orig` Hz -> (batch, samples') at `new` Hz, with each row's new length."""
    if orig == new:
        return waves, lengths
    gcd = math.gcd(int(orig), int(new))
    orig_reduced, new_reduced = int(orig) // gcd, int(new) // gcd
    kernel, width = _kernel(orig_reduced, new_reduced)
    kernel = kernel.to(device=waves.device, dtype=waves.dtype)
    new_lengths = resampled_lengths(lengths, orig, new)
    mask = torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None].to(waves.device)
    padded = torch.nn.functional.pad(waves * mask, (width, width + orig_reduced))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig_reduced)
    out = out.transpose(1, 2).reshape(len(waves), -1)[:, : int(new_lengths.max())]
    valid = torch.arange(out.shape[1], device=out.device)[None, :] < new_lengths[:, None].to(out.device)
    return out * valid, new_lengths


def resample_rows(waves: Tensor, lengths: Tensor, rates: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """A padded batch whose rows may have different native rates -> every row at `target` Hz."""
    if bool((rates == target).all()):
        return waves, lengths
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for rate in rates.unique().tolist():
        rows = torch.nonzero(rates == rate)[:, 0]
        resampled, new_lengths = resample_batch(waves[rows], lengths[rows], int(rate), target)
        # Rows already at `target` come back at the batch's padded width, which a longer row at a
        # higher native rate sets: keep only up to their own longest row.
        parts.append((rows, resampled[:, : int(new_lengths.max())], new_lengths))
    width = max(int(part[2].max()) for part in parts)
    out = waves.new_zeros(len(waves), width)
    out_lengths = torch.zeros_like(lengths)
    for rows, resampled, new_lengths in parts:
        out[rows.to(out.device), : resampled.shape[1]] = resampled
        out_lengths[rows.to(lengths.device)] = new_lengths.to(lengths.device)
    return out, out_lengths
