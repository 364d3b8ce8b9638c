"""Long audio: an utterance longer than the encoder's window is encoded in windows and pooled over all its
real frames, so a 75 s recording gives exactly the vector of its three windows' frames pooled together."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.extraction import extract
from speechprobe.encoders.registry import create_encoder
from speechprobe.encoders.store import RepresentationStore, StoreSettings
from speechprobe.encoders.windows import effective_window, encode, window_bounds
from speechprobe.tasks.corpus import load_corpus
from tests.encoders.toy import ToyEncoder

SR = 16000


def test_window_bounds_are_equal_and_cover_the_utterance() -> None:
    assert window_bounds(75 * SR, 30 * SR) == [(0, 25 * SR), (25 * SR, 50 * SR), (50 * SR, 75 * SR)]
    assert window_bounds(60 * SR, 30 * SR) == [(0, 30 * SR), (30 * SR, 60 * SR)]   # an exact multiple
    assert window_bounds(10 * SR, 30 * SR) == [(0, 10 * SR)]
    bounds = window_bounds(1_000_003, 480_000)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1_000_003
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert max(e - s for s, e in bounds) <= 480_000 and min(e - s for s, e in bounds) >= 480_000 // 2


def test_the_window_is_the_encoders_limit_or_the_users() -> None:
    toy = ToyEncoder()
    assert effective_window(toy, None) is None
    assert effective_window(toy, 2.5) == 40000
    whisper = create_encoder("random:whisper-tiny.en-fast")
    assert effective_window(whisper, None) == 30 * SR and effective_window(whisper, 10) == 10 * SR
    assert effective_window(whisper, 60) == 30 * SR       # never past what the model takes
    with pytest.raises(ValueError, match="longer than 0 s"):
        effective_window(toy, 0)


def _by_hand(encoder, wave: np.ndarray, bounds: list[tuple[int, int]]) -> list[np.ndarray]:
    """Each window alone through the encoder, its real frames kept, all windows' frames mean-pooled."""
    frames: list[list[torch.Tensor]] = [[] for _ in encoder.layer_names]
    with torch.no_grad():
        for start, end in bounds:
            out = encoder(torch.from_numpy(wave[start:end])[None], torch.tensor([end - start]))
            for layer, (states, counts) in enumerate(zip(out.states, out.frame_lengths)):
                frames[layer].append(states[0, : int(counts[0])])
    return [torch.cat(parts).mean(0).numpy() for parts in frames]


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 75 s recording (speech-like: noise under a moving harmonic) and a 2 s one."""
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    t = np.arange(75 * SR) / SR
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / SR) / k for k in range(1, 6))
    long = (0.2 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2) + 0.02 * rng.standard_normal(t.size))
    short = 0.1 * rng.standard_normal(2 * SR)
    rows = []
    for name, wave in (("long.wav", long), ("short.wav", short)):
        sf.write(folder / name, wave.astype(np.float32), SR, subtype="FLOAT")
        rows.append({"file_name": name, "utt_id": name[:-4], "speaker": name[:-4], "gender": "female"})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return folder


@pytest.mark.parametrize("name", ["random:whisper-tiny.en", "random:whisper-tiny.en-fast"])
def test_a_75_s_clip_pools_its_three_windows_frames(name: str, long_corpus: Path, tmp_path: Path) -> None:
    encoder = create_encoder(name)
    corpus = load_corpus(long_corpus)
    wave = corpus.load_audio(0, SR).astype(np.float32)
    assert len(wave) == 75 * SR
    with pytest.raises(EncoderError, match="longer than Whisper's 30 s window"):   # one pass refuses it ...
        encoder(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    expected = _by_hand(encoder, wave, [(0, 25 * SR), (25 * SR, 50 * SR), (50 * SR, 75 * SR)])

    result = extract(corpus, encoder, tmp_path / "store", batch_size=2, progress=False)   # ... extraction windows it
    store = RepresentationStore(result.path)
    assert result.settings.window == 30 * SR
    for layer, vector in zip(encoder.layer_names, expected):
        got = np.asarray(store.layer(layer))[0]
        assert np.allclose(got, vector, rtol=1e-4, atol=1e-5 * np.abs(vector).max()), layer
    # the 2 s clip batched beside it is what it is alone
    short = corpus.load_audio(1, SR).astype(np.float32)
    alone = _by_hand(encoder, short, [(0, len(short))])
    assert np.allclose(np.asarray(store.layer(encoder.layer_names[-1]))[1], alone[-1], rtol=1e-4, atol=1e-5)


def test_windows_do_not_depend_on_the_batch() -> None:
    encoder = ToyEncoder()
    rng = np.random.default_rng(1)
    long, short = (torch.from_numpy(rng.standard_normal(n).astype(np.float32)) for n in (50_000, 7_000))
    batch = torch.zeros(2, 50_000)
    batch[0], batch[1, :7_000] = long, short
    together = encode(encoder, batch, torch.tensor([50_000, 7_000]), window=16_000, batch_size=3)
    alone = encode(encoder, long[None], torch.tensor([50_000]), window=16_000)
    for layer in range(2):
        n = int(alone.frame_lengths[layer][0])
        assert int(together.frame_lengths[layer][0]) == n
        assert torch.allclose(together.states[layer][0, :n], alone.states[layer][0, :n])
        m = int(together.frame_lengths[layer][1])
        assert torch.allclose(together.states[layer][1, :m], encoder(short[None], torch.tensor([7_000])).states[layer][0])
    # 50000 samples in 4 windows of 12500: each gives (12500 - 400) // 160 + 1 = 76 frames
    assert int(alone.frame_lengths[0][0]) == 4 * 76


def test_stores_of_whole_utterances_keep_their_keys() -> None:
    fields = dict(encoder="e", weights_hash="w", corpus_fingerprint="c", utterances=3, pooling="mean",
                  dtype="float32", layers=("a",), layer_dims=(4,))
    whole = StoreSettings(**fields)
    import hashlib
    import json
    from dataclasses import asdict

    # a key as written before windows (and interventions, test_interventions) existed
    before = {k: v for k, v in asdict(whole).items() if k not in ("window", "intervention")}
    assert whole.key() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert StoreSettings(**fields, window=480000).key() != whole.key()
