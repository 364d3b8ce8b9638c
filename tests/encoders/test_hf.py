"""`hf:` and `random:` encoders against transformers itself.

Tiny random models of every architecture are saved with `save_pretrained` and loaded back through
`HFEncoder.from_pretrained`; the references are transformers' own forward (`output_hidden_states`, its
own feature extractor for the input normalisation) and the saved state dicts.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (AutoFeatureExtractor, AutoModel, BertConfig, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                          WhisperFeatureExtractor, WhisperModel)

from speechprobe.encoders.base import EncoderError, SpeechEncoder
from speechprobe.encoders.hf import (RANDOM_ARCHITECTURES, HFEncoder, parse_random_name, random_config, random_encoder,
                         weights_available)

# (id, architecture, config overrides): the base layouts (GroupNorm CNN, post-LayerNorm encoder; data2vec's
# LayerNorm CNN and stacked positional convolutions) and the large layouts ("stable layer norm").
VARIANTS = [
    ("wav2vec2", "wav2vec2", {}),
    ("wav2vec2-stable", "wav2vec2", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("hubert", "hubert", {}),
    ("hubert-stable", "hubert", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("wavlm", "wavlm", {}),
    ("wavlm-stable", "wavlm", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("data2vec-audio", "data2vec-audio", {}),
]
LENGTHS = (3200, 6400, 9600)  # 9, 19 and 29 frames: padding reaches past every positional convolution


def _build(architecture: str, overrides: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    config = random_config(architecture, "tiny")
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return AutoModel.from_config(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """Each variant saved to disk, with the state dict it was saved from; wav2vec2 with a CTC head."""
    out = {}
    for variant, architecture, overrides in VARIANTS:
        path = tmp_path_factory.mktemp(variant)
        model = _build(architecture, overrides)
        if variant == "wav2vec2":  # a fine-tuned layout: AutoModel must take the base model out of it
            torch.manual_seed(1)
            head = Wav2Vec2ForCTC(model.config)
            head.wav2vec2.load_state_dict(model.state_dict())
            head.save_pretrained(path)
        else:
            model.save_pretrained(path)
        Wav2Vec2FeatureExtractor(do_normalize=variant != "wavlm", return_attention_mask=True).save_pretrained(path)
        out[variant] = (path, {k: v.clone() for k, v in model.state_dict().items()})
    return out


@pytest.fixture(scope="module")
def loaded(saved: dict[str, tuple[Path, dict[str, torch.Tensor]]]) -> dict[str, SpeechEncoder]:
    return {variant: HFEncoder.from_pretrained(str(path)) for variant, (path, _) in saved.items()}


def _waves(lengths: tuple[int, ...] = LENGTHS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):  # different offsets and scales per row: normalisation matters
        waves[row, :length] = 0.05 * (row + 1) * torch.randn(length, generator=generator) + 0.01 * row
    return waves, torch.tensor(lengths)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("variant", [v[0] for v in VARIANTS])
def test_loads_the_saved_weights_frozen(saved: dict, loaded: dict, variant: str) -> None:
    encoder, (_, reference) = loaded[variant], saved[variant]
    state = encoder.model.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[key], reference[key]) for key in reference)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert encoder.name == f"hf:{saved[variant][0]}"


@pytest.mark.parametrize("variant", [v[0] for v in VARIANTS])
def test_layers_are_transformers_hidden_states(saved: dict, loaded: dict, variant: str) -> None:
    """Unpadded input: "features"/"blockN" are hidden_states[0]/[N]; the stable models' extra layer is
    last_hidden_state, which there is not the raw last block."""
    encoder, path = loaded[variant], saved[variant][0]
    waves, lengths = _waves((16000,))
    inputs = AutoFeatureExtractor.from_pretrained(path)(waves[0].numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        reference = encoder.model(inputs.input_values, output_hidden_states=True)
        ours = encoder(waves, lengths)
    hidden = reference.hidden_states
    stable = "stable" in variant
    blocks = len(hidden) - 1
    assert encoder.layer_names[: blocks + 1] == ("features", *(f"block{i}" for i in range(1, blocks + 1)))
    assert len(ours.states) == len(encoder.layer_names) == blocks + 1 + stable
    for name, state, expected in zip(encoder.layer_names, ours.states, hidden):
        assert _relative(state, expected) < 1e-5, name
    last_is_raw_block = _relative(reference.last_hidden_state, hidden[-1]) < 1e-6
    assert last_is_raw_block != stable
    if stable:
        assert encoder.layer_names[-1] == f"block{blocks}.final_layer_norm"
        assert _relative(ours.states[-1], reference.last_hidden_state) < 1e-5
    assert [state.shape[-1] for state in ours.states] == list(encoder.layer_dims)


@pytest.mark.parametrize("variant", [v[0] for v in VARIANTS])
def test_padding_invariance_every_layer(loaded: dict, variant: str) -> None:
    encoder = loaded[variant]
    waves, lengths = _waves()
    with torch.no_grad():
        batch = encoder(waves, lengths)
        for row, length in enumerate(LENGTHS):
            alone = encoder(waves[row: row + 1, :length], lengths[row: row + 1])
            for layer, name in enumerate(encoder.layer_names):
                frames = int(alone.frame_lengths[layer][0])
                assert frames == int(batch.frame_lengths[layer][row]) == alone.states[layer].shape[1]
                assert _relative(batch.states[layer][row, :frames], alone.states[layer][0]) < 1e-4, (name, row)


@pytest.mark.parametrize("variant", ["wav2vec2", "data2vec-audio"])
def test_transformers_own_batching_is_not_padding_invariant(loaded: dict, variant: str) -> None:
    """Why the encoder does more than pass an attention mask: the GroupNorm CNN (wav2vec2) and the stacked
    positional convolutions (data2vec-audio) let padding into the valid frames of transformers' forward."""
    model = loaded[variant].model
    waves, lengths = _waves()
    mask = (torch.arange(waves.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        batch = model(waves, attention_mask=mask).last_hidden_state
        alone = model(waves[:1, : LENGTHS[0]]).last_hidden_state
    assert _relative(batch[0, : alone.shape[1]], alone[0]) > 1e-2


def test_frame_lengths_and_min_samples(loaded: dict) -> None:
    encoder = loaded["wav2vec2"]
    lengths = (400, 719, 720, 16000)
    expected = [1 + (n - 400) // 320 for n in lengths]  # 25 ms receptive field, 20 ms hop
    assert encoder.min_samples == 400
    waves, lengths_tensor = _waves(lengths)
    with torch.no_grad():
        out = encoder(waves, lengths_tensor)
    assert all(f.tolist() == expected for f in out.frame_lengths)
    assert encoder.frame_lengths(lengths_tensor).tolist() == expected
    assert all(state.shape[1] == max(expected) for state in out.states)
    with pytest.raises(EncoderError, match="399 samples"):
        encoder(torch.zeros(2, 1000), torch.tensor([1000, 399]))


def test_not_an_audio_model(tmp_path: Path) -> None:
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path)
    with pytest.raises(EncoderError, match="bert is not an audio encoder; supported: wav2vec2, hubert, wavlm, "
                                           "data2vec-audio, whisper"):
        HFEncoder.from_pretrained(str(tmp_path))


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "model"
    with pytest.raises(EncoderError, match="no such model folder"):
        HFEncoder.from_pretrained(str(missing))
    with pytest.raises(EncoderError) as raised:
        HFEncoder.from_pretrained(str(tmp_path))  # exists, no config.json
    assert str(tmp_path) in str(raised.value) and "\n" not in str(raised.value)


def test_hub_id_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name = "speechprobe-tests/no-such-model"
    with pytest.raises(EncoderError) as raised:
        HFEncoder.from_pretrained(name)
    assert str(raised.value).startswith(f"{name}: cannot load") and "\n" not in str(raised.value)
    assert not weights_available(name)


def _with_remote_code(folder: Path, model_type: str | None) -> Path:
    """A config whose auto_map points at code that leaves a mark when it runs."""
    sentinel = folder / "remote-code-ran"
    code = f"open({str(sentinel)!r}, 'w').close()\nfrom transformers import PretrainedConfig\n" \
           "class CustomConfig(PretrainedConfig):\n    model_type = 'speechprobe_custom'\n"
    (folder / "configuration_custom.py").write_text(code)
    (folder / "modeling_custom.py").write_text(code.replace("CustomConfig(PretrainedConfig)", "CustomModel"))
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig", "AutoModel": "modeling_custom.CustomModel"}
    if model_type:
        config["model_type"] = model_type
    config_file.write_text(json.dumps(config))
    return sentinel


def test_remote_code_never_runs_without_the_flag(tmp_path: Path, saved: dict) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    sentinel = _with_remote_code(custom, "speechprobe_custom")
    with pytest.raises(EncoderError):
        HFEncoder.from_pretrained(str(custom))
    assert not sentinel.exists()

    known = tmp_path / "known"  # a wav2vec2 folder that also names remote code: transformers' class is used
    known.mkdir()
    for file in saved["hubert"][0].iterdir():
        (known / file.name).write_bytes(file.read_bytes())
    sentinel = _with_remote_code(known, None)
    encoder = HFEncoder.from_pretrained(str(known))
    assert type(encoder.model).__module__.startswith("transformers.models.hubert")
    assert not sentinel.exists()


def test_trust_remote_code_is_passed_through(monkeypatch: pytest.MonkeyPatch, saved: dict) -> None:
    import transformers

    seen: list[object] = []
    original = transformers.AutoConfig.from_pretrained.__func__

    def spy(cls: type, *args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("trust_remote_code"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(spy))
    HFEncoder.from_pretrained(str(saved["hubert"][0]))
    HFEncoder.from_pretrained(str(saved["hubert"][0]), trust_remote_code=True)
    assert seen == [False, True]


def test_parse_random_name() -> None:
    assert parse_random_name("random:wav2vec2") == ("wav2vec2", "base", 0)
    assert parse_random_name("random:data2vec-audio-tiny@7") == ("data2vec-audio", "tiny", 7)
    assert parse_random_name("random:whisper@3") == ("whisper", "base", 3)
    with pytest.raises(EncoderError, match="known: wav2vec2, hubert, wavlm, data2vec-audio, whisper"):
        parse_random_name("random:conformer")
    with pytest.raises(EncoderError, match="seed"):
        parse_random_name("random:hubert@x")


@pytest.mark.parametrize("architecture", ["wav2vec2", "wavlm"])
def test_random_seeds(architecture: str) -> None:
    before = torch.random.get_rng_state()
    first, again = random_encoder(architecture, "tiny", 0), random_encoder(architecture, "tiny", 0)
    other = random_encoder(architecture, "tiny", 1)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    assert first.weights_hash() == again.weights_hash() != other.weights_hash()
    assert first.name == f"random:{architecture}-tiny" and other.name == f"random:{architecture}-tiny@1"
    assert parse_random_name(other.name) == (architecture, "tiny", 1)


def test_random_wav2vec2_base_has_the_published_size() -> None:
    """facebook/wav2vec2-base as Wav2Vec2Model: 94.4 M parameters (its CTC head adds 25 k), 12 blocks of 768."""
    encoder = random_encoder("wav2vec2")
    assert 94.3 < encoder.describe()["parameters"] / 1e6 < 94.5
    assert encoder.layer_names == ("features", *(f"block{i}" for i in range(1, 13)))
    assert set(encoder.layer_dims) == {768}
    waves, lengths = _waves((8000, 4000))
    with torch.no_grad():
        out = encoder(waves, lengths)
    assert [s.shape for s in out.states[-1:]] == [(2, 24, 768)] and out.frame_lengths[0].tolist() == [24, 12]


# Published sizes, in millions of parameters (ranges: papers round, and count pre-training heads this
# encoder does not have: quantiser, label embeddings, final projection, about 0.3 M).
PUBLISHED = {
    "wav2vec2": (94.0, 95.1),  # "95 M" (Baevski et al. 2020); Wav2Vec2ForCTC base on the hub: 94.40 M
    "hubert": (94.0, 95.1),  # "95 M" (Hsu et al. 2021); SUPERB: 94.68 M with its heads
    "wavlm": (94.0, 94.8),  # "94.70 M" (Chen et al. 2022), with its heads
    "data2vec-audio": (92.5, 95.1),  # the wav2vec2 base layout with 5 smaller positional convolutions
    "whisper": (72.5, 72.7),  # openai/whisper-base, encoder and decoder: 72.6 M ("74 M" in the paper's table)
}


def _millions(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize("architecture", RANDOM_ARCHITECTURES)
def test_base_configs_have_the_published_sizes(architecture: str) -> None:
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        config = random_config(architecture)
        model = WhisperForConditionalGeneration(config) if architecture == "whisper" else AutoModel.from_config(config)
    low, high = PUBLISHED[architecture]
    assert low < _millions(model) < high


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["hubert", "wavlm", "data2vec-audio"])
def test_random_base_models_build_and_run(architecture: str) -> None:
    encoder = random_encoder(architecture, "base", 0)
    low, high = PUBLISHED[architecture]
    assert low < _millions(encoder) < high
    waves, lengths = _waves((8000, 4000))
    with torch.no_grad():
        out = encoder(waves, lengths)
    assert len(out.states) == 13 and out.frame_lengths[0].tolist() == [24, 12]


def test_weights_available(saved: dict, tmp_path: Path) -> None:
    assert weights_available(str(saved["wavlm"][0])) and weights_available(f"hf:{saved['wavlm'][0]}")
    assert not weights_available(str(tmp_path / "missing")) and not weights_available(str(tmp_path))
    assert weights_available("random:hubert-tiny@2") and not weights_available("random:nothing")


# ---------------------------------------------------------------- Whisper: delegated to encoders.whisper


def _whisper_delegate_missing() -> str | None:
    try:
        module = importlib.import_module("speechprobe.encoders.whisper")
    except ImportError as error:
        return f"speechprobe.encoders.whisper cannot be imported yet ({error})"
    if not hasattr(getattr(module, "WhisperEncoder", None), "from_transformers"):
        return "speechprobe.encoders.whisper has no WhisperEncoder.from_transformers yet"
    return None


needs_whisper = pytest.mark.skipif(_whisper_delegate_missing() is not None,
                                   reason=_whisper_delegate_missing() or "")


@needs_whisper
def test_whisper_checkpoint_is_delegated(tmp_path: Path) -> None:
    from speechprobe.encoders.whisper import WhisperEncoder

    torch.manual_seed(0)
    model = WhisperModel(random_config("whisper", "tiny"))
    model.save_pretrained(tmp_path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp_path)
    encoder = HFEncoder.from_pretrained(str(tmp_path))
    assert isinstance(encoder, WhisperEncoder) and encoder.name == f"hf:{tmp_path}"
    ours = encoder.state_dict()
    for key, tensor in model.encoder.state_dict().items():  # whatever prefix the wrapper gives them
        matches = [name for name in ours if name.endswith(key)]
        assert any(torch.equal(ours[name], tensor) for name in matches), key


@needs_whisper
def test_random_whisper_is_seeded() -> None:
    from speechprobe.encoders.whisper import WhisperEncoder

    first, again = random_encoder("whisper", "tiny", 0), random_encoder("whisper", "tiny", 0)
    assert isinstance(first, WhisperEncoder)
    assert first.weights_hash() == again.weights_hash() != random_encoder("whisper", "tiny", 1).weights_hash()
