"""`mfcc`: the MFCC front end as an encoder, the non-neural baseline every sweep is read against.

A probe that reads speaker, channel or dialect from a network's layer is only interesting where it does
better than the same probe on MFCCs; registering them as an encoder puts that baseline through the very
same extraction, store, pooling and probes as every model.

Frames are exactly `encoders.mfcc.mfcc`'s (25 ms Hann windows every 10 ms, not centred, 512-point FFT,
40 HTK mel bands, log, orthonormal DCT-II, the first 20 coefficients), computed batched in torch.
Layers, input side first:
- "mfcc": the coefficients, one frame per window lying wholly inside the real audio.
- "mfcc+deltas": coefficients, deltas and delta-deltas (HTK regression over +-2 frames), the classic
  ASR front end. At a row's ends the frames are repeated, within that row's real frames only, so the
  deltas never see batch padding.
Interventions (`encoders.interventions`): at "mfcc" before the deltas are taken (they see the change), at
"mfcc+deltas" on the stacked frames; real frames only.
No weights: the "weights hash" covers the window, filterbank and DCT matrix (buffers), so a store
extracted with other settings is never mistaken for this one.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dct
from torch import Tensor

from speechprobe.encoders.base import EncoderError, EncoderOutput, SpeechEncoder
from speechprobe.encoders.mfcc import HOP_S, LOG_OFFSET, N_FFT, N_MELS, N_MFCC, SAMPLE_RATE, WINDOW_S, mel_filterbank

NAME = "mfcc"
DELTA_WIDTH = 2  # HTK's default regression window (+-2 frames)


def weights_available() -> bool:
    """Always: there are no weights to install."""
    return True


def deltas(states: Tensor, frame_lengths: Tensor, width: int = DELTA_WIDTH) -> Tensor:
    """HTK regression deltas over time of (batch, frames, dim), each row's end frames repeated.

    Neighbours are clamped to [0, frame_lengths - 1] per row, so a row's deltas equal those of the
    row alone whatever padding follows it.
    """
    frames = states.shape[1]
    time = torch.arange(frames, device=states.device)[None, :]
    last = (frame_lengths.to(states.device) - 1).clamp_min(0)[:, None]

    def at(index: Tensor) -> Tensor:
        index = torch.minimum(index.clamp_min(0), last)
        return states.gather(1, index[..., None].expand(-1, -1, states.shape[2]))

    total = sum(n * (at(time + n) - at(time - n)) for n in range(1, width + 1))
    return total / (2 * sum(n * n for n in range(1, width + 1)))


class MFCCEncoder(SpeechEncoder):
    """MFCCs in torch rather than numpy: the encoder contract is batched tensors on the model's device."""

    feature_kind = "log-mel"
    supports_interventions = True

    def __init__(self, n_mfcc: int = N_MFCC, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        if not 0 < n_mfcc <= n_mels:
            raise EncoderError(f"{NAME}: n_mfcc must be between 1 and n_mels ({n_mels}), got {n_mfcc}")
        self.name = NAME
        self.sample_rate = sample_rate
        self.window_length, self.hop = int(WINDOW_S * sample_rate), int(HOP_S * sample_rate)
        self.feature_hop = self.hop
        self.min_samples = self.window_length  # one whole window of real audio
        self.layer_names = ("mfcc", "mfcc+deltas")
        self.layer_dims = (n_mfcc, 3 * n_mfcc)
        # np.hanning is the symmetric window encoders.mfcc uses; the DCT matrix is scipy's, applied by a matmul
        self.register_buffer("window", torch.from_numpy(np.hanning(self.window_length)).float())
        self.register_buffer("mel_filters", torch.from_numpy(mel_filterbank(sample_rate, N_FFT, n_mels)).float())
        self.register_buffer("dct_matrix", torch.from_numpy(dct(np.eye(n_mels), type=2, norm="ortho", axis=1)
                                                            [:, :n_mfcc].copy()).float())
        self.freeze()

    def frame_count(self, lengths: Tensor) -> Tensor:
        """Windows lying wholly inside `lengths` samples: 1 + (length - window) // hop."""
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        return 1 + torch.div(lengths - self.window_length, self.hop, rounding_mode="floor")

    def feature_frames(self, lengths: Tensor) -> Tensor:
        return self.frame_count(lengths)

    def input_features(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """(batch, frames, n_mels) log mel power; frames past a row's real ones hold padding, later zeroed."""
        self._check(waves, lengths)
        frames = waves.to(self.window.dtype).unfold(1, self.window_length, self.hop) * self.window
        power = torch.fft.rfft(frames, N_FFT).abs() ** 2
        return torch.log(power @ self.mel_filters.T + LOG_OFFSET)

    def forward_features(self, features: Tensor, lengths: Tensor, last_layer: int | None = None) -> EncoderOutput:
        counts = self.frame_count(lengths).to(features.device)
        real = torch.arange(features.shape[1], device=features.device)[None, :] < counts[:, None]
        coefficients = (features @ self.dct_matrix.to(features.dtype)) * real[..., None]
        coefficients = self._intervened(0, coefficients, counts)
        if last_layer is not None and last_layer < 1:
            return EncoderOutput(states=[coefficients], frame_lengths=[counts])
        delta = deltas(coefficients, counts)
        stacked = torch.cat([coefficients, delta, deltas(delta, counts)], dim=2) * real[..., None]
        stacked = self._intervened(1, stacked, counts)
        return EncoderOutput(states=[coefficients, stacked], frame_lengths=[counts, counts])

    def forward(self, waves: Tensor, lengths: Tensor) -> EncoderOutput:
        return self.forward_features(self.input_features(waves, lengths), lengths)

    def _check(self, waves: Tensor, lengths: Tensor) -> None:
        if waves.dim() != 2 or torch.as_tensor(lengths).shape != (waves.shape[0],):
            raise EncoderError(f"{self.name}: expected waves (batch, samples) and lengths (batch,), got "
                               f"{tuple(waves.shape)} and {tuple(torch.as_tensor(lengths).shape)}")
        if waves.shape[0] == 0:
            raise EncoderError(f"{self.name}: empty batch")
        lengths = torch.as_tensor(lengths)
        shortest, longest = int(lengths.min()), int(lengths.max())
        if shortest < self.min_samples:
            raise EncoderError(f"{self.name}: input of {shortest} samples is shorter than min_samples "
                               f"{self.min_samples} ({1000 * self.min_samples / self.sample_rate:.0f} ms)")
        if longest > waves.shape[1]:
            raise EncoderError(f"{self.name}: length {longest} exceeds the {waves.shape[1]} samples given")


def mfcc_encoder(**options: object) -> MFCCEncoder:
    """Registry constructor: 20 MFCCs (+ deltas) at 16 kHz, frozen (nothing to train, nothing to load)."""
    return MFCCEncoder(**options).freeze()
