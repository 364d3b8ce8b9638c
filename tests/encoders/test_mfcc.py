from __future__ import annotations

import numpy as np

from speechprobe.encoders.mfcc import mel_filterbank, mfcc, mfcc_mean


def test_frame_count_and_shape() -> None:
    wave = np.random.default_rng(0).standard_normal(16000)
    assert mfcc(wave).shape == (1 + (16000 - 400) // 160, 20)
    assert mfcc_mean(wave, n_mfcc=13).shape == (13,)


def test_gain_moves_only_the_first_coefficient_by_the_dct_of_a_constant() -> None:
    wave = np.random.default_rng(1).standard_normal(8000)
    delta = mfcc(2 * wave) - mfcc(wave)
    assert np.allclose(delta[:, 0], np.log(4.0) * np.sqrt(40), atol=1e-6)
    assert np.abs(delta[:, 1:]).max() < 1e-6


def test_filterbank_triangles_peak_at_one_and_rise_with_frequency() -> None:
    bank = mel_filterbank(16000, 512, 40)
    assert bank.shape == (40, 257)
    assert np.all(bank.max(axis=1) <= 1.0) and np.all(bank.max(axis=1) > 0.5)
    assert np.all(np.diff(bank.argmax(axis=1)) >= 0)
