"""Recording conditions: microphone colouring, room and converter noise, level, and the channels.

Every function draws its parameters from the `rng` it is given and returns them, so a file's exact
conditions are reproducible from the seed and written next to it in the metadata. Codecs run in memory
through soundfile's bundled libsndfile; filters, resampling and reverberation are numpy/scipy.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
import soundfile as sf
from scipy import signal

SAMPLE_RATE = 16000
NARROWBAND_RATE = 8000
Params = dict[str, object]


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)) + 1e-20))


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Unit-RMS noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n)
    return noise / rms(noise)


def _peaking_eq(f0: float, gain_db: float, q: float, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """The RBJ audio-EQ-cookbook peaking biquad."""
    a = 10 ** (gain_db / 40.0)
    w0 = 2 * np.pi * f0 / fs
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return b / den[0], den / den[0]


def microphone(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A random microphone and preamp: a high-pass corner and one resonance or dip."""
    highpass_hz = float(rng.uniform(40.0, 150.0))
    eq_hz, eq_db, eq_q = float(rng.uniform(300.0, 5000.0)), float(rng.uniform(-6.0, 6.0)), float(rng.uniform(0.7, 2.0))
    sos = signal.butter(2, highpass_hz, btype="highpass", fs=SAMPLE_RATE, output="sos")
    b, a = _peaking_eq(eq_hz, eq_db, eq_q, SAMPLE_RATE)
    out = signal.lfilter(b, a, signal.sosfilt(sos, wave))
    return out, {"mic_highpass_hz": highpass_hz, "mic_eq_hz": eq_hz, "mic_eq_db": eq_db, "mic_eq_q": eq_q}


def room_noise(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A noise floor under everything: synthetic speech's digital silence alone would reveal the channel."""
    level_db = float(rng.uniform(-66.0, -48.0))
    exponent = float(rng.uniform(0.0, 2.0))
    noise = colored_noise(len(wave), rng, exponent) * db_to_gain(level_db)
    return wave + noise, {"room_noise_dbfs": level_db, "room_noise_exponent": exponent}


def _codec_roundtrip(wave: np.ndarray, rate: int, **write_args: object) -> np.ndarray:
    """Encode and decode in memory; decoded length is cut or padded back to the input's."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), rate, **write_args)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float64")
    if decoded.ndim > 1:
        decoded = decoded.mean(axis=1)
    out = np.zeros(len(wave))
    out[: min(len(wave), len(decoded))] = decoded[: len(wave)]
    return out


def _narrowband(wave: np.ndarray, low_hz: float, high_hz: float, codec: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Band-limit, drop to 8 kHz, run the codec, come back to 16 kHz."""
    sos = signal.butter(6, [low_hz, high_hz], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = signal.resample_poly(signal.sosfilt(sos, wave), 1, SAMPLE_RATE // NARROWBAND_RATE)
    return signal.resample_poly(codec(narrow), SAMPLE_RATE // NARROWBAND_RATE, 1)[: len(wave)]


def clean(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    return wave, {}


def telephone(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A landline: 300-3400 Hz (edges jittered), 8 kHz, G.711 u-law."""
    low, high = float(rng.uniform(250.0, 350.0)), float(rng.uniform(3200.0, 3500.0))
    out = _narrowband(wave, low, high, lambda x: _codec_roundtrip(x, NARROWBAND_RATE, format="WAV", subtype="ULAW"))
    return out, {"band_low_hz": low, "band_high_hz": high, "codec": "ulaw"}


def gsm(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A mobile call: band-limited, 8 kHz, GSM 06.10 full rate (13 kbit/s)."""
    low, high = float(rng.uniform(150.0, 300.0)), float(rng.uniform(3300.0, 3700.0))
    out = _narrowband(wave, low, high, lambda x: _codec_roundtrip(x, NARROWBAND_RATE, format="WAV", subtype="GSM610"))
    return out, {"band_low_hz": low, "band_high_hz": high, "codec": "gsm610"}


def compressed(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Streaming-style lossy compression: MP3 or Opus at a low bitrate."""
    level = float(rng.uniform(0.8, 1.0))
    if rng.random() < 0.5:
        args = {"format": "MP3", "subtype": "MPEG_LAYER_III", "bitrate_mode": "CONSTANT", "compression_level": level}
        codec = "mp3"
    else:
        args = {"format": "OGG", "subtype": "OPUS", "compression_level": level}
        codec = "opus"
    return _codec_roundtrip(wave, SAMPLE_RATE, **args), {"codec": codec, "compression_level": level}


def _room_impulse_response(rt60_s: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise (60 dB down at rt60) behind a direct path at the given ratio."""
    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflections arrive after the direct sound
    tail *= db_to_gain(-drr_db) / np.sqrt(np.sum(tail**2))
    tail[0] = 1.0
    return tail


def farfield(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A distant microphone: reverberation plus background noise at a random SNR."""
    rt60, drr, snr = float(rng.uniform(0.3, 0.9)), float(rng.uniform(-3.0, 6.0)), float(rng.uniform(5.0, 20.0))
    exponent = float(rng.uniform(0.5, 2.0))
    reverberant = signal.fftconvolve(wave, _room_impulse_response(rt60, drr, rng))[: len(wave)]
    noise = colored_noise(len(wave), rng, exponent) * rms(reverberant) * db_to_gain(-snr)
    params = {"rt60_s": rt60, "drr_db": drr, "snr_db": snr, "noise_exponent": exponent}
    return reverberant + noise, params


CHANNELS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, Params]]] = {
    "clean": clean,
    "telephone": telephone,
    "gsm": gsm,
    "compressed": compressed,
    "farfield": farfield,
}


def record(speech: np.ndarray, channel: str, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """From dry 16 kHz speech to the int16 file: padding, mic, room, channel, level, converter noise.

    The level is set after the channel, so loudness says nothing about it; a converter noise floor after
    the codecs keeps low-bitrate codecs from leaving digital silence behind.
    """
    lead, trail = float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.1, 0.6))
    wave = np.concatenate([np.zeros(int(lead * SAMPLE_RATE)), speech, np.zeros(int(trail * SAMPLE_RATE))])
    wave, params = microphone(wave / (rms(speech) + 1e-12) * 0.05, rng)
    wave, room = room_noise(wave, rng)
    wave, channel_params = CHANNELS[channel](wave, rng)
    level_db = float(rng.uniform(-32.0, -20.0))
    wave = wave * (db_to_gain(level_db) / rms(wave))
    converter_db = float(rng.uniform(-84.0, -74.0))
    wave = wave + rng.standard_normal(len(wave)) * db_to_gain(converter_db)
    peak = float(np.max(np.abs(wave)))
    if peak > 0.98:
        wave *= 0.98 / peak
    params = {**params, **room, **channel_params, "lead_s": lead, "trail_s": trail,
              "level_dbfs": level_db, "converter_noise_dbfs": converter_db}
    return np.round(wave * 32767.0).astype(np.int16), params
