"""How far two checkpoints of one architecture lie apart, per stored layer (`speechprobe compare`).

"Transfer learning for speech recognition on a budget" found that fine-tuning moved the weights little, and
mostly in the inner layers. This module puts a number on that for any two encoders of one architecture (a
pretrained model and its fine-tuned self as two `hf:` folders, or an encoder and its `random:` twin): for each
layer name of the store, the weights W that produce that layer from the previous stored one, and

    relative change = ||W_B - W_A|| / ||W_A||

with the Frobenius norm taken over all those parameter tensors together (accumulated in float64 on the CPU).
0 means the weights are bit-identical. A trained encoder against its random twin gives about 1 (trained
weights are far larger than their initialisation, so W_B - W_A is about -W_A); a fine-tuned model moves much
less. The number is about the WEIGHTS that compute a layer: a layer whose own weights did not move still has
other activations when an earlier layer moved. It is a ratio of norms, so a large fixed tensor in a layer
dilutes it: Whisper's "conv" holds the sinusoidal positions (576k of its 1.1M parameters, never trained,
norm ~537 against ~48 for the convolutions) would read ~0.09 even against random weights, and a fine-tune
that moved the convolutions as much as block1 would read 10x less. So parameters that are part of the
architecture rather than learned (Whisper's positions: a buffer in OpenAI's model, `requires_grad=False` in
transformers') are not counted in any layer: they are reported apart under `FIXED`, where a checkpoint that
did change them still shows it. The per-tensor breakdown (`per_tensor=True`) shows where a layer's change sits.

Which parameters compute which layer (the same places `encoders.interventions` intervenes at; each parameter
belongs to at most one layer, the one whose module holds it):
- GE2E: "lstm1".."lstm3" -> `lstm1`..`lstm3`; "embedding" -> `linear` (the d-vector head on the last state).
- Whisper (`whisper-tiny.en`, `hf:` Whisper): "conv" -> `conv1`, `conv2`; "blockK" -> `layers.{K-1}`;
  "blockN.final_layer_norm" -> `layer_norm`; fixed: `embed_positions` (sinusoids, never trained).
- wav2vec2 / HuBERT / WavLM / data2vec-audio: "features" -> CNN (`feature_extractor`), `feature_projection`,
  `pos_conv_embed`, and in post-LayerNorm (base) models the encoder's input `layer_norm`; "blockK" ->
  `layers.{K-1}` (WavLM's relative-position embedding lives in layers.0 and is reused by every block: it is
  counted in block1); "blockN.final_layer_norm" (stable-layer-norm models) -> the encoder's `layer_norm`.
  Not read by the encoder, so "unassigned": `masked_spec_embed` (training-time masking), an adapter.
- CREPE: "convK" -> `convK` and `convK_BN` (weight, bias); "conv6.flat" is a view of conv6 (no parameters
  of its own); "classifier" -> `classifier`.
- MFCC: no parameters at all.
Parameters matching no layer are reported under `UNASSIGNED`, fixed ones under `FIXED`, never dropped. Buffers (e.g. CREPE's
BatchNorm running statistics) are not parameters and are not counted. An encoder class this module has no
map for is refused (`EncoderError`) rather than guessed at.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor

from speechprobe.encoders.base import EncoderError, SpeechEncoder

__all__ = ["FIXED", "UNASSIGNED", "LayerChange", "TensorChange", "fixed_parameters", "layer_parameters",
           "unassigned_parameters", "weight_changes"]

#: the row holding the parameters that compute no stored layer (listed only where there are some)
UNASSIGNED = "(unassigned)"
#: the row holding parameters that are part of the architecture, not learned (a map's entry under this key)
FIXED = "(fixed)"
_CHUNK = 1 << 20  # elements converted to float64 at a time: bounds the extra memory of a big tensor


# --------------------------------------------------------------------------------------------------
# Layer -> parameter-name prefixes, per encoder class


def _ge2e(encoder: SpeechEncoder) -> dict[str, tuple[str, ...]]:
    return {"lstm1": ("lstm1",), "lstm2": ("lstm2",), "lstm3": ("lstm3",), "embedding": ("linear",)}


def _whisper(encoder: SpeechEncoder) -> dict[str, tuple[str, ...]]:
    blocks = len(encoder.encoder.layers)
    prefixes = {"conv": ("encoder.conv1", "encoder.conv2")}
    prefixes.update({f"block{k}": (f"encoder.layers.{k - 1}",) for k in range(1, blocks + 1)})
    prefixes[f"block{blocks}.final_layer_norm"] = ("encoder.layer_norm",)
    prefixes[FIXED] = ("encoder.embed_positions",)  # sinusoids: never trained (see the module docstring)
    return prefixes


def _hf(encoder: SpeechEncoder) -> dict[str, tuple[str, ...]]:
    blocks = len(encoder.model.encoder.layers)
    features = ("model.feature_extractor", "model.feature_projection", "model.encoder.pos_conv_embed")
    prefixes = {"features": features if encoder.stable_layer_norm else (*features, "model.encoder.layer_norm")}
    prefixes.update({f"block{k}": (f"model.encoder.layers.{k - 1}",) for k in range(1, blocks + 1)})
    if encoder.stable_layer_norm:
        prefixes[f"block{blocks}.final_layer_norm"] = ("model.encoder.layer_norm",)
    return prefixes


def _crepe(encoder: SpeechEncoder) -> dict[str, tuple[str, ...]]:
    prefixes = {f"conv{k}": (f"crepe.conv{k}", f"crepe.conv{k}_BN") for k in range(1, 7)}
    return {**prefixes, "conv6.flat": (), "classifier": ("crepe.classifier",)}


def _no_weights(encoder: SpeechEncoder) -> dict[str, tuple[str, ...]]:
    return {name: () for name in encoder.layer_names}


# (module, class, map). Looked up in sys.modules: an encoder of a class can only exist once its module is
# imported, so finding the map never imports a model module (nor transformers).
_MAPS: tuple[tuple[str, str, Callable[[SpeechEncoder], dict[str, tuple[str, ...]]]], ...] = (
    ("speechprobe.encoders.ge2e", "GE2EEncoder", _ge2e),
    ("speechprobe.encoders.whisper", "WhisperEncoder", _whisper),
    ("speechprobe.encoders.hf", "HFEncoder", _hf),
    ("speechprobe.encoders.crepe", "CrepeEncoder", _crepe),
    ("speechprobe.encoders.mfcc_encoder", "MFCCEncoder", _no_weights),
)


def _prefixes(encoder: SpeechEncoder) -> dict[str, tuple[str, ...]]:
    for module_name, class_name, build in _MAPS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if cls is not None and isinstance(encoder, cls):
            prefixes = build(encoder)
            if [layer for layer in prefixes if layer != FIXED] != list(encoder.layer_names):  # map out of date
                raise EncoderError(f"weight changes: the parameter map of {class_name} gives layers "
                                   f"{[layer for layer in prefixes if layer != FIXED]}, {_name(encoder)} stores "
                                   f"{list(encoder.layer_names)}")
            return prefixes
    known = ", ".join(class_name for _, class_name, _ in _MAPS)
    raise EncoderError(f"weight changes: no layer-to-parameter map for encoder class {type(encoder).__name__} "
                       f"({_name(encoder)}); known: {known}")


def _name(encoder: SpeechEncoder) -> str:
    return str(getattr(encoder, "name", type(encoder).__name__))


def _owner(name: str, prefixes: dict[str, tuple[str, ...]]) -> Optional[str]:
    """The one layer whose module holds parameter `name`, or None."""
    owners = [layer for layer, starts in prefixes.items()
              if any(name == start or name.startswith(start + ".") for start in starts)]
    if len(owners) > 1:  # a bug in a map above, never the user's fault
        raise RuntimeError(f"weight changes: parameter {name} is claimed by layers {owners}")
    return owners[0] if owners else None


def _assignment(encoder: SpeechEncoder) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Stored layer -> its parameters; the fixed parameters; the unassigned ones."""
    prefixes = _prefixes(encoder)
    owned: dict[str, list[str]] = {layer: [] for layer in prefixes}
    unassigned: list[str] = []
    for name, _ in encoder.named_parameters():
        owner = _owner(name, prefixes)
        (unassigned if owner is None else owned[owner]).append(name)
    fixed = owned.pop(FIXED, [])
    return owned, fixed, unassigned


def layer_parameters(encoder: SpeechEncoder) -> dict[str, list[str]]:
    """Stored layer -> names (`named_parameters()`) of the learned parameters computing it from the previous layer.

    Every stored layer is a key, in store order; a view with no parameters of its own gets [].
    """
    return _assignment(encoder)[0]


def fixed_parameters(encoder: SpeechEncoder) -> list[str]:
    """Parameters that are part of the architecture, not learned (Whisper's sinusoidal positions)."""
    return _assignment(encoder)[1]


def unassigned_parameters(encoder: SpeechEncoder) -> list[str]:
    """Parameters that compute no stored layer (a CTC head, training-only embeddings): listed, not dropped."""
    return _assignment(encoder)[2]


# --------------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True)
class TensorChange:
    """One parameter tensor's share of a layer's change."""

    name: str
    shape: tuple[int, ...]
    n_parameters: int
    norm_a: float
    norm_b: float
    change: float  # ||B - A||
    relative: Optional[float]  # change / norm_a; None when undefined (see reason)
    reason: Optional[str] = None


@dataclass(frozen=True)
class LayerChange:
    """The weights computing one stored layer (or the `UNASSIGNED` rest): norms and relative change."""

    layer: str
    parameters: tuple[str, ...]
    n_parameters: int
    norm_a: float
    norm_b: float
    change: float  # ||W_B - W_A||, Frobenius over all of the layer's parameters
    relative: Optional[float]  # change / norm_a; None when undefined (see reason)
    reason: Optional[str] = None
    tensors: tuple[TensorChange, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready values (shapes as lists)."""
        row = asdict(self)
        row["parameters"] = list(self.parameters)
        row["tensors"] = [{**item, "shape": list(item["shape"])} for item in row["tensors"]]
        return row


def _squared_sums(a: Tensor, b: Tensor) -> tuple[float, float, float]:
    """sum(a^2), sum(b^2), sum((b - a)^2) in float64 on the CPU, a chunk at a time."""
    a, b = a.detach().reshape(-1), b.detach().reshape(-1)
    sums = [0.0, 0.0, 0.0]
    for start in range(0, a.numel(), _CHUNK):
        x = a[start:start + _CHUNK].to("cpu", torch.float64)
        y = b[start:start + _CHUNK].to("cpu", torch.float64)
        sums[0] += float(x.square().sum())
        sums[1] += float(y.square().sum())
        sums[2] += float((y - x).square().sum())
    return sums[0], sums[1], sums[2]


def _relative(change: float, norm_a: float, n_parameters: int) -> tuple[Optional[float], Optional[str]]:
    if n_parameters == 0:
        return None, "no parameters of its own"
    if not (math.isfinite(norm_a) and math.isfinite(change)):
        return None, "non-finite weights"
    if norm_a == 0.0:
        return None, f"the weights of A are all zero (absolute change {change:.6g})"
    return change / norm_a, None


def _layer_change(layer: str, names: Iterable[str], a: dict[str, Tensor], b: dict[str, Tensor],
                  per_tensor: bool) -> LayerChange:
    names = tuple(names)
    totals = [0.0, 0.0, 0.0]
    tensors = []
    for name in names:
        sums = _squared_sums(a[name], b[name])
        totals = [total + part for total, part in zip(totals, sums)]
        if per_tensor:
            count = a[name].numel()
            relative, reason = _relative(math.sqrt(sums[2]), math.sqrt(sums[0]), count)
            tensors.append(TensorChange(name, tuple(a[name].shape), count, math.sqrt(sums[0]), math.sqrt(sums[1]),
                                        math.sqrt(sums[2]), relative, reason))
    count = sum(a[name].numel() for name in names)
    norm_a, norm_b, change = (math.sqrt(total) for total in totals)
    relative, reason = _relative(change, norm_a, count)
    return LayerChange(layer, names, count, norm_a, norm_b, change, relative, reason, tuple(tensors))


def _check_same_architecture(a: SpeechEncoder, b: SpeechEncoder,
                             params_a: dict[str, Tensor], params_b: dict[str, Tensor]) -> None:
    """One line naming the first difference: layers, then parameters (names, shapes), then module classes."""
    head = f"weight changes: {_name(a)} (A) and {_name(b)} (B) are not one architecture:"
    layers_a, layers_b = tuple(a.layer_names), tuple(b.layer_names)
    if layers_a != layers_b:
        index = next((i for i, (x, y) in enumerate(zip(layers_a, layers_b)) if x != y),
                     min(len(layers_a), len(layers_b)))
        first, second = (layers[index] if index < len(layers) else "absent" for layers in (layers_a, layers_b))
        raise EncoderError(f"{head} layer {index + 1} is {first!r} in A, {second!r} in B")
    for name, tensor in params_a.items():
        if name not in params_b:
            raise EncoderError(f"{head} parameter {name} of A is not in B")
        if tensor.shape != params_b[name].shape:
            raise EncoderError(f"{head} parameter {name} has shape {tuple(tensor.shape)} in A, "
                               f"{tuple(params_b[name].shape)} in B")
    extra = next((name for name in params_b if name not in params_a), None)
    if extra is not None:
        raise EncoderError(f"{head} parameter {extra} of B is not in A")
    modules_b = {name: _class_name(module) for name, module in b.named_modules()}
    for name, module in a.named_modules():  # same tensors, other computation (e.g. wav2vec2 vs HuBERT)
        if modules_b.get(name) != _class_name(module):
            raise EncoderError(f"{head} module {name or '(root)'} is {_class_name(module)} in A, "
                               f"{modules_b.get(name, 'absent')} in B")


def _class_name(module: torch.nn.Module) -> str:
    """By name, not identity: weight-norm parametrisation makes a fresh class per module (ParametrizedConv1d)."""
    return f"{type(module).__module__}.{type(module).__qualname__}"


def weight_changes(a: SpeechEncoder, b: SpeechEncoder, *, per_tensor: bool = False) -> list[LayerChange]:
    """Per stored layer, in store order, how far B's learned weights lie from A's; then `FIXED` and
    `UNASSIGNED`, each if any.

    `a` is the reference (the norm the change is relative to). Raises `EncoderError` (one line, the first
    difference) unless both have the same layers, parameter names and shapes, and module classes.
    `per_tensor` adds each parameter tensor's own numbers to its layer's row.
    """
    params_a, params_b = dict(a.named_parameters()), dict(b.named_parameters())
    _check_same_architecture(a, b, params_a, params_b)
    layers, fixed, unassigned = _assignment(a)
    rows = [_layer_change(layer, names, params_a, params_b, per_tensor) for layer, names in layers.items()]
    if fixed:
        rows.append(_layer_change(FIXED, fixed, params_a, params_b, per_tensor))
    if unassigned:
        rows.append(_layer_change(UNASSIGNED, unassigned, params_a, params_b, per_tensor))
    return rows
