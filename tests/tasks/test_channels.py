from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from speechprobe.tasks.channels import CHANNELS, SAMPLE_RATE, colored_noise, farfield, record, rms, telephone


def _speechlike(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Broadband bursts: energy across the whole 0-8 kHz band, so band limits are measurable."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    envelope = (np.sin(2 * np.pi * 3 * np.arange(n) / SAMPLE_RATE) > 0).astype(float)
    return 0.1 * rng.standard_normal(n) * envelope


def _band_fraction(wave: np.ndarray, low: float, high: float) -> float:
    freqs, power = signal.welch(wave, SAMPLE_RATE, nperseg=1024)
    band = (freqs >= low) & (freqs <= high)
    return float(power[band].sum() / power.sum())


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_every_channel_keeps_length_and_is_reproducible(channel: str) -> None:
    speech = _speechlike()
    out1, params1 = CHANNELS[channel](speech, np.random.default_rng(3))
    out2, params2 = CHANNELS[channel](speech, np.random.default_rng(3))
    assert len(out1) == len(speech)
    assert np.array_equal(out1, out2) and params1 == params2
    assert np.isfinite(out1).all() and rms(out1) > 0


def test_telephone_removes_energy_outside_300_3400_hz() -> None:
    speech = _speechlike()
    assert _band_fraction(speech, 3800, 8000) > 0.4
    out, params = telephone(speech, np.random.default_rng(0))
    assert params["codec"] == "ulaw"
    assert _band_fraction(out, 3800, 8000) < 0.01
    assert _band_fraction(out, 0, 150) < 0.01


def test_farfield_adds_reverberation_and_noise_at_the_drawn_snr() -> None:
    speech = _speechlike()
    out, params = farfield(speech, np.random.default_rng(1))
    assert 5.0 <= params["snr_db"] <= 20.0 and 0.3 <= params["rt60_s"] <= 0.9
    gap = slice(int(0.18 * SAMPLE_RATE), int(0.32 * SAMPLE_RATE))  # between the first two bursts
    assert np.all(speech[gap] == 0)
    noise_alone = rms(out) * 10 ** (-params["snr_db"] / 20)
    assert rms(out[gap]) > 0.5 * noise_alone  # filled by the reverberant tail and the background noise


def test_colored_noise_has_the_requested_slope() -> None:
    rng = np.random.default_rng(0)
    white, pink = colored_noise(2**16, rng, 0.0), colored_noise(2**16, rng, 1.0)
    assert abs(rms(pink) - 1.0) < 1e-9
    assert _band_fraction(white, 4000, 8000) > 0.45
    assert _band_fraction(pink, 4000, 8000) < 0.2


def test_record_pads_sets_the_level_and_never_leaves_digital_silence() -> None:
    speech = _speechlike(1.0)
    samples, params = record(speech, "compressed", np.random.default_rng(5))
    assert samples.dtype == np.int16
    expected = len(speech) + int(params["lead_s"] * SAMPLE_RATE) + int(params["trail_s"] * SAMPLE_RATE)
    assert len(samples) == expected
    level = 20 * np.log10(rms(samples / 32767.0))
    assert abs(level - params["level_dbfs"]) < 0.5
    assert np.mean(samples == 0) < 0.05
