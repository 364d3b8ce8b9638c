"""`hf:<model id or path>` and `random:<architecture>` encoders: transformers' audio encoders, every layer.

Supported: wav2vec2, HuBERT, WavLM, data2vec-audio (this module) and Whisper's encoder (delegated to
`encoders.whisper`). Layers, input side first:
- "features": what the first transformer block reads, as transformers' `hidden_states[0]` holds it: CNN
  features, feature projection, plus the positional convolution; in post-LayerNorm models (the base
  sizes) also the encoder's input LayerNorm, in pre-LayerNorm ("stable layer norm", large) models not.
- "block1".."blockN": the raw output of each transformer layer (transformers' `hidden_states[i]`).
- "blockN.final_layer_norm": only for stable-layer-norm models, the encoder's LayerNorm after the last
  block (transformers' `last_hidden_state`; in transformers 5 `hidden_states[-1]` is the raw blockN).
  Not to be confused with each layer's own `final_layer_norm` module (the pre-FFN norm there).
An adapter after the encoder (`add_adapter`, some fine-tuned wav2vec2 checkpoints) is not read.

Padding invariance: the base models' first CNN layer is a GroupNorm over time, so zero padding changes a
row's features (and their feature extractors return no attention mask). The CNN therefore runs per
utterance on its real samples when it holds a GroupNorm (batched otherwise: a valid frame's receptive
field lies inside the real samples); projection and transformer run once per batch with an attention
mask. data2vec-audio stacks several positional convolutions, so padded frames are zeroed between them
as an utterance alone would see. Input normalisation uses each row's real samples only.

Interventions (`encoders.interventions`), real frames only: "features" through the first block's pre-hook
(its input), each block through its output hook, "blockN.final_layer_norm" on `last_hidden_state`; the
captured states are the intervened ones.
"""
from __future__ import annotations

import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from speechprobe.encoders.base import EncoderError, EncoderOutput, SpeechEncoder

WAV2VEC2_FAMILY = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
SUPPORTED_MODEL_TYPES = (*WAV2VEC2_FAMILY, "whisper")
RANDOM_ARCHITECTURES = SUPPORTED_MODEL_TYPES
RANDOM_SIZES = ("base", "tiny")
HF_PREFIX, RANDOM_PREFIX = "hf:", "random:"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

# The published base configurations (facebook/wav2vec2-base, facebook/hubert-base-ls960,
# microsoft/wavlm-base, facebook/data2vec-audio-base, openai/whisper-base), written out because nothing
# can be downloaded. Only what shapes the inference graph; dropouts do not matter in eval mode.
_CNN_BASE = dict(conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                 conv_bias=False, feat_extract_activation="gelu")
_TRANSFORMER_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-5)
_BASE_CONFIGS: dict[str, dict[str, Any]] = {
    "wav2vec2": {**_CNN_BASE, **_TRANSFORMER_BASE, "feat_extract_norm": "group", "do_stable_layer_norm": False,
                 "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16},
    "hubert": {**_CNN_BASE, **_TRANSFORMER_BASE, "feat_extract_norm": "group", "do_stable_layer_norm": False,
               "feat_proj_layer_norm": True, "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16},
    "wavlm": {**_CNN_BASE, **_TRANSFORMER_BASE, "feat_extract_norm": "group", "do_stable_layer_norm": False,
              "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
              "num_buckets": 320, "max_bucket_distance": 800},
    "data2vec-audio": {**_CNN_BASE, **_TRANSFORMER_BASE, "num_conv_pos_embeddings": 5,
                       "conv_pos_kernel_size": 19, "num_conv_pos_embedding_groups": 16},
    "whisper": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                    decoder_layers=6, decoder_attention_heads=8, decoder_ffn_dim=2048,
                    num_mel_bins=80, max_source_positions=1500, activation_function="gelu"),
}
# Test sizes: the real CNN geometry (so 20 ms frames and the same min_samples) at a fraction of the width.
_TINY = dict(conv_dim=(32,) * 7, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
_TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "wav2vec2": _TINY, "hubert": _TINY, "wavlm": _TINY,
    "data2vec-audio": {**_TINY, "num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5},
    "whisper": dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                    decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=128),
}
# Each published checkpoint's preprocessor_config.json (whisper's is a log-mel front end, see whisper.py).
_FEATURE_EXTRACTOR: dict[str, dict[str, Any]] = {
    "wav2vec2": {"do_normalize": True, "return_attention_mask": False},
    "hubert": {"do_normalize": True, "return_attention_mask": False},
    "wavlm": {"do_normalize": False, "return_attention_mask": True},
    "data2vec-audio": {"do_normalize": True, "return_attention_mask": True},
}


class HFEncoder(SpeechEncoder):
    """A transformers wav2vec2-family model (`...Model`, no head), every transformer layer in one pass."""

    supports_interventions = True

    def __init__(self, model: nn.Module, feature_extractor: Any, name: str) -> None:
        super().__init__()
        config = model.config
        if config.model_type not in WAV2VEC2_FAMILY:
            raise EncoderError(f"{name}: HFEncoder wraps {', '.join(WAV2VEC2_FAMILY)} models, not {config.model_type}")
        self.model = model
        self.name = name
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", 16000))
        self.do_normalize = bool(getattr(feature_extractor, "do_normalize", False))
        self.per_utterance_cnn = getattr(config, "feat_extract_norm", "layer") == "group"
        self.stable_layer_norm = bool(getattr(config, "do_stable_layer_norm", False))
        blocks = len(model.encoder.layers)
        names = ["features", *(f"block{i}" for i in range(1, blocks + 1))]
        if self.stable_layer_norm:
            names.append(f"block{blocks}.final_layer_norm")
        self.layer_names = tuple(names)
        self.layer_dims = (int(config.hidden_size),) * len(names)
        self.min_samples = _min_samples(config.conv_kernel, config.conv_stride)
        self.freeze()

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, trust_remote_code: bool = False) -> SpeechEncoder:
        """Load a local model folder or a hub id; Whisper checkpoints come back as a `WhisperEncoder`.

        Remote code runs only when the caller passes `trust_remote_code=True`.
        """
        source = _resolve(name_or_path)
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        with _as_encoder_error(name_or_path):
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        _check_model_type(name_or_path, config.model_type)
        with _as_encoder_error(name_or_path):
            model = AutoModel.from_pretrained(source, config=config, dtype=torch.float32,
                                              trust_remote_code=trust_remote_code)
            feature_extractor = AutoFeatureExtractor.from_pretrained(source, trust_remote_code=trust_remote_code)
        name = f"{HF_PREFIX}{name_or_path}"
        if config.model_type == "whisper":
            return _whisper(model.get_encoder(), feature_extractor, name)
        return cls(model, feature_extractor, name)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames the CNN gives for `lengths` samples (the model's own formula, no adapter)."""
        return _output_lengths(self.model, lengths)

    def forward(self, waves: Tensor, lengths: Tensor) -> EncoderOutput:
        parameter = next(self.model.parameters())
        device = parameter.device
        waves, lengths = waves.to(device, torch.float32), lengths.to(device, torch.long)
        shortest = int(lengths.min())
        if shortest < self.min_samples:
            raise EncoderError(f"{self.name}: input of {shortest} samples is shorter than min_samples="
                               f"{self.min_samples}")
        if self.do_normalize:
            waves = _normalise(waves, lengths)  # statistics in float32 whatever the model's dtype
        waves = waves.to(parameter.dtype)
        frames = self.frame_lengths(lengths)
        features = self._cnn(waves, lengths, frames)  # (batch, frames, conv_dim)
        mask = torch.arange(features.shape[1], device=device)[None, :] < frames[:, None]
        hidden = self.model.feature_projection(features)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        states = self._encode(hidden, mask, frames)
        return EncoderOutput(states=states, frame_lengths=[frames] * len(states))

    def _cnn(self, waves: Tensor, lengths: Tensor, frames: Tensor) -> Tensor:
        cnn = self.model.feature_extractor
        if not self.per_utterance_cnn:
            return cnn(waves[:, : int(lengths.max())]).transpose(1, 2)[:, : int(frames.max())]
        rows = [cnn(wave[None, :length]).transpose(1, 2)[0] for wave, length in zip(waves, lengths.tolist())]
        return nn.utils.rnn.pad_sequence(rows, batch_first=True)

    def _encode(self, hidden: Tensor, mask: Tensor, frames: Tensor | None = None) -> list[Tensor]:
        """One pass through `model.encoder`; forward hooks read each block's input and outputs (and replace
        them by their intervened version when an intervention is active there; `frames`: real frames per row)."""
        encoder = self.model.encoder
        captured: list[Tensor] = []

        def block_input(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            state = args[0] if args else kwargs["hidden_states"]
            changed = self._intervened(0, state, frames)
            captured.append(changed)
            if changed is state:
                return None
            return ((changed, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": changed})

        def block_output(position: int) -> Any:
            def hook(_module: nn.Module, _args: tuple, output: Any) -> Any:
                state = output[0] if isinstance(output, tuple) else output
                changed = self._intervened(position, state, frames)
                captured.append(changed)
                if changed is state:
                    return None
                return (changed, *output[1:]) if isinstance(output, tuple) else changed
            return hook

        hooks = [encoder.layers[0].register_forward_pre_hook(block_input, with_kwargs=True)]
        hooks += [layer.register_forward_hook(block_output(i + 1)) for i, layer in enumerate(encoder.layers)]
        try:
            with _zero_padding_between_positional_convs(encoder, mask):
                last = encoder(hidden, attention_mask=mask).last_hidden_state
        finally:
            for hook in hooks:
                hook.remove()
        if len(captured) != len(encoder.layers) + 1:  # a skipped block would shift every name after it
            raise RuntimeError(f"{self.name}: read {len(captured)} states from {len(encoder.layers)} blocks")
        if self.stable_layer_norm:
            captured.append(self._intervened(len(captured), last, frames))
        return captured


@contextmanager
def _zero_padding_between_positional_convs(encoder: nn.Module, mask: Tensor) -> Iterator[None]:
    """data2vec-audio's positional embedding is a stack of convolutions: padded frames must be zero before
    each one (as the zero padding of an utterance alone), else they leak into the last valid frames."""
    layers = getattr(encoder.pos_conv_embed, "layers", None)
    if layers is None or len(layers) < 2:
        yield
        return

    def zero_padding(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:  # output: (batch, dim, frames)
        return output * mask[:, None, : output.shape[-1]].to(output.dtype)

    hooks = [layer.register_forward_hook(zero_padding) for layer in layers]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _normalise(waves: Tensor, lengths: Tensor) -> Tensor:
    """Wav2Vec2FeatureExtractor's zero-mean unit-variance normalisation over each row's real samples."""
    mask = (torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]).to(waves.dtype)
    count = lengths.to(waves.dtype)[:, None]
    mean = (waves * mask).sum(dim=1, keepdim=True) / count
    variance = (((waves - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (waves - mean) / torch.sqrt(variance + 1e-7) * mask


def _output_lengths(model: nn.Module, lengths: Tensor) -> Tensor:
    """Frames after the CNN (an adapter is not read); transformers' private method, see speechprobe.compat."""
    from speechprobe.compat import feat_extract_output_lengths

    return feat_extract_output_lengths(model, lengths)


def _min_samples(kernels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """The CNN's receptive field: the shortest input that gives one frame."""
    samples = 1
    for kernel, stride in reversed(list(zip(kernels, strides))):
        samples = (samples - 1) * stride + kernel
    return samples


def _resolve(name_or_path: str) -> str:
    """A local folder (offline) or a hub id; anything else is a missing path."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EncoderError(f"{name_or_path}: expected a model folder (config.json, weights), found a file")
        return str(path)
    if _HUB_ID.fullmatch(name_or_path):
        return name_or_path
    raise EncoderError(f"{name_or_path}: no such model folder")


@contextmanager
def _as_encoder_error(name_or_path: str) -> Iterator[None]:
    """transformers' loading errors are several lines long: keep the first, name the model."""
    try:
        yield
    except pickle.UnpicklingError as error:
        # torch.load(weights_only=True) met a pickle that is more than tensors: never run it.
        raise EncoderError(f"{_checkpoint_file(error, name_or_path)}: refusing to load a pickled checkpoint; "
                           "convert it to safetensors") from None
    except (OSError, ValueError, KeyError) as error:
        if isinstance(error, EncoderError):
            raise
        first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise EncoderError(f"{name_or_path}: cannot load: {first_line.strip()}") from error


def _checkpoint_file(error: BaseException, name_or_path: str) -> str:
    """The weights file torch.load was reading (transformers' `load_state_dict(checkpoint_file)`), or the
    model folder's pickled weights file."""
    traceback = error.__traceback__
    while traceback is not None:
        file = traceback.tb_frame.f_locals.get("checkpoint_file")
        if isinstance(file, (str, Path)):
            return str(file)
        traceback = traceback.tb_next
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        found = sorted(folder.glob("pytorch_model*.bin")) or sorted(folder.glob("*.bin"))
        if found:
            return str(found[0])
    return f"{name_or_path} (pytorch_model.bin)"


def _check_model_type(name_or_path: str, model_type: str) -> None:
    if model_type in SUPPORTED_MODEL_TYPES:
        return
    from transformers.models.auto.modeling_auto import (MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
                                                        MODEL_FOR_CTC_MAPPING_NAMES)

    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if model_type in MODEL_FOR_CTC_MAPPING_NAMES or model_type in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES:
        raise EncoderError(f"{name_or_path}: {model_type} is an audio model this encoder does not support; "
                           f"supported: {supported}")
    raise EncoderError(f"{name_or_path}: {model_type} is not an audio encoder; supported: {supported}")


def _whisper(module: nn.Module, feature_extractor: Any, name: str) -> SpeechEncoder:
    from speechprobe.encoders.whisper import WhisperEncoder  # lazy: the registry lists encoders without importing models

    return WhisperEncoder.from_transformers(module, feature_extractor, name, fast=False)


def parse_random_name(name: str) -> tuple[str, str, int]:
    """"random:wav2vec2", "random:hubert-tiny@3" -> (architecture, size, seed)."""
    spec = name[len(RANDOM_PREFIX):] if name.startswith(RANDOM_PREFIX) else name
    spec, _, seed_text = spec.partition("@")
    if seed_text and not re.fullmatch(r"\d+", seed_text):
        raise EncoderError(f"{name}: the seed after '@' must be a non-negative integer, not {seed_text!r}")
    size = "base"
    for candidate in RANDOM_SIZES:
        if spec.endswith(f"-{candidate}"):
            spec, size = spec[: -len(candidate) - 1], candidate
            break
    if spec not in RANDOM_ARCHITECTURES:
        raise EncoderError(f"{name}: unknown random architecture {spec!r}; known: {', '.join(RANDOM_ARCHITECTURES)} "
                           f"(append -tiny for a test size, @<seed> for another seed)")
    return spec, size, int(seed_text or 0)


def random_name(architecture: str, size: str = "base", seed: int = 0) -> str:
    return f"{RANDOM_PREFIX}{architecture}{'' if size == 'base' else '-' + size}{'' if seed == 0 else f'@{seed}'}"


def random_config(architecture: str, size: str = "base") -> Any:
    """The transformers config of a random baseline: the published base hyper-parameters, or a tiny one."""
    if architecture not in RANDOM_ARCHITECTURES:
        raise EncoderError(f"unknown random architecture {architecture!r}; known: {', '.join(RANDOM_ARCHITECTURES)}")
    if size not in RANDOM_SIZES:
        raise EncoderError(f"unknown size {size!r} for random:{architecture}; known: {', '.join(RANDOM_SIZES)}")
    from transformers import AutoConfig

    settings = dict(_BASE_CONFIGS[architecture])
    if size == "tiny":
        settings.update(_TINY_OVERRIDES[architecture])
    return AutoConfig.for_model(architecture, **settings)


def random_encoder(architecture: str, size: str = "base", seed: int = 0) -> SpeechEncoder:
    """Seeded random weights at a real size: the baseline that shows what architecture alone encodes.

    The global torch RNG is left as it was. Whisper comes back as a `WhisperEncoder`.
    """
    config = random_config(architecture, size)
    name = random_name(architecture, size, seed)
    from transformers import AutoModel, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as TransformersWhisperEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if architecture == "whisper":
            module = TransformersWhisperEncoder(config)
        else:
            model = AutoModel.from_config(config)
    if architecture == "whisper":
        return _whisper(module, WhisperFeatureExtractor(feature_size=config.num_mel_bins), name)
    feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, **_FEATURE_EXTRACTOR[architecture])
    return HFEncoder(model, feature_extractor, name)


def weights_available(name_or_path: str) -> bool:
    """Local folder with a config: yes; random: always; hub id: only if config and weights are cached."""
    if name_or_path.startswith(RANDOM_PREFIX):
        try:
            parse_random_name(name_or_path)
        except EncoderError:
            return False
        return True
    name_or_path = name_or_path[len(HF_PREFIX):] if name_or_path.startswith(HF_PREFIX) else name_or_path
    path = Path(name_or_path).expanduser()
    if path.exists():
        return (path / "config.json").is_file()
    if not _HUB_ID.fullmatch(name_or_path):
        return False
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(name_or_path, filename), str)

    return cached("config.json") and any(cached(f) for f in ("model.safetensors", "model.safetensors.index.json",
                                                               "pytorch_model.bin", "pytorch_model.bin.index.json"))
