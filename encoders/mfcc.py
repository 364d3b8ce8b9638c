"""MFCCs in numpy: the non-neural baseline every probing result is read against.

Written here rather than pulled from librosa (not a dependency) because it is a dozen lines: a
25 ms / 10 ms Hann STFT, an HTK mel filterbank, log, orthonormal DCT-II.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.fft import dct

# The front end's settings, shared with the `mfcc` encoder (encoders/mfcc_encoder.py), which computes the same
# frames batched in torch.
SAMPLE_RATE, N_FFT, N_MFCC, N_MELS = 16000, 512, 20, 40
WINDOW_S, HOP_S = 0.025, 0.010
LOG_OFFSET = 1e-10  # log(power + LOG_OFFSET): silence stays finite


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 20.0, f_max: float | None = None) -> np.ndarray:
    """Triangular filters, (n_mels, n_fft // 2 + 1)."""
    f_max = f_max or sample_rate / 2
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    rising = (bins[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    falling = (edges[2:, None] - bins[None, :]) / (edges[2:, None] - edges[1:-1, None])
    return np.maximum(0.0, np.minimum(rising, falling))


def mfcc(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> np.ndarray:
    """(frames, n_mfcc) coefficients of a mono waveform."""
    win, hop, n_fft = int(WINDOW_S * sample_rate), int(HOP_S * sample_rate), N_FFT
    wave = np.asarray(wave, dtype=np.float64)
    if len(wave) < win:
        wave = np.pad(wave, (0, win - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, win)[::hop] * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2
    log_mel = np.log(power @ mel_filterbank(sample_rate, n_fft, n_mels).T + LOG_OFFSET)
    return dct(log_mel, type=2, norm="ortho", axis=1)[:, :n_mfcc]


def mfcc_mean(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mfcc: int = N_MFCC) -> np.ndarray:
    """The utterance-level MFCC-mean vector, the classic baseline representation."""
    return mfcc(wave, sample_rate, n_mfcc).mean(axis=0)
