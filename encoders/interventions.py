"""Interventions in the forward pass: replace or transform chosen neurons of ONE layer while the encoder
runs, so that every later layer sees the change (issue 17).

    from speechprobe.encoders.interventions import Intervention, intervene

    ablation = Intervention.mean("lstm2", neurons=(3, 17), values=(0.12, -0.40))
    with intervene(encoder, ablation):
        output = encoder(waves, lengths)          # lstm2's neurons 3 and 17 hold the means; lstm3 sees them

    eraser = LeaceEraser().fit(X, y)              # any object with mean_ (D,), proj_left_ (D, r), proj_right_ (r, D)
    with intervene(encoder, Intervention.erase("block2", eraser)):
        output = encoder(waves, lengths)          # x -> x - ((x - mean_) @ proj_right_.T) @ proj_left_.T

`extract(corpus, encoder, out, intervention=...)` writes a store of the intervened encoder; its manifest
records `Intervention.describe()`, and its cache key includes it (a store without one keeps its key).

Modes (the values are raw activations of the layer; a caller working in standardised units converts them,
e.g. `mean + z * std`, so `value` covers "z standard deviations" and zero-in-standardised-units is `mean`):

- `mean`: each chosen neuron takes the given value, meant to be its mean over the corpus's real frames
  (`layer_frames(...).mean(0)`). In distribution: the ablation DESIGN.md makes the default.
- `value`: the same replacement with any given per-neuron values (recorded under its own name).
- `zero`: the raw activation 0, an out-of-distribution shift, named as such.
- `resample`: the chosen neurons of every frame take the values of one row of `bank`, frame vectors of this
  layer collected from other utterances (`layer_frames`); one bank row per frame, so the chosen neurons keep
  their joint distribution. The row for the frame at (0-based) time t is `hash(seed, t) mod len(bank)`: the
  same seed gives the same values, and an utterance's values never depend on what it is batched with.
  Not chosen: permuting the rows of the batch, since a vector would then depend on its batch companions
  (breaking the store's batch invariance), on the batch size, and fail for a batch of one.
- `transform`: `affine=(mean, left, right)` (or an eraser object with `mean_`, `proj_left_`, `proj_right_`)
  applies x -> x - ((x - mean) @ right.T) @ left.T to the chosen neurons' sub-vector of each frame (LEACE
  inside the forward pass); `function=` any callable mapping an (n, k) tensor of frames to (n, k). A
  callable has no content to key a cache on, so extraction refuses it (use `affine` there).

`neurons=None` (the default) means every neuron of the layer; `neurons=()` means none: a no-op that still runs
the machinery, the control every intervention test needs.

Which frames: every frame that an utterance's real frames can read, and no frame that exists only because
of the batch. For most encoders these are exactly the real frames (`frame_lengths`): GE2E's packed LSTMs,
whisper's fast mode (padded frames are masked out of attention), the wav2vec2 family (attention mask),
CREPE (only real windows are computed), MFCC (deltas clamp to real frames). Two encoders compute frames of
their own padding per utterance, which later layers do read, identical whatever the batch; leaving them
unchanged would let the neuron reach the output around the intervention, so they are intervened on too:
faithful Whisper's 30 s window (real frames attend to its silent frames), and the padded tail of the last
of GE2E's 1.6 s d-vector windows (the d-vector reads each window's last step). Batch padding is never
touched, so padding invariance holds under every intervention.

How each encoder applies it (each calls `SpeechEncoder._intervened` / the bound intervention where a layer
is produced, before anything later reads it; an encoder that does not sets `supports_interventions = False`
and `intervene` refuses it):
- GE2E: lstm1..lstm3 on the packed sequence's data (real frames only) in the whole-utterance pass, and on
  each d-vector window in the partials pass (the same values at the same absolute frame); "embedding"
  (utterance-level partial embeddings, nothing after it) on the stored partials.
- Whisper: after the convolutions plus positions ("conv"), after each block, after the final LayerNorm.
- wav2vec2 / HuBERT / WavLM / data2vec-audio: "features" through a pre-hook on the first block (its input),
  each block through a forward hook on its output, "blockN.final_layer_norm" on `last_hidden_state`.
- CREPE: a conv layer's state is a channel's mean over positions; a replacement sets the channel to the
  value at every position (its mean is then the value: the channel's pattern is gone), a transform adds
  the change of the mean at every position (the pattern is kept, shifted). The stored state is the exact
  new mean. "conv6.flat" changes the classifier's input (conv6, an earlier view of it, is unchanged),
  "classifier" the sigmoid outputs.
- MFCC: "mfcc" before the deltas are computed (they see the change), "mfcc+deltas" on the stacked frames.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from speechprobe.encoders.base import EncoderError, SpeechEncoder

__all__ = ["MODES", "AffineMap", "BoundIntervention", "Intervention", "intervene", "layer_frames"]

MODES = ("mean", "value", "zero", "resample", "transform")
_FILLS = ("mean", "value", "zero", "resample")
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=np.float64)
        digest.update(f"{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _frozen_array(value: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise EncoderError(f"intervention: {name} must be numbers, got {type(value).__name__}") from None
    if array.ndim != ndim:
        raise EncoderError(f"intervention: {name} must be {ndim}-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise EncoderError(f"intervention: {name} holds NaN or infinite values")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class AffineMap:
    """x -> x - ((x - mean) @ right.T) @ left.T: mean (k,), left (k, r), right (r, k) (LEACE's form)."""

    mean: np.ndarray
    left: np.ndarray
    right: np.ndarray

    def __post_init__(self) -> None:
        mean = _frozen_array(self.mean, "the affine map's mean", 1)
        left = _frozen_array(self.left, "the affine map's left factor", 2)
        right = _frozen_array(self.right, "the affine map's right factor", 2)
        k, r = len(mean), left.shape[1]
        if left.shape != (k, r) or right.shape != (r, k):
            raise EncoderError(f"intervention: affine map shapes do not fit: mean {mean.shape}, left {left.shape}, "
                               f"right {right.shape} (expected (k,), (k, r), (r, k))")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "left", left)
        object.__setattr__(self, "right", right)

    @classmethod
    def coerce(cls, value: Any) -> AffineMap:
        """From an AffineMap, a (mean, left, right) triple, or an eraser with mean_, proj_left_, proj_right_."""
        if isinstance(value, cls):
            return value
        if all(hasattr(value, name) for name in ("mean_", "proj_left_", "proj_right_")):
            return cls(value.mean_, value.proj_left_, value.proj_right_)
        if isinstance(value, (tuple, list)) and len(value) == 3:
            return cls(*value)
        raise EncoderError(f"intervention: affine must be (mean, left, right) or a fitted eraser (mean_, "
                           f"proj_left_, proj_right_), got {type(value).__name__}")

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def rank(self) -> int:
        return self.left.shape[1]


@dataclass(frozen=True, eq=False)
class Intervention:
    """What to do to one layer's frames during the forward pass (see the module docstring for the modes).

    `layer`: a layer name of the encoder (or its position); `neurons`: indices into that layer's dim, None for
    all of them, () for none; `values`: one raw value per chosen neuron (`mean`, `value`); `seed` and `bank`
    ((rows, k) or (rows, layer dim) frame vectors): `resample`; `affine` or `function`: `transform`.
    """

    layer: str | int
    neurons: Optional[tuple[int, ...]] = None
    mode: str = "mean"
    values: Optional[tuple[float, ...]] = None
    seed: int = 0
    bank: Optional[np.ndarray] = field(default=None, repr=False)
    affine: Optional[AffineMap] = field(default=None, repr=False)
    function: Optional[Callable[[Tensor], Tensor]] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        if self.mode not in MODES:
            raise EncoderError(f"unknown intervention mode {self.mode!r}; choose from {', '.join(MODES)}")
        if not isinstance(self.layer, (str, int)) or isinstance(self.layer, bool):
            raise EncoderError(f"intervention: layer must be a layer name or position, got {self.layer!r}")
        where = f"intervention ({self.mode}) on layer {self.layer}"
        if self.neurons is not None:
            if isinstance(self.neurons, Tensor):
                neurons = self.neurons.tolist()
            elif isinstance(self.neurons, (str, bytes)) or not hasattr(self.neurons, "__iter__"):
                raise EncoderError(f"{where}: neurons must be a sequence of indices, got {self.neurons!r}")
            else:
                neurons = list(self.neurons)
            if any(isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) for n in neurons):
                raise EncoderError(f"{where}: neuron indices must be whole numbers, got {neurons!r}")
            neurons = tuple(int(n) for n in neurons)
            negative = [n for n in neurons if n < 0]
            if negative:
                raise EncoderError(f"{where}: neuron {negative[0]} is out of range (indices start at 0)")
            if len(set(neurons)) != len(neurons):
                repeated = next(n for n in neurons if neurons.count(n) > 1)
                raise EncoderError(f"{where}: neuron {repeated} is chosen twice")
            set_("neurons", neurons)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise EncoderError(f"{where}: seed must be a non-negative whole number, got {self.seed!r}")
        set_("seed", int(self.seed))
        k = None if self.neurons is None else len(self.neurons)
        # values: mean and value only
        if self.mode in ("mean", "value"):
            if self.values is None:
                raise EncoderError(f"{where}: needs values (one per chosen neuron)")
            values = _frozen_array(self.values, f"{where}: values", 1)
            if k is not None and len(values) != k:
                raise EncoderError(f"{where}: {len(values)} values for {k} neurons")
            set_("values", tuple(float(v) for v in values))
        elif self.values is not None:
            raise EncoderError(f"{where}: takes no values")
        # bank: resample only
        if self.mode == "resample":
            if self.bank is None:
                raise EncoderError(f"{where}: needs a bank of frame vectors (see layer_frames)")
            bank = _frozen_array(self.bank, f"{where}: bank", 2)
            if len(bank) == 0:
                raise EncoderError(f"{where}: the bank is empty")
            set_("bank", bank)
        elif self.bank is not None:
            raise EncoderError(f"{where}: takes no bank")
        # affine / function: transform only
        if self.mode == "transform":
            if (self.affine is None) == (self.function is None):
                raise EncoderError(f"{where}: needs exactly one of affine= and function=")
            if self.affine is not None:
                affine = AffineMap.coerce(self.affine)
                if k is not None and affine.dim != k:
                    raise EncoderError(f"{where}: affine map of dim {affine.dim} for {k} neurons")
                set_("affine", affine)
            elif not callable(self.function):
                raise EncoderError(f"{where}: function must be callable")
        elif self.affine is not None or self.function is not None:
            raise EncoderError(f"{where}: takes no affine map or function")

    # ---- constructors ----------------------------------------------------------------------------------

    @classmethod
    def mean(cls, layer: str | int, neurons: Optional[Sequence[int]], values: Any) -> Intervention:
        return cls(layer, _tuple(neurons), "mean", values=values)

    @classmethod
    def value(cls, layer: str | int, neurons: Optional[Sequence[int]], values: Any) -> Intervention:
        return cls(layer, _tuple(neurons), "value", values=values)

    @classmethod
    def zero(cls, layer: str | int, neurons: Optional[Sequence[int]] = None) -> Intervention:
        return cls(layer, _tuple(neurons), "zero")

    @classmethod
    def resample(cls, layer: str | int, neurons: Optional[Sequence[int]], bank: Any, seed: int = 0) -> Intervention:
        return cls(layer, _tuple(neurons), "resample", seed=seed, bank=bank)

    @classmethod
    def erase(cls, layer: str | int, eraser: Any, neurons: Optional[Sequence[int]] = None) -> Intervention:
        """An affine transform from a fitted eraser (mean_, proj_left_, proj_right_) or a (mean, left, right) triple."""
        return cls(layer, _tuple(neurons), "transform", affine=AffineMap.coerce(eraser))

    @classmethod
    def transform(cls, layer: str | int, function: Callable[[Tensor], Tensor],
                  neurons: Optional[Sequence[int]] = None) -> Intervention:
        return cls(layer, _tuple(neurons), "transform", function=function)

    # ---- description and key ---------------------------------------------------------------------------

    @property
    def content_keyed(self) -> bool:
        """False for a callable transform: nothing about it can be hashed, so no cache may key on it."""
        return self.function is None

    def describe(self) -> dict[str, Any]:
        """JSON-able: what a store's manifest records and its cache key hashes (arrays by content digest)."""
        info: dict[str, Any] = {"layer": self.layer, "mode": self.mode,
                                "neurons": "all" if self.neurons is None else list(self.neurons)}
        if self.values is not None:
            info["values"] = list(self.values)
        if self.bank is not None:
            info.update(seed=self.seed, bank={"rows": int(self.bank.shape[0]), "dim": int(self.bank.shape[1]),
                                              "sha256": _array_digest(self.bank)})
        if self.affine is not None:
            info["affine"] = {"dim": self.affine.dim, "rank": self.affine.rank,
                              "sha256": _array_digest(self.affine.mean, self.affine.left, self.affine.right)}
        if self.function is not None:
            function = self.function
            info["function"] = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"
        return info

    def key(self) -> str:
        """A content hash of `describe()` (16 hex digits)."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line for people: "mean of 2 neurons at lstm2"."""
        chosen = "every neuron" if self.neurons is None else f"{len(self.neurons)} neuron{'s' * (len(self.neurons) != 1)}"
        return f"{self.mode} of {chosen} at {self.layer}"

    def bind(self, encoder: SpeechEncoder) -> BoundIntervention:
        """Check this intervention against `encoder` (layer, neuron range, dims): an EncoderError names the problem."""
        return BoundIntervention(self, encoder)


def _tuple(neurons: Optional[Sequence[int]]) -> Optional[tuple[int, ...]]:
    if neurons is None or isinstance(neurons, (str, bytes)) or not hasattr(neurons, "__iter__"):
        return neurons  # type: ignore[return-value] - validated by Intervention
    return tuple(neurons.tolist() if isinstance(neurons, (Tensor, np.ndarray)) else neurons)


def _bank_rows(seed: int, frames: int, rows: int) -> np.ndarray:
    """Bank row for each time 0..frames-1: splitmix64(splitmix64(seed) + (t + 1) * golden) mod rows."""
    def mix(z: np.ndarray) -> np.ndarray:
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        state = mix(np.array([seed], dtype=np.uint64) + _GOLDEN)
        times = np.arange(1, frames + 1, dtype=np.uint64)
        return (mix(state + times * _GOLDEN) % np.uint64(rows)).astype(np.int64)


class BoundIntervention:
    """An intervention checked against one encoder, applied by that encoder's forward pass.

    `position`, `layer_name`, `dim`: the layer; `columns`: the chosen neurons (a slice for all of them);
    `calls`: how many times it was applied (a test sees that a forward pass reached it).
    """

    def __init__(self, intervention: Intervention, encoder: SpeechEncoder) -> None:
        names = tuple(encoder.layer_names)
        layer = intervention.layer
        where = f"intervention ({intervention.mode}) on {encoder.name}"
        if isinstance(layer, int) or (isinstance(layer, str) and layer not in names and layer.lstrip("-").isdigit()):
            if not -len(names) <= int(layer) < len(names):
                raise EncoderError(f"{where}: no layer {layer}; it has {len(names)} ({', '.join(names)})")
            position = int(layer) % len(names)
        elif layer in names:
            position = names.index(layer)
        else:
            raise EncoderError(f"{where}: encoder {encoder.name} has no layer {layer!r}; layers: {', '.join(names)}")
        if not getattr(encoder, "supports_interventions", False):
            raise EncoderError(f"{where}: encoder {encoder.name} ({type(encoder).__name__}) does not support "
                               "interventions in its forward pass")
        dim = int(encoder.layer_dims[position])
        name = names[position]
        where = f"intervention ({intervention.mode}) on {encoder.name} layer {name}"
        neurons = intervention.neurons
        if neurons is not None:
            outside = [n for n in neurons if n >= dim]
            if outside:
                raise EncoderError(f"{where}: neuron {outside[0]} is out of range for its {dim} neurons")
        k = dim if neurons is None else len(neurons)
        if intervention.values is not None and len(intervention.values) != k:
            raise EncoderError(f"{where}: {len(intervention.values)} values for {k} neurons")
        bank = intervention.bank
        if bank is not None:
            if bank.shape[1] == k:
                pass
            elif bank.shape[1] == dim and neurons is not None:
                bank = bank[:, list(neurons)]
            else:
                raise EncoderError(f"{where}: bank rows have {bank.shape[1]} values; expected {k} (the chosen "
                                   f"neurons) or {dim} (the layer)")
        if intervention.affine is not None and intervention.affine.dim != k:
            raise EncoderError(f"{where}: affine map of dim {intervention.affine.dim} for {k} neurons")
        self.intervention = replace(intervention, layer=name)  # the name, whatever the caller gave
        self.encoder_name, self.layer_names = encoder.name, names
        self.position, self.layer_name, self.dim, self.k = position, name, dim, k
        self.mode = intervention.mode
        self._bank = bank
        self._index = None if neurons is None else torch.tensor(neurons, dtype=torch.long)
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, Tensor]] = {}
        self._bank_table: Optional[np.ndarray] = None
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return self.intervention.describe()

    @property
    def content_keyed(self) -> bool:
        return self.intervention.content_keyed

    def columns(self, device: torch.device) -> slice | Tensor:
        """Index of the chosen neurons along the last axis (a slice when they are all of them)."""
        return slice(None) if self._index is None else self._tensors(device, torch.float32)["index"]

    def _tensors(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        found = self._cache.get((device, dtype))
        if found is None:
            found = {"index": (self._index if self._index is not None else torch.arange(self.dim)).to(device)}
            intervention = self.intervention
            if intervention.values is not None:
                found["values"] = torch.tensor(intervention.values, dtype=dtype, device=device)
            if self._bank is not None:
                found["bank"] = torch.tensor(self._bank, dtype=dtype, device=device)
            if intervention.affine is not None:
                affine = intervention.affine
                found.update({name: torch.tensor(array, dtype=dtype, device=device) for name, array in
                              (("mean", affine.mean), ("left", affine.left), ("right", affine.right))})
            self._cache[(device, dtype)] = found
        return found

    def _rows_for(self, times: Tensor) -> Tensor:
        frames = int(times.max()) + 1 if times.numel() else 0
        if self._bank_table is None or len(self._bank_table) < frames:
            self._bank_table = _bank_rows(self.intervention.seed, max(frames, 1024), len(self._bank))
        return torch.from_numpy(self._bank_table).to(times.device)[times]

    # ---- application -----------------------------------------------------------------------------------

    def rows(self, frames: Tensor, times: Tensor) -> Tensor:
        """(n, dim) frames (each at time `times[i]` of its utterance) -> a new (n, dim) tensor, intervened."""
        self.calls += 1
        if frames.dim() != 2 or frames.shape[1] != self.dim:
            raise EncoderError(f"intervention on {self.encoder_name} layer {self.layer_name}: expected frames "
                               f"(n, {self.dim}), got {tuple(frames.shape)}")
        compute = torch.promote_types(frames.dtype, torch.float32)
        tensors = self._tensors(frames.device, compute)
        columns = slice(None) if self._index is None else tensors["index"]
        n = frames.shape[0]
        mode = self.mode
        if mode == "zero":
            new = frames.new_zeros(n, self.k)
        elif mode in ("mean", "value"):
            new = tensors["values"].expand(n, self.k)
        elif mode == "resample":
            new = tensors["bank"][self._rows_for(times.to(frames.device, torch.long))]
        elif self.intervention.affine is not None:
            x = frames[:, columns].to(compute)
            new = x - ((x - tensors["mean"]) @ tensors["right"].T) @ tensors["left"].T
        else:
            new = self.intervention.function(frames[:, columns].clone())
            if not isinstance(new, Tensor) or tuple(new.shape) != (n, self.k):
                raise EncoderError(f"intervention on {self.encoder_name} layer {self.layer_name}: the transform "
                                   f"function must return a ({n}, {self.k}) tensor, got "
                                   f"{tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__}")
        out = frames.clone()
        out[:, columns] = new.to(frames.dtype)
        return out

    def padded(self, states: Tensor, lengths: Optional[Tensor] = None, time_offsets: Optional[Tensor] = None) -> Tensor:
        """(batch, frames, dim) -> a new tensor with the first `lengths[b]` frames of row b intervened (None:
        every frame); frame t of row b is at time `t + time_offsets[b]` of its utterance."""
        batch, frames, _ = states.shape
        time = torch.arange(frames, device=states.device)
        times = time[None, :].expand(batch, frames)
        if time_offsets is not None:
            times = times + time_offsets.to(states.device, torch.long)[:, None]
        if lengths is None:
            flat = self.rows(states.reshape(batch * frames, -1), times.reshape(-1))
            return flat.reshape(states.shape)
        mask = time[None, :] < lengths.to(states.device)[:, None]
        out = states.clone()
        out[mask] = self.rows(states[mask], times[mask])
        return out

    def packed(self, data: Tensor, batch_sizes: Tensor) -> Tensor:
        """A PackedSequence's (real frames only, time-major) data -> the same, intervened."""
        times = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes.cpu())
        return self.rows(data, times.to(data.device))


@contextmanager
def intervene(encoder: SpeechEncoder, intervention: Intervention | BoundIntervention) -> Iterator[BoundIntervention]:
    """Every forward pass of `encoder` inside the block applies `intervention` (one at a time)."""
    bound = intervention if isinstance(intervention, BoundIntervention) else intervention.bind(encoder)
    if bound.encoder_name != encoder.name or bound.layer_names != tuple(encoder.layer_names):
        raise EncoderError(f"intervention bound to {bound.encoder_name} cannot run on {encoder.name}")
    if encoder.__dict__.get("_active_intervention") is not None:
        raise EncoderError(f"{encoder.name}: an intervention is already active; one at a time")
    object.__setattr__(encoder, "_active_intervention", bound)
    try:
        yield bound
    finally:
        object.__setattr__(encoder, "_active_intervention", None)


def layer_frames(encoder: SpeechEncoder, waves: Tensor, lengths: Tensor, layer: str | int, *,
                 max_frames: Optional[int] = None, seed: int = 0) -> Tensor:
    """(n, dim) float32 real frames of one layer (a plain forward pass): for `mean` values and `resample` banks.

    With `max_frames`, a seeded random subset of them.
    """
    position = _position(encoder, layer)
    with torch.no_grad():
        output = encoder(waves, lengths)
    states, counts = output.states[position], output.frame_lengths[position]
    frames = torch.cat([states[row, : int(n)] for row, n in enumerate(counts.tolist())]).float().cpu()
    if max_frames is not None and len(frames) > max_frames:
        generator = torch.Generator().manual_seed(seed)
        frames = frames[torch.randperm(len(frames), generator=generator)[:max_frames].sort().values]
    return frames


def _position(encoder: SpeechEncoder, layer: str | int) -> int:
    names = tuple(encoder.layer_names)
    if isinstance(layer, str) and layer in names:
        return names.index(layer)
    if isinstance(layer, str) and layer.lstrip("-").isdigit():
        layer = int(layer)
    if isinstance(layer, int) and not isinstance(layer, bool) and -len(names) <= layer < len(names):
        return layer % len(names)
    raise EncoderError(f"encoder {encoder.name} has no layer {layer!r}; layers: {', '.join(names)}")
