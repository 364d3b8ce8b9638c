"""The one interface every speech encoder implements, so extraction never special-cases a model.

An encoder takes a right-padded batch of waveforms at its own sample rate and returns, for every layer
it exposes, the frame-level states and how many frames of each row are real. Pooling uses only the
real frames, so an utterance's vector does not depend on what it was batched with; each encoder is
responsible for making its valid frames independent of the padding (attention masks, per-utterance
front ends, packed LSTMs).
"""
from __future__ import annotations

from typing import Optional

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from speechprobe.encoders.errors import EncoderError

__all__ = ["EncoderError", "EncoderOutput", "SpeechEncoder", "cache_dir"]


@dataclass
class EncoderOutput:
    """`states[l]` is (batch, frames_l, dim_l); `frame_lengths[l]` is (batch,) real frames per row."""

    states: list[Tensor]
    frame_lengths: list[Tensor]


class SpeechEncoder(nn.Module):
    """Base class: subclasses set the attributes below in `__init__` and implement `forward`.

    - `name`: the registry name it was built from (e.g. "ge2e", "hf:/path/to/model").
    - `sample_rate`: what `forward` expects; corpora are resampled to it on load.
    - `layer_names`, `layer_dims`: every readable layer, input side first; names say exactly what
      each is (e.g. "block4" vs "block4.final_layer_norm").
    - `min_samples`: the shortest input that gives at least one frame in every layer.
    - `max_samples`: the longest input one forward pass takes (Whisper: its 30 s window), or None; extraction
      encodes longer utterances in windows (`encoders.windows`).
    """

    name: str
    sample_rate: int
    layer_names: tuple[str, ...]
    layer_dims: tuple[int, ...]
    min_samples: int
    max_samples: Optional[int] = None

    def forward(self, waves: Tensor, lengths: Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        """`waves` (batch, samples) float32, zero-padded on the right; `lengths` (batch,) real samples."""
        raise NotImplementedError

    # ---- input features: the split that input attribution differentiates through ------------------

    #: what `input_features` returns: "waveform" (batch, samples), or a spectrogram (batch, frames, bins)
    feature_kind: str = "waveform"
    #: samples per feature frame (1 for the waveform itself)
    feature_hop: int = 1

    def input_features(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """The encoder's input features: by default the waveform; spectrogram encoders override it.

        `forward_features(input_features(waves, lengths), lengths)` equals `forward(waves, lengths)`;
        gradients with respect to these features are what input attribution reads.
        """
        return waves

    def forward_features(self, features: Tensor, lengths: Tensor, last_layer: int | None = None) -> EncoderOutput:
        """The rest of the encoder from `input_features`'s output; `lengths` are still in samples.

        With `last_layer`, an encoder may stop after that layer (later entries of `states` may be missing).
        """
        return self.forward(features, lengths)

    def feature_frames(self, lengths: Tensor) -> Tensor:
        """How many feature frames (or samples) of each row are real audio."""
        return torch.as_tensor(lengths, dtype=torch.int64)

    # ---- interventions (encoders.interventions): one layer's frames changed during the forward pass ------

    #: True where `forward` (and `forward_features`) pass every layer through the active intervention as the
    #: layer is produced, before later layers read it; `intervene` refuses an encoder that does not
    supports_interventions: bool = False

    def active_intervention(self, position: int | None = None):  # -> BoundIntervention | None
        """The intervention set by `encoders.interventions.intervene`, if any (and if at layer `position`)."""
        active = self.__dict__.get("_active_intervention")
        if active is None or (position is not None and active.position != position):
            return None
        return active

    def _intervened(self, position: int, states: Tensor, lengths: Tensor | None = None,
                    time_offsets: Tensor | None = None) -> Tensor:
        """`states` (batch, frames, dim) of layer `position`, intervened on the first `lengths[b]` frames of
        each row (None: every frame) when an intervention at that layer is active; else `states` itself."""
        active = self.active_intervention(position)
        return states if active is None else active.padded(states, lengths, time_offsets)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "layers": list(self.layer_names),
            "dims": list(self.layer_dims),
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    def weights_hash(self) -> str:
        """sha256 over every parameter and buffer (names, shapes, bytes): what a store's cache keys on."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.state_dict().items()):
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        return digest.hexdigest()[:16]

    def freeze(self) -> SpeechEncoder:
        """Eval mode, no gradients: probing reads a network, it never changes one."""
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self


def cache_dir() -> Path:
    """Where converted weights are kept: $SPEECHPROBE_CACHE, else $XDG_CACHE_HOME/speechprobe."""
    root = os.environ.get("SPEECHPROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "speechprobe")
    return Path(root)
