"""Decoding audio into the float32 mono waveforms every encoder takes.

Everything goes through libsndfile (`soundfile`): it reads WAV/FLAC/OGG/MP3 and the telephone codecs of
the synthetic corpus from paths and from memory, so Hugging Face audio bytes need no torchcodec.
Bad files fail here, early, with one line naming the file, instead of as NaNs in a probe weeks later.
"""

from __future__ import annotations

import io
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from speechprobe.tasks.errors import CorpusError

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Peak amplitude below which a file counts as silent: it is below one 16-bit LSB (3.05e-5), so only
#: digital silence (or a near-silent float file) trips it, never quiet but real speech.
SILENCE_PEAK = 1e-5
#: Missing audio tolerated before a file counts as truncated: the larger of this many seconds and
#: `TRUNCATION_FRACTION` of the length its header (or the metadata) promises. Whole files cut short
#: miss far more; the slack absorbs codec padding and durations rounded in a metadata table.
TRUNCATION_SLACK_S = 0.02
TRUNCATION_FRACTION = 0.005
#: WAV data-chunk sizes that mean "unknown length" (streamed or RF64 files), never truncation.
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)


def read_audio(source: AudioSource, sample_rate: int, *, name: str | None = None) -> np.ndarray:
    """Decode `source` (path, bytes or file-like) to float32 mono at `sample_rate`.

    Channels are averaged (encoders are mono); resampling is polyphase, so rates that are not integer
    multiples (22.05 kHz -> 16 kHz) keep their spectrum. Raises `CorpusError` naming `name` (or the path)
    for a missing, undecodable, truncated, empty or silent file, or one with NaN/Inf samples.
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


def check_length(
    held_s: float,
    promised_s: float,
    label: str,
    *,
    what: str = "header",
    slack_s: float = TRUNCATION_SLACK_S,
    fraction: float = TRUNCATION_FRACTION,
) -> None:
    """`CorpusError` ("<label>: truncated: header says 4.70 s, file holds 0.03 s") when a file holds
    less audio than its header or metadata promises (`what` names the promise) by more than the larger
    of `slack_s` and `fraction` of the promise."""
    if math.isfinite(promised_s) and promised_s - held_s > max(slack_s, fraction * promised_s):
        raise CorpusError(f"{label}: truncated: {what} says {promised_s:.2f} s, file holds {held_s:.2f} s")


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
    """Read every frame as float32 and average channels; one-line errors for what libsndfile rejects
    and for files holding less audio than their header says (truncated downloads and copies)."""
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
        declared = _declared_frames(source)
        with sf.SoundFile(source) as f:
            # libsndfile clamps a WAV/AIFF's frame count to the bytes present, so the header's own
            # count is parsed above; for other formats (FLAC, MP3 with a Xing header, Ogg) its count is
            # what the stream promises.
            promised = declared if declared is not None else f.frames
            data = f.read(f.frames, dtype="float32", always_2d=True)
            native = int(f.samplerate)
    except Exception as exc:  # libsndfile, OSError (directories, permissions), bad file-likes
        raise CorpusError(f"{label}: cannot decode audio ({_reason(exc)})") from None
    if promised and promised > len(data) and native > 0:
        check_length(len(data) / native, promised / native, label)
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0], native


def _declared_frames(source: AudioSource) -> int | None:
    """Frames a WAV or AIFF header declares, when the file holds fewer bytes than that (else None).

    Reads only chunk headers, and leaves a file-like where it was; anything unreadable or not
    WAV/AIFF is None (libsndfile then reports what it finds)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return _scan_chunks(f)
        except OSError:
            return None
    try:
        start = source.tell()
    except (AttributeError, OSError, ValueError):
        return None
    try:
        return _scan_chunks(source)
    except (OSError, ValueError):
        return None
    finally:
        try:
            source.seek(start)
        except (OSError, ValueError):
            pass


def _scan_chunks(f: BinaryIO) -> int | None:
    start = f.tell()
    head = f.read(40)
    if len(head) < 12:
        return None
    end = f.seek(0, os.SEEK_END)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        f.seek(start + 12)
        return _wav_declared(f, end, "<" if head[:4] != b"RIFX" else ">")
    if head[:4] == b"riff" and head[24:28] == b"wave":  # Sony Wave64: GUID ids, 64-bit sizes
        f.seek(start + 40)
        return _wav_declared(f, end, "<", wide=True)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        f.seek(start + 12)
        return _aiff_declared(f, end)
    return None


def _chunks(f: BinaryIO, end: int, order: str, wide: bool = False):
    """(id, declared size, offset of the chunk's data) for each chunk, stopping at the file's end.
    `wide`: Wave64 chunks (16-byte GUID whose first 4 bytes name it, a 64-bit size counting the
    24-byte header, 8-byte alignment)."""
    pos = f.tell()
    header_size = 24 if wide else 8
    for _ in range(10_000):  # a malformed file cannot loop forever
        if pos + header_size > end:
            return
        f.seek(pos)
        header = f.read(header_size)
        if len(header) < header_size:
            return
        if wide:
            cid, size = header[:4], struct.unpack("<Q", header[16:])[0] - 24
            if size < 0:
                return
            yield cid, size, pos + 24
            pos += 24 + size + (-size % 8)
        else:
            cid, size = header[:4], struct.unpack(order + "I", header[4:])[0]
            yield cid, size, pos + 8
            pos += 8 + size + (size & 1)


def _wav_declared(f: BinaryIO, end: int, order: str, wide: bool = False) -> int | None:
    block_align = fact = ds64_data = None
    for cid, size, offset in _chunks(f, end, order, wide):
        if cid == b"ds64" and size >= 16:  # RF64: the real data size, where the data chunk says 0xFFFFFFFF
            f.seek(offset)
            raw = f.read(16)
            ds64_data = struct.unpack("<Q", raw[8:16])[0] if len(raw) == 16 else None
        elif cid == b"fmt " and size >= 14:
            f.seek(offset)
            fmt = f.read(16)
            if len(fmt) >= 14:
                tag, block_align = struct.unpack(order + "H", fmt[:2])[0], struct.unpack(order + "H", fmt[12:14])[0]
                if tag not in (1, 3, 6, 7, 0xFFFE):  # PCM, float, A-law, u-law, extensible: fixed frames
                    block_align = None  # compressed (GSM, ADPCM): frames come from the fact chunk
        elif cid == b"fact" and size >= 4:
            f.seek(offset)
            raw = f.read(4)
            fact = struct.unpack(order + "I", raw)[0] if len(raw) == 4 else None
        elif cid == b"data":
            if size == 0xFFFFFFFF and ds64_data:
                size = ds64_data
            if size in _UNKNOWN_DATA_SIZES or offset + size <= end:
                return None  # complete, or a streamed file of unknown length
            if block_align:
                return size // block_align
            return fact or None
    return None


def _aiff_declared(f: BinaryIO, end: int) -> int | None:
    frames = None
    for cid, size, offset in _chunks(f, end, ">"):
        if cid == b"COMM" and size >= 6:
            f.seek(offset)
            raw = f.read(6)
            if len(raw) == 6:
                frames = struct.unpack(">I", raw[2:6])[0]
        elif cid == b"SSND":
            return frames if frames and offset + size > end else None
    return None


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
