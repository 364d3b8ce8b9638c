"""The `mfcc` baseline encoder against the numpy MFCCs of encoders/mfcc.py and a numpy delta formula,
through the registry, and through extraction into a store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.extraction import extract
from speechprobe.encoders.mfcc import mfcc, mfcc_mean
from speechprobe.encoders.mfcc_encoder import MFCCEncoder
from speechprobe.encoders.registry import RANDOM_FIXED, check_name, create_encoder, list_encoders, random_twin
from speechprobe.encoders.resample import resample_rows
from speechprobe.encoders.store import RepresentationStore
from speechprobe.tasks.corpus import load_corpus


def _batch(*lengths: int, seed: int = 0) -> tuple[list[np.ndarray], torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    rows = [(0.1 * (i + 1) * rng.standard_normal(n)).astype(np.float32) for i, n in enumerate(lengths)]
    waves = torch.zeros(len(rows), max(lengths))
    for i, row in enumerate(rows):
        waves[i, : len(row)] = torch.from_numpy(row)
    return rows, waves, torch.tensor(lengths)


def _numpy_deltas(x: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK's regression formula with the end frames repeated, one utterance at a time."""
    padded = np.pad(x, ((width, width), (0, 0)), mode="edge")
    n = len(x)
    total = sum(k * (padded[width + k: width + k + n] - padded[width - k: width - k + n]) for k in range(1, width + 1))
    return total / (2 * sum(k * k for k in range(1, width + 1)))


def test_frames_are_the_numpy_mfccs_and_deltas_of_each_utterance_alone() -> None:
    rows, waves, lengths = _batch(8000, 5123, 400)
    with torch.no_grad():
        out = MFCCEncoder()(waves, lengths)
    assert out.frame_lengths[0].tolist() == [len(mfcc(row)) for row in rows] == [48, 30, 1]
    for i, row in enumerate(rows):
        n = int(out.frame_lengths[0][i])
        reference = mfcc(row)
        scale = np.abs(reference).max()
        assert np.abs(out.states[0][i, :n].numpy() - reference).max() < 1e-5 * scale
        stacked = out.states[1][i, :n].numpy()
        delta = _numpy_deltas(reference)
        assert np.abs(stacked[:, :20] - reference).max() < 1e-5 * scale
        assert np.abs(stacked[:, 20:40] - delta).max() < 1e-5 * scale
        assert np.abs(stacked[:, 40:] - _numpy_deltas(delta)).max() < 1e-5 * scale
        assert not out.states[1][i, n:].any()  # padded frames hold zeros, not leftovers


def test_gain_moves_only_c0_and_leaves_every_delta_alone() -> None:
    _, waves, lengths = _batch(6000)
    encoder = MFCCEncoder()
    with torch.no_grad():
        base, louder = encoder(waves, lengths).states[1][0], encoder(2 * waves, lengths).states[1][0]
    shift = louder - base
    assert torch.allclose(shift[:, 0], torch.full_like(shift[:, 0], np.log(4.0) * np.sqrt(40)), atol=1e-3)
    assert shift[:, 1:].abs().max() < 1e-3  # the other coefficients, the deltas and the delta-deltas


def test_registry_entry_has_no_weights_and_no_twin() -> None:
    encoder = create_encoder("mfcc")
    assert encoder.name == "mfcc" and encoder.layer_names == ("mfcc", "mfcc+deltas") and encoder.layer_dims == (20, 60)
    assert encoder.describe()["parameters"] == 0 and not encoder.training
    assert random_twin("mfcc") is None and "mfcc" not in RANDOM_FIXED
    with pytest.raises(EncoderError, match="random:mfcc"):
        check_name("random:mfcc")
    rows = {row["name"]: row for row in list_encoders()}
    assert rows["mfcc"]["offline"] and rows["mfcc"]["architecture"] == "MFCC" and "random:mfcc" not in rows
    # the "weights" hash covers the front end's settings, so another setting never reuses a store
    assert encoder.weights_hash() == create_encoder("mfcc").weights_hash() != MFCCEncoder(n_mfcc=13).weights_hash()


def test_too_short_or_malformed_input_is_an_encoder_error() -> None:
    encoder = MFCCEncoder()
    with pytest.raises(EncoderError, match="399 samples is shorter than min_samples 400"):
        encoder(torch.zeros(2, 1000), torch.tensor([1000, 399]))
    with pytest.raises(EncoderError, match="exceeds"):
        encoder(torch.zeros(1, 1000), torch.tensor([1001]))
    with pytest.raises(EncoderError, match="n_mfcc"):
        MFCCEncoder(n_mfcc=41)


def test_extraction_writes_the_mfcc_means_to_a_store(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    encoder = create_encoder("mfcc")
    result = extract(corpus, encoder, tmp_path / "store", pooling="mean", batch_size=8, progress=False)
    store = RepresentationStore(result.path)
    assert store.layer_names == ["mfcc", "mfcc+deltas"] and store.layer_dims == [20, 60] and len(store) == len(corpus)
    means = np.asarray(store.layer("mfcc"))
    for i in (0, len(corpus) - 1):  # the classic baseline vector, from the same resampled audio
        wave, rate = corpus.load_native(i)
        resampled, length = resample_rows(torch.from_numpy(wave)[None], torch.tensor([len(wave)]),
                                          torch.tensor([rate]), 16000)
        reference = mfcc_mean(resampled[0, : int(length[0])].numpy())
        assert np.abs(means[i] - reference).max() < 1e-4 * np.abs(reference).max()
    assert extract(corpus, create_encoder("mfcc"), tmp_path / "store", pooling="mean", progress=False).reused
