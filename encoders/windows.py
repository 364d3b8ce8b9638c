"""Long audio in windows: an utterance longer than the encoder's window is encoded window by window, and its
layers' frames are joined again, so pooling sees every real frame of the whole recording.

Whisper takes at most 30 s (its positional table ends there); other encoders take any length but their
memory grows with it (attention: with its square), so a window can be set for them too. The windows of an
utterance are of equal length (`ceil(n / k)` samples for the `k = ceil(n / window)` windows), so none is a
sliver shorter than the encoder's receptive field, and a clip of exactly k windows is cut where one expects.
Frames do not overlap: context is lost at each cut (as in Whisper's own long-form transcription), which is
the price of a bounded input; the README says so.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from speechprobe.encoders.base import EncoderOutput, SpeechEncoder


def window_bounds(n_samples: int, window: int) -> list[tuple[int, int]]:
    """(start, end) sample bounds of the equal windows an utterance of `n_samples` is cut into."""
    if window < 1:
        raise ValueError(f"a window must be at least 1 sample, got {window}")
    count = max(1, math.ceil(n_samples / window))
    size = math.ceil(n_samples / count)
    return [(start, min(n_samples, start + size)) for start in range(0, n_samples, size)]


def effective_window(encoder: SpeechEncoder, window_seconds: Optional[float]) -> Optional[int]:
    """The window in samples: the encoder's own limit (`max_samples`), or the user's, whichever is shorter."""
    limits = [int(getattr(encoder, "max_samples", None) or 0)]
    if window_seconds is not None:
        if not window_seconds > 0:
            raise ValueError(f"a window must be longer than 0 s, got {window_seconds}")
        limits.append(int(round(window_seconds * encoder.sample_rate)))
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


def encode(encoder: SpeechEncoder, waves: Tensor, lengths: Tensor, window: Optional[int],
           batch_size: Optional[int] = None) -> EncoderOutput:
    """`encoder(waves, lengths)`, with every row longer than `window` encoded in windows and its frames joined
    (in order) per layer. Windows go through the encoder `batch_size` at a time (default: as many as rows),
    so memory stays that of one batch of windows however long a recording is."""
    if window is None or int(lengths.max()) <= window:
        return encoder(waves, lengths)
    pieces = [(row, start, end) for row, n in enumerate(lengths.tolist()) for start, end in window_bounds(int(n), window)]
    step = batch_size or len(lengths)
    states: list[list[Tensor]] = [[] for _ in encoder.layer_names]  # per layer, per piece: (frames, dim)
    for first in range(0, len(pieces), step):
        chunk = pieces[first:first + step]
        piece_lengths = torch.tensor([end - start for _, start, end in chunk], dtype=torch.long)
        batch = waves.new_zeros(len(chunk), int(piece_lengths.max()))
        for i, (row, start, end) in enumerate(chunk):
            batch[i, : end - start] = waves[row, start:end]
        output = encoder(batch, piece_lengths.to(waves.device))
        for layer, (layer_states, frames) in enumerate(zip(output.states, output.frame_lengths)):
            for i in range(len(chunk)):
                states[layer].append(layer_states[i, : int(frames[i])])
    joined, joined_lengths = [], []
    for layer_pieces in states:
        per_row: list[list[Tensor]] = [[] for _ in range(len(lengths))]
        for (row, _, _), frames in zip(pieces, layer_pieces):
            per_row[row].append(frames)
        rows = [torch.cat(parts) for parts in per_row]
        counts = torch.tensor([len(r) for r in rows], dtype=torch.long, device=waves.device)
        padded = rows[0].new_zeros(len(rows), int(counts.max()), rows[0].shape[-1])
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r
        joined.append(padded)
        joined_lengths.append(counts)
    return EncoderOutput(joined, joined_lengths)
