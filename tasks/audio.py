"""Decoding audio into the float32 mono waveforms every encoder takes.

Everything goes through libsndfile (`soundfile`): it reads WAV/FLAC/OGG/MP3 and the telephone codecs of
the synthetic corpus from paths and from memory, so Hugging Face audio bytes need no torchcodec.
Bad files fail here, early, with one line naming the file, instead of as NaNs in a probe weeks later.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tasks.errors import CorpusError

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Peak amplitude below which a file counts as silent: it is below one 16-bit LSB (3.05e-5), so only
#: digital silence (or a near-silent float file) trips it, never quiet but real speech.
SILENCE_PEAK = 1e-5


def read_audio(source: AudioSource, sample_rate: int, *, name: str | None = None) -> np.ndarray:
    """Decode `source` (path, bytes or file-like) to float32 mono at `sample_rate`.

    Channels are averaged (encoders are mono); resampling is polyphase, so rates that are not integer
    multiples (22.05 kHz -> 16 kHz) keep their spectrum. Raises `CorpusError` naming `name` (or the path)
    for a missing, undecodable, empty or silent file, or one with NaN/Inf samples.
    """
    target = _check_rate(sample_rate)
    wave, native = decode_audio(source, name=name)
    return resample(wave, native, target)


def decode_audio(source: AudioSource, *, name: str | None = None) -> tuple[np.ndarray, int]:
    """float32 mono at the file's own rate, checked as in `read_audio`: for callers that resample
    batched on their own device (extraction)."""
    label = name if name is not None else _default_name(source)
    wave, native = _decode(source, label)
    _check_samples(wave, label)
    return wave, native


def audio_duration(source: AudioSource, *, name: str | None = None) -> float:
    """Seconds of audio from the file header alone (no decoding)."""
    label = name if name is not None else _default_name(source)
    try:
        return float(sf.info(source).duration)
    except Exception as exc:  # libsndfile, OSError
        raise CorpusError(f"{label}: cannot read audio header ({_reason(exc)})") from None


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D waveform with `resample_poly` (up/down reduced by their gcd); float32 out."""
    orig, target = _check_rate(orig_sr), _check_rate(target_sr)
    wave = np.asarray(wave, dtype=np.float32)
    if orig == target:
        return wave
    g = math.gcd(orig, target)
    return resample_poly(wave, target // g, orig // g).astype(np.float32, copy=False)


def _check_rate(rate: int) -> int:
    if isinstance(rate, bool) or not float(rate).is_integer() or rate <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {rate!r}")
    return int(rate)


def _default_name(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<audio bytes>"
    return str(getattr(source, "name", "<audio stream>"))


def _decode(source: AudioSource, label: str) -> tuple[np.ndarray, int]:
    """Read every frame as float32 and average channels; one-line errors for what libsndfile rejects."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise CorpusError(f"{label}: no such audio file")
        if path.is_file() and path.stat().st_size == 0:
            raise CorpusError(f"{label}: empty file (0 bytes)")
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise CorpusError(f"{label}: empty file (0 bytes)")
        source = io.BytesIO(bytes(source))
    try:
        data, native = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile, OSError (directories, permissions), bad file-likes
        raise CorpusError(f"{label}: cannot decode audio ({_reason(exc)})") from None
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0], int(native)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())


def _check_samples(wave: np.ndarray, label: str) -> None:
    if wave.size == 0:
        raise CorpusError(f"{label}: empty audio (0 samples)")
    bad = int(np.count_nonzero(~np.isfinite(wave)))
    if bad:
        raise CorpusError(f"{label}: {bad} of {wave.size} samples are NaN or Inf")
    peak = float(np.max(np.abs(wave)))
    if peak < SILENCE_PEAK:
        raise CorpusError(f"{label}: silent audio (peak {peak:.2g} over {wave.size} samples)")
