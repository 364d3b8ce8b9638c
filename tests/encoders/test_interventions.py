"""Interventions in the forward pass (encoders.interventions), on one small encoder of every kind.

Cases: GE2E (LSTM, packed), CREPE tiny (CNN, chunked windows), MFCC, Whisper faithful (the random tiny
`random:whisper-tiny`: 30 s window) and fast (`random:whisper-tiny.en-fast`: the tiny.en architecture,
masked), wav2vec2 (post-LayerNorm, per-utterance GroupNorm CNN), data2vec-audio (stacked positional
convolutions) and a pre-LayerNorm ("stable") WavLM, whose blocks return tuples and whose last layer is the
encoder's final LayerNorm. Each is run on a long and a short
zero-padded row, and on the short row alone.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tests.encoders.toy import ToyEncoder

from speechprobe.encoders import registry
from speechprobe.encoders.base import EncoderError, EncoderOutput, SpeechEncoder
from speechprobe.encoders.extraction import extract
from speechprobe.encoders.interventions import Intervention, intervene, layer_frames
from speechprobe.encoders.pooling import pool
from speechprobe.encoders.store import RepresentationStore, StoreSettings
from speechprobe.encoders.windows import encode

STABLE = "wavlm-stable-tiny"
CASES = ["ge2e", "crepe-tiny", "mfcc", "random:whisper-tiny", "random:whisper-tiny.en-fast", "random:wav2vec2-tiny",
         "random:data2vec-audio-tiny", STABLE]
FAITHFUL = {"random:whisper-tiny"}  # intervened on its whole 30 s window, by design (see encoders.interventions)
TOLERANCE = 1e-4  # pooled padding invariance, relative to the layer's scale, as in test_conformance


# Many small ops on 2 shared cores: one thread avoids OpenMP spin-waits (see tests/encoders/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(name: str) -> SpeechEncoder:
    if name != STABLE:
        entry = registry.FIXED.get(name)
        if entry is not None and not entry.available():
            pytest.skip(f"{name}: its weights are not installed (package of {entry.module})")
        return registry.create_encoder(name)
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    from speechprobe.encoders.hf import HFEncoder, random_config

    config = random_config("wavlm", "tiny")
    config.do_stable_layer_norm, config.feat_extract_norm = True, "layer"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(config).eval()
    return HFEncoder(model, Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True), STABLE)


def _waves(encoder: SpeechEncoder, seed: int = 0, pitch: float = 150.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A long and a short zero-padded row (tones plus noise), a few frames above `min_samples`."""
    short = encoder.min_samples + 660
    lengths = torch.tensor([short + 1300, short])
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(int(lengths[0])) / encoder.sample_rate
    waves = torch.zeros(2, int(lengths[0]))
    for row, (length, level) in enumerate(zip(lengths.tolist(), (0.3, 0.05))):
        tone = torch.sin(2 * torch.pi * (pitch + 70 * row) * time[:length])
        waves[row, :length] = level * (tone + 0.3 * torch.randn(length, generator=generator)) + 0.01 * row
    return waves, lengths


@dataclass
class Case:
    name: str
    encoder: SpeechEncoder
    waves: torch.Tensor
    lengths: torch.Tensor
    plain: EncoderOutput

    @property
    def middle(self) -> int:
        return (len(self.encoder.layer_names) - 1) // 2

    def run(self, intervention: Intervention, alone: bool = False) -> EncoderOutput:
        waves, lengths = (self.waves[1:, : int(self.lengths[1])], self.lengths[1:]) if alone else (self.waves, self.lengths)
        with torch.no_grad(), intervene(self.encoder, intervention) as bound:
            output = self.encoder(waves, lengths)
        assert bound.calls > 0, "the forward pass never reached the intervention"
        return output


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> Case:
    encoder = _build(request.param)
    waves, lengths = _waves(encoder)
    with torch.no_grad():
        plain = encoder(waves, lengths)
    return Case(request.param, encoder, waves, lengths, plain)


def _real(output: EncoderOutput, layer: int, row: int) -> torch.Tensor:
    return output.states[layer][row, : int(output.frame_lengths[layer][row])]


def _assert_identical(a: EncoderOutput, b: EncoderOutput, layers: range, what: str) -> None:
    for layer in layers:
        assert torch.equal(a.states[layer], b.states[layer]), f"{what}: layer {layer} changed"
        assert torch.equal(a.frame_lengths[layer], b.frame_lengths[layer]), f"{what}: layer {layer} lengths"


def _assert_padding_invariant(case: Case, together: EncoderOutput, alone: EncoderOutput) -> None:
    """The short row batched with a longer one gives the pooled vectors it gives alone, in every layer."""
    for layer, name in enumerate(case.encoder.layer_names):
        reference = pool(alone.states[layer], alone.frame_lengths[layer], "meanstd")
        mine = pool(together.states[layer][1:2], together.frame_lengths[layer][1:2], "meanstd")
        scale = float(_real(alone, layer, 0).abs().max()) or 1.0
        torch.testing.assert_close(mine, reference, rtol=TOLERANCE, atol=TOLERANCE * scale, msg=name)


# --------------------------------------------------------------------------------------------------
# 1. an intervention that changes nothing reproduces the plain forward bit for bit


def test_a_no_op_intervention_is_bit_identical(case: Case) -> None:
    layers = range(len(case.encoder.layer_names))
    for layer in layers:
        identity = case.run(Intervention.transform(layer, lambda x: x))
        _assert_identical(identity, case.plain, layers, f"identity transform at {case.encoder.layer_names[layer]}")
    nothing = case.run(Intervention.value(case.middle, (), ()))  # no neuron chosen
    _assert_identical(nothing, case.plain, layers, "no neurons")
    with torch.no_grad():  # and nothing stays active after the block
        _assert_identical(case.encoder(case.waves, case.lengths), case.plain, layers, "after the block")


# --------------------------------------------------------------------------------------------------
# 2 and 3. mean ablation at each layer: earlier layers untouched, the chosen neurons hold the values, later
# layers see it; padding frames untouched and pooled vectors padding-invariant


def test_mean_ablation_at_every_layer(case: Case) -> None:
    encoder = case.encoder
    for layer, name in enumerate(encoder.layer_names):
        dim = encoder.layer_dims[layer]
        neurons = (0, dim // 2, dim - 1)
        values = (0.5, -1.25, 3.0)
        intervention = Intervention.mean(name, neurons, values)
        out = case.run(intervention)
        _assert_identical(out, case.plain, range(layer), f"mean at {name}")
        expected = torch.tensor(values)
        others = [n for n in range(dim) if n not in neurons]
        for row in range(2):
            frames = _real(out, layer, row)
            assert torch.equal(frames[:, list(neurons)], expected.expand(len(frames), 3)), (name, row)
            assert torch.equal(frames[:, others], _real(case.plain, layer, row)[:, others]), (name, row)
        n = int(out.frame_lengths[layer][1])  # the short row's frames past its real ones
        if case.name in FAITHFUL:  # the model's own 30 s window padding: intervened too (real frames attend to it)
            tail = out.states[layer][1, n:]
            assert len(tail) and torch.equal(tail[:, list(neurons)], expected.expand(len(tail), 3)), name
        else:  # batch padding: never touched
            assert torch.equal(out.states[layer][1, n:], case.plain.states[layer][1, n:]), name
        for later in range(layer + 1, len(encoder.layer_names)):  # every later layer reads this one
            assert not torch.equal(_real(out, later, 0), _real(case.plain, later, 0)), (name, encoder.layer_names[later])
        _assert_padding_invariant(case, out, case.run(intervention, alone=True))


def test_zero_and_value_modes(case: Case) -> None:
    layer, dim = case.middle, case.encoder.layer_dims[case.middle]
    zero = case.run(Intervention.zero(layer, (1,)))
    assert torch.equal(_real(zero, layer, 0)[:, 1], torch.zeros(int(zero.frame_lengths[layer][0])))
    everything = case.run(Intervention.value(layer, None, torch.linspace(-1, 1, dim)))
    assert torch.equal(_real(everything, layer, 1), torch.linspace(-1, 1, dim).expand(int(everything.frame_lengths[layer][1]), dim))


# --------------------------------------------------------------------------------------------------
# 4. resample: seeded, values from other utterances' frames, independent of the batch


def test_resample_draws_seeded_frames_of_other_utterances(case: Case) -> None:
    encoder, layer = case.encoder, case.middle
    # the bank: frames of two other utterances (other noise, another pitch)
    others, other_lengths = _waves(encoder, seed=1, pitch=410.0)
    bank = layer_frames(encoder, others, other_lengths, layer, max_frames=64, seed=1)
    neurons = (0, 2, 5)
    first = case.run(Intervention.resample(layer, neurons, bank, seed=3))
    again = case.run(Intervention.resample(layer, neurons, bank, seed=3))
    other_seed = case.run(Intervention.resample(layer, neurons, bank, seed=4))
    narrow = case.run(Intervention.resample(layer, neurons, bank[:, list(neurons)], seed=3))  # a (rows, k) bank
    _assert_identical(first, again, range(len(encoder.layer_names)), "same seed")
    _assert_identical(first, narrow, range(len(encoder.layer_names)), "bank of the chosen neurons")
    assert not torch.equal(first.states[layer], other_seed.states[layer])
    choices = bank[:, list(neurons)]
    for row in range(2):
        drawn = _real(first, layer, row)[:, list(neurons)]
        # every frame holds one whole bank row (its chosen neurons), not its own values
        matches = (drawn[:, None, :] == choices[None, :, :]).all(dim=2)
        assert bool(matches.any(dim=1).all()), (case.name, row)
        assert not torch.equal(drawn, _real(case.plain, layer, row)[:, list(neurons)])
        assert len({tuple(v.tolist()) for v in drawn}) > 1 or len(drawn) == 1  # frames draw different rows
    _assert_identical(first, case.plain, range(layer), "resample")
    alone = case.run(Intervention.resample(layer, neurons, bank, seed=3), alone=True)
    assert torch.equal(_real(alone, layer, 0)[:, list(neurons)], _real(first, layer, 1)[:, list(neurons)])
    _assert_padding_invariant(case, first, alone)


# --------------------------------------------------------------------------------------------------
# 5. the affine transform (LEACE's form) on real frames


def test_affine_transform_is_applied_exactly(case: Case) -> None:
    encoder, layer = case.encoder, case.middle
    dim = encoder.layer_dims[layer]
    generator = torch.Generator().manual_seed(7)
    mean = torch.randn(dim, generator=generator).double()
    left = torch.randn(dim, 2, generator=generator).double() / dim ** 0.5
    right = torch.randn(2, dim, generator=generator).double() / dim ** 0.5
    eraser = SimpleNamespace(mean_=mean.numpy(), proj_left_=left.numpy(), proj_right_=right.numpy())
    out = case.run(Intervention.erase(encoder.layer_names[layer], eraser))
    _assert_identical(out, case.plain, range(layer), "affine")
    for row in range(2):
        x = _real(case.plain, layer, row)
        m, L, R = mean.float(), left.float(), right.float()
        expected = x - ((x - m) @ R.T) @ L.T
        scale = float(x.abs().max())
        torch.testing.assert_close(_real(out, layer, row), expected, rtol=1e-5, atol=1e-6 * scale)
        assert not torch.allclose(_real(out, layer, row), x)
    n = int(out.frame_lengths[layer][1])
    if case.name not in FAITHFUL:
        assert torch.equal(out.states[layer][1, n:], case.plain.states[layer][1, n:])
    if layer + 1 < len(encoder.layer_names):
        assert not torch.equal(_real(out, layer + 1, 0), _real(case.plain, layer + 1, 0))
    _assert_padding_invariant(case, out, case.run(Intervention.erase(layer, eraser), alone=True))
    # on a subset of neurons: the map acts on their sub-vector, the others are left as they were
    subset = (1, 3)
    small = (mean[:2].numpy(), left[:2, :1].numpy(), right[:1, :2].numpy())
    part = case.run(Intervention.erase(layer, small, neurons=subset))
    x = _real(case.plain, layer, 0)
    xs = x[:, list(subset)]
    expected = xs - ((xs - mean[:2].float()) @ right[:1, :2].float().T) @ left[:2, :1].float().T
    torch.testing.assert_close(_real(part, layer, 0)[:, list(subset)], expected, rtol=1e-5, atol=1e-6 * float(x.abs().max()))
    keep = [n for n in range(dim) if n not in subset]
    assert torch.equal(_real(part, layer, 0)[:, keep], x[:, keep])


# --------------------------------------------------------------------------------------------------
# encoder-specific consequences


def test_ge2e_d_vector_sees_every_window_step() -> None:
    """Zeroing all of lstm3 leaves the d-vector of every window (its last step included, often resemblyzer's
    zero-padded tail) at normalise(relu(bias)): nothing of the input reaches it."""
    encoder = _build("ge2e")
    waves = torch.randn(2, 40000, generator=torch.Generator().manual_seed(0)) * 0.1
    lengths = torch.tensor([40000, 20500])
    with torch.no_grad(), intervene(encoder, Intervention.zero("lstm3")):
        out = encoder(waves, lengths)
    expected = torch.nn.functional.normalize(torch.relu(encoder.linear.bias), dim=0)
    for row in range(2):
        partials = _real(out, 3, row)
        torch.testing.assert_close(partials, expected.expand_as(partials))


def test_windows_of_long_utterances_are_intervened_too() -> None:
    encoder = registry.create_encoder("mfcc")
    waves = torch.randn(1, 20000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), intervene(encoder, Intervention.mean("mfcc", (4,), (2.5,))):
        out = encode(encoder, waves, torch.tensor([20000]), window=7000)
    frames = _real(out, 0, 0)
    assert len(frames) > 100 and torch.equal(frames[:, 4], torch.full((len(frames),), 2.5))


# --------------------------------------------------------------------------------------------------
# 6. extraction: the store records the intervention; the plain store's key is unchanged


def test_extraction_with_an_intervention(tiny_corpus: Path, tmp_path: Path) -> None:
    from speechprobe.tasks.corpus import load_corpus

    corpus = load_corpus(tiny_corpus)
    encoder = registry.create_encoder("mfcc")
    plain = extract(corpus, encoder, tmp_path / "plain", layers=["mfcc"], batch_size=16, progress=False)
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert "intervention" not in manifest
    written_before = {k: v for k, v in asdict(plain.settings).items() if k not in ("window", "intervention")}
    assert manifest["key"] == plain.settings.key() == hashlib.sha256(
        json.dumps(written_before, sort_keys=True).encode()).hexdigest()[:16]

    ablation = Intervention.mean("mfcc", (0, 7), (1.5, -2.0))
    result = extract(corpus, encoder, tmp_path / "ablated", layers=["mfcc"], batch_size=16, progress=False,
                     intervention=ablation)
    intervened = json.loads((tmp_path / "ablated" / "manifest.json").read_text())
    assert intervened["intervention"] == ablation.describe() == result.settings.intervention
    assert intervened["key"] != manifest["key"]
    store, reference = RepresentationStore(result.path), RepresentationStore(plain.path)
    assert "intervened  mean of 2 neurons at mfcc" in store.describe()
    ablated, original = np.asarray(store.layer("mfcc")), np.asarray(reference.layer("mfcc"))
    np.testing.assert_allclose(ablated[:, [0, 7]], np.tile([1.5, -2.0], (len(corpus), 1)), rtol=1e-6)
    others = [n for n in range(ablated.shape[1]) if n not in (0, 7)]
    np.testing.assert_array_equal(ablated[:, others], original[:, others])  # mfcc: no later layer reads back

    # the plain store is reused as before (its key unchanged), the intervened one with the same intervention too
    assert extract(corpus, encoder, tmp_path / "plain", layers=["mfcc"], progress=False).reused
    assert extract(corpus, encoder, tmp_path / "ablated", layers=["mfcc"], progress=False,
                   intervention=Intervention.mean(0, (0, 7), (1.5, -2.0))).reused  # the layer by position
    with pytest.raises(EncoderError, match="already holds a different store.*intervention mean"):
        extract(corpus, encoder, tmp_path / "ablated", layers=["mfcc"], progress=False)
    with pytest.raises(EncoderError, match="callable transform"):
        extract(corpus, encoder, tmp_path / "other", progress=False, intervention=Intervention.transform("mfcc", abs))
    assert not (tmp_path / "other").exists()


def test_store_settings_key_ignores_an_absent_intervention() -> None:
    fields = dict(encoder="e", weights_hash="w", corpus_fingerprint="c", utterances=3, pooling="mean",
                  dtype="float32", layers=("a",), layer_dims=(4,))
    assert StoreSettings(**fields).key() == StoreSettings(**fields, intervention=None).key()
    first = StoreSettings(**fields, intervention=Intervention.zero("a", (1,)).describe())
    second = StoreSettings(**fields, intervention=Intervention.zero("a", (2,)).describe())
    assert len({StoreSettings(**fields).key(), first.key(), second.key()}) == 3
    # array contents key by digest: another bank or another affine map gives another key
    bank = np.arange(12.0).reshape(6, 2)
    assert Intervention.resample("a", (0, 1), bank).key() != Intervention.resample("a", (0, 1), bank + 1).key()
    assert Intervention.resample("a", (0, 1), bank).key() == Intervention.resample("a", (0, 1), bank.copy()).key()
    assert Intervention.resample("a", (0, 1), bank, seed=1).key() != Intervention.resample("a", (0, 1), bank).key()


# --------------------------------------------------------------------------------------------------
# 7. bad input: one line naming it


def _one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_bad_interventions_are_refused_naming_the_problem() -> None:
    encoder = registry.create_encoder("mfcc")  # layers mfcc (20) and mfcc+deltas (60)
    with pytest.raises(EncoderError) as error:
        Intervention("mfcc", (1,), "shuffle")
    _one_line(error, "unknown intervention mode 'shuffle'", "mean, value, zero, resample, transform")
    with pytest.raises(EncoderError) as error:
        Intervention.zero("lstm9").bind(encoder)
    _one_line(error, "no layer 'lstm9'", "mfcc, mfcc+deltas")
    with pytest.raises(EncoderError) as error:
        Intervention.zero(5).bind(encoder)
    _one_line(error, "no layer 5")
    with pytest.raises(EncoderError) as error:
        Intervention.zero("mfcc", (3, 20)).bind(encoder)
    _one_line(error, "neuron 20 is out of range for its 20 neurons", "mfcc")
    with pytest.raises(EncoderError) as error:
        Intervention.zero("mfcc", (-1,))
    _one_line(error, "neuron -1 is out of range")
    with pytest.raises(EncoderError) as error:
        Intervention.zero("mfcc", (2, 2))
    _one_line(error, "neuron 2 is chosen twice")
    with pytest.raises(EncoderError) as error:
        Intervention.mean("mfcc", (1, 2), (0.5,))
    _one_line(error, "1 values for 2 neurons")
    with pytest.raises(EncoderError) as error:
        Intervention.mean("mfcc", None, np.zeros(19)).bind(encoder)
    _one_line(error, "19 values for 20 neurons", "mfcc")
    with pytest.raises(EncoderError) as error:
        Intervention("mfcc", (1,), "mean")
    _one_line(error, "needs values")
    with pytest.raises(EncoderError) as error:
        Intervention("mfcc", (1,), "zero", values=(1.0,))
    _one_line(error, "takes no values")
    with pytest.raises(EncoderError) as error:
        Intervention.mean("mfcc", (1,), (float("nan"),))
    _one_line(error, "NaN")
    with pytest.raises(EncoderError) as error:
        Intervention.resample("mfcc", (1, 2), np.zeros((4, 7))).bind(encoder)
    _one_line(error, "bank rows have 7 values; expected 2", "mfcc")
    with pytest.raises(EncoderError) as error:
        Intervention.erase("mfcc", (np.zeros(3), np.zeros((3, 1)), np.zeros((1, 3)))).bind(encoder)
    _one_line(error, "affine map of dim 3 for 20 neurons")
    with pytest.raises(EncoderError) as error:
        Intervention.erase("mfcc", (np.zeros(3), np.zeros((3, 1)), np.zeros((2, 3))))
    _one_line(error, "affine map shapes do not fit")
    with pytest.raises(EncoderError) as error:
        Intervention("mfcc", None, "transform")
    _one_line(error, "exactly one of affine= and function=")
    with pytest.raises(EncoderError) as error:
        Intervention.zero("frames").bind(ToyEncoder())
    _one_line(error, "does not support interventions", "toy")
    wrong_shape = Intervention.transform("mfcc", lambda x: x[:, :3])
    with pytest.raises(EncoderError) as error, intervene(encoder, wrong_shape):
        encoder(torch.randn(1, 4000), torch.tensor([4000]))
    _one_line(error, "must return a", "mfcc")
    with pytest.raises(EncoderError) as error, intervene(encoder, Intervention.zero("mfcc")):
        with intervene(encoder, Intervention.zero("mfcc")):
            pass
    _one_line(error, "already active")
    assert encoder.active_intervention() is None  # cleared even when the block raised
