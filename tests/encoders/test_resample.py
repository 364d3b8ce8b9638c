from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from speechprobe.encoders.resample import resample_batch, resample_rows, resampled_lengths


def _tone(rate: int, seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("orig, new", [(8000, 16000), (44100, 16000), (22050, 16000), (16000, 8000)])
def test_matches_an_independent_polyphase_resampler_in_the_passband(orig: int, new: int) -> None:
    rng = np.random.default_rng(0)
    wave = signal.sosfilt(signal.butter(8, 0.3 * min(orig, new), fs=orig, output="sos"),
                          rng.standard_normal(orig)).astype(np.float32)  # band-limited noise
    out, lengths = resample_batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), orig, new)
    reference = signal.resample_poly(wave, new, orig)
    assert int(lengths[0]) == len(reference) == out.shape[1]
    inner = slice(200, len(reference) - 200)
    assert np.corrcoef(out[0].numpy()[inner], reference[inner])[0, 1] > 0.999


def test_a_tone_keeps_its_frequency() -> None:
    out, _ = resample_batch(torch.from_numpy(_tone(8000, 1.0, 440.0))[None], torch.tensor([8000]), 8000, 16000)
    spectrum = np.abs(np.fft.rfft(out[0].numpy()))
    assert abs(np.fft.rfftfreq(out.shape[1], 1 / 16000)[spectrum.argmax()] - 440.0) <= 1.0


def test_rows_do_not_depend_on_their_batch() -> None:
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (44100, 30000, 12345)]
    batch = torch.zeros(3, 44100)
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = torch.from_numpy(wave)
    batch[1, 30000:] = 5.0  # garbage in the padding must not leak into the row
    out, lengths = resample_batch(batch, torch.tensor([len(w) for w in waves]), 44100, 16000)
    for row, wave in enumerate(waves):
        alone, alone_length = resample_batch(torch.from_numpy(wave)[None], torch.tensor([len(wave)]), 44100, 16000)
        assert int(lengths[row]) == int(alone_length[0])
        assert torch.allclose(out[row, : lengths[row]], alone[0], atol=1e-5)
        assert torch.all(out[row, lengths[row]:] == 0)


def test_mixed_rates_in_one_batch() -> None:
    waves = torch.zeros(3, 16000)
    waves[0, :8000] = torch.from_numpy(_tone(8000, 1.0, 300.0))
    waves[1, :16000] = torch.from_numpy(_tone(16000, 1.0, 300.0))
    waves[2, :4410] = torch.from_numpy(_tone(44100, 0.1, 300.0))
    out, lengths = resample_rows(waves, torch.tensor([8000, 16000, 4410]), torch.tensor([8000, 16000, 44100]), 16000)
    assert lengths.tolist() == [16000, 16000, 1600]
    assert torch.equal(out[1], waves[1])
    assert int(resampled_lengths(torch.tensor([4410]), 44100, 16000)[0]) == 1600
