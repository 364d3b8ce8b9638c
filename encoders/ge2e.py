"""The GE2E speaker encoder whose weights ship in PyPI `resemblyzer` 0.1.4, every layer readable.

Rebuilt from resemblyzer's `audio.py`, `hparams.py` and `voice_encoder.py` without importing the
package (it pulls librosa and webrtcvad, and its `typing` requirement shadows the standard library):

- Front end: `preprocess_wav`'s volume normalisation to -30 dBFS (gain only ever raised), computed per
  row over its real samples; then `wav_to_mel_spectrogram`: librosa's `melspectrogram` with n_fft 400
  (25 ms), hop 160 (10 ms), 40 Slaney mel bands, power 2. It is a *power* mel spectrogram, not a log-mel
  (audio.py says so; DESIGN.md's "log-mel" is wrong). Centre padding is zeros, librosa >= 0.10's
  default (0.9 reflected, which changes only the first frame); zeros also make a row's frames
  independent of the batch padding that follows it.
- Skipped: `trim_long_silences` (webrtcvad is not installed, and our corpora carry only short random
  padding, not the long pauses it removes). Inputs are encoded as given.
- Model: the checkpoint's 3-layer `nn.LSTM(40, 256)` split into three 1-layer LSTMs with the same
  weights, then Linear 256->256, ReLU, L2 norm (1.42 M parameters).

Layers: "lstm1".."lstm3" are the frame-level states of each LSTM run over the whole utterance (packed,
so padding never enters). "embedding" is resemblyzer's `embed_utterance`: windows of 160 frames
(1.6 s) every 77 frames (rate 1.3/s), the last kept if it covers 75% of a window (always at least one),
each run through the LSTM stack from a zero state, last hidden state -> Linear -> ReLU -> L2 norm. Its
frames are these partial embeddings, so mean pooling gives resemblyzer's average *before* its final
renormalisation (renormalise the pooled vector to get resemblyzer's d-vector exactly).

Interventions (`encoders.interventions`): an intervention at lstm k changes the packed data of the
whole-utterance pass (real frames only) and every d-vector window's LSTM states (all 160 frames: a
window's zero-padded tail is resemblyzer's own input, read by the last step the d-vector takes), at the
same absolute frame times, so later layers and the "embedding" see it. At "embedding" it changes the
partial embeddings themselves (nothing comes after them).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from speechprobe.encoders.base import EncoderError, EncoderOutput, SpeechEncoder
from speechprobe.encoders.frontend import centred_frame_count, mel_filterbank, power_spectrogram

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40
HIDDEN, EMBEDDING = 256, 256
PARTIAL_FRAMES = 160                                      # 1.6 s windows (hparams.partials_n_frames)
PARTIAL_RATE, MIN_COVERAGE = 1.3, 0.75                    # embed_utterance's defaults
PARTIAL_STEP = int(round(SAMPLE_RATE / PARTIAL_RATE / HOP))  # 77 frames between window starts
LOG_FLOOR = 1e-30                                         # input_features' floor before the log
TARGET_DBFS = -30.0                                       # hparams.audio_norm_target_dBFS
WEIGHTS_FILE = "pretrained.pt"


def default_weights_path() -> Path | None:
    """resemblyzer/pretrained.pt, found without importing the package; None if it is not installed."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE


def weights_available() -> bool:
    path = default_weights_path()
    return path is not None and path.is_file()


def partial_starts(n_samples: int) -> list[int]:
    """First mel frame of each partial window, as resemblyzer's `compute_partial_slices` places them."""
    n_frames = -(-(n_samples + 1) // HOP)
    steps = max(1, n_frames - PARTIAL_FRAMES + PARTIAL_STEP + 1)
    starts = list(range(0, steps, PARTIAL_STEP))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def normalise_volume(waves: Tensor, lengths: Tensor) -> Tensor:
    """Raise each row to -30 dBFS RMS over its real samples (never lower it), as `preprocess_wav` does.

    Silent rows are left as they are (resemblyzer would turn them into NaNs).
    """
    power = waves.double().pow(2).sum(dim=1) / lengths.to(waves.device).clamp_min(1).double()
    rms = power.sqrt()
    target = 10.0 ** (TARGET_DBFS / 20.0)
    gain = torch.where(rms > 0, target / rms.clamp_min(1e-300), torch.ones_like(rms)).clamp_min(1.0)
    return waves * gain.to(waves.dtype)[:, None]


def load_checkpoint(path: Path) -> dict[str, Tensor]:
    """The checkpoint's `model_state` (tensors only; its optimizer state is ignored)."""
    if not path.is_file():
        raise EncoderError(f"GE2E weights file not found: {path} (install resemblyzer==0.1.4 --no-deps)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["model_state"]
    except Exception as error:  # noqa: BLE001 - any unreadable file is one clear line
        raise EncoderError(f"GE2E weights file {path} is not a resemblyzer checkpoint: {error}") from None
    return {key: value for key, value in state.items() if isinstance(value, Tensor)}


class GE2EEncoder(SpeechEncoder):
    """resemblyzer's VoiceEncoder with its LSTM split per layer and a batched torch front end."""

    supports_interventions = True

    def __init__(self, weights_path: str | Path | None = None, *, pretrained: bool = True, seed: int = 0) -> None:
        """`pretrained=False` keeps the architecture with seeded random weights (PyTorch's default init)."""
        super().__init__()
        self.name = "ge2e" if pretrained else f"ge2e-random@{seed}"
        self.sample_rate = SAMPLE_RATE
        self.layer_names = ("lstm1", "lstm2", "lstm3", "embedding")
        self.layer_dims = (HIDDEN, HIDDEN, HIDDEN, EMBEDDING)
        self.min_samples = 1  # a centred STFT and `compute_partial_slices` give a frame and a window for 1 sample
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lstm1 = nn.LSTM(N_MELS, HIDDEN, batch_first=True)
            self.lstm2 = nn.LSTM(HIDDEN, HIDDEN, batch_first=True)
            self.lstm3 = nn.LSTM(HIDDEN, HIDDEN, batch_first=True)
            self.linear = nn.Linear(HIDDEN, EMBEDDING)
        self.register_buffer("mel_basis", mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS), persistent=False)
        if pretrained:
            path = Path(weights_path) if weights_path is not None else default_weights_path()
            if path is None:
                raise EncoderError("GE2E weights not found: the resemblyzer package (resemblyzer/pretrained.pt) "
                                   "is not installed")
            self.load_resemblyzer_state(load_checkpoint(path), path)
        self.freeze()

    @property
    def lstms(self) -> tuple[nn.LSTM, nn.LSTM, nn.LSTM]:
        return self.lstm1, self.lstm2, self.lstm3

    def load_resemblyzer_state(self, state: dict[str, Tensor], source: Path | str = "checkpoint") -> None:
        """Map `lstm.*_l{k}` onto `lstm{k+1}.*_l0`; `linear.*` as is; GE2E's similarity scalars are dropped."""
        mapped: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith("lstm."):
                stem, layer = key[len("lstm."):].rsplit("_l", 1)
                mapped[f"lstm{int(layer) + 1}.{stem}_l0"] = value
            elif key.startswith("linear."):
                mapped[key] = value
        try:
            self.load_state_dict(mapped, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()
            raise EncoderError(f"GE2E weights in {source} do not fit the model: {' '.join(first)}") from None

    def mel(self, waves: Tensor) -> Tensor:
        """(batch, samples) -> (batch, frames, 40) power mel spectrogram (librosa's melspectrogram)."""
        spec = power_spectrogram(waves, N_FFT, HOP)
        return torch.matmul(self.mel_basis, spec).transpose(1, 2)

    def embed_partials(self, windows: Tensor, starts: Tensor | None = None) -> Tensor:
        """(n, 160, 40) mel windows -> (n, 256) L2-normalised partial embeddings (VoiceEncoder.forward).

        `starts`: each window's first frame in its utterance (the times an active intervention sees; 0 if None).
        """
        hidden = windows
        for position, lstm in enumerate(self.lstms):
            hidden, _ = lstm(hidden)
            hidden = self._intervened(position, hidden, None, starts)
        return F.normalize(F.relu(self.linear(hidden[:, -1])), dim=1)

    # The input features are the natural log of the power mel (floored at LOG_FLOOR), so that attribution
    # baselines, noise and gradient x input live on a log scale as for any log-mel front end.
    feature_kind = "log-mel"
    feature_hop = HOP

    def _power_mel(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """(batch, frames, 40) power mel after volume normalisation, padded past the last window."""
        lengths = self._checked_lengths(waves, lengths)
        device = waves.device
        mask = torch.arange(waves.shape[1], device=device)[None, :] < lengths[:, None].to(device)
        waves = normalise_volume(waves.to(self.mel_basis.dtype) * mask, lengths)
        starts = [partial_starts(n) for n in lengths.tolist()]
        # Enough zeros after the longest row that every window lies inside the spectrogram, as
        # resemblyzer pads each utterance to its last window's end before taking the mel.
        last_frame = max(row[-1] for row in starts) + PARTIAL_FRAMES
        needed = max(waves.shape[1], HOP * (last_frame - 1))
        return self.mel(F.pad(waves, (0, needed - waves.shape[1])))

    def input_features(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """(batch, frames, 40) log power mel (the power mel floored at LOG_FLOOR)."""
        return self._power_mel(waves, lengths).clamp_min(LOG_FLOOR).log()

    def feature_frames(self, lengths: Tensor) -> Tensor:
        return centred_frame_count(torch.as_tensor(lengths, dtype=torch.int64).cpu(), HOP)

    def forward_features(self, features: Tensor, lengths: Tensor, last_layer: int | None = None) -> EncoderOutput:
        return self._from_mel(features.exp(), lengths, last_layer)

    def forward(self, waves: Tensor, lengths: Tensor) -> EncoderOutput:
        # straight from the power mel: extraction never pays for (or rounds through) the log and exp
        return self._from_mel(self._power_mel(waves, lengths), lengths)

    def _from_mel(self, mel: Tensor, lengths: Tensor, last_layer: int | None = None) -> EncoderOutput:
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        frame_lengths = centred_frame_count(lengths, HOP)
        count = len(self.lstms) if last_layer is None else min(len(self.lstms), last_layer + 1)
        states = self._utterance_states(mel, frame_lengths, count)
        if count < len(self.lstms) or last_layer == len(self.lstms) - 1:  # the d-vector layer is not needed
            return EncoderOutput(states=states, frame_lengths=[frame_lengths] * len(states))
        embeddings, counts = self._partial_embeddings(mel, [partial_starts(n) for n in lengths.tolist()])
        embeddings = self._intervened(len(self.lstms), embeddings, counts)
        return EncoderOutput(states=[*states, embeddings],
                             frame_lengths=[frame_lengths] * len(states) + [counts])

    def _checked_lengths(self, waves: Tensor, lengths: Tensor) -> Tensor:
        if waves.ndim != 2:
            raise EncoderError(f"GE2E expects waves of shape (batch, samples), got {tuple(waves.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        if lengths.shape != (waves.shape[0],):
            raise EncoderError(f"GE2E lengths shape {tuple(lengths.shape)} does not match batch {waves.shape[0]}")
        if waves.shape[0] == 0:
            raise EncoderError("GE2E got an empty batch")
        if int(lengths.max()) > waves.shape[1]:
            raise EncoderError(f"GE2E length {int(lengths.max())} exceeds the {waves.shape[1]} samples given")
        short = int(lengths.argmin())
        if int(lengths[short]) < self.min_samples:
            raise EncoderError(f"GE2E input row {short} has {int(lengths[short])} samples; "
                               f"at least {self.min_samples} needed")
        return lengths

    def _utterance_states(self, mel: Tensor, frame_lengths: Tensor, count: int = 3) -> list[Tensor]:
        """The first `count` LSTM layers' states over the whole utterance, packed so that padded frames never enter."""
        total = int(frame_lengths.max())
        packed = pack_padded_sequence(mel, frame_lengths, batch_first=True, enforce_sorted=False)
        states = []
        for position, lstm in enumerate(self.lstms[:count]):
            packed, _ = lstm(packed)
            active = self.active_intervention(position)
            if active is not None:  # the packed data holds the real frames only
                packed = PackedSequence(active.packed(packed.data, packed.batch_sizes), packed.batch_sizes,
                                        packed.sorted_indices, packed.unsorted_indices)
            states.append(pad_packed_sequence(packed, batch_first=True, total_length=total)[0])
        return states

    def _partial_embeddings(self, mel: Tensor, starts: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Every row's partial windows as one LSTM batch, scattered back to (batch, max windows, 256)."""
        rows = torch.tensor([i for i, row in enumerate(starts) for _ in row], device=mel.device)
        firsts = torch.tensor([s for row in starts for s in row], device=mel.device)
        windows = mel.unfold(1, PARTIAL_FRAMES, 1)[rows, firsts].transpose(1, 2)  # (n, 160, 40)
        partials = self.embed_partials(windows, firsts)
        counts = torch.tensor([len(row) for row in starts])
        slots = torch.cat([torch.arange(len(row)) for row in starts]).to(mel.device)
        out = partials.new_zeros(len(starts), int(counts.max()), EMBEDDING)
        out[rows, slots] = partials
        return out, counts


def ge2e(weights_path: str | Path | None = None, *, pretrained: bool = True, seed: int = 0) -> GE2EEncoder:
    """Registry constructor: resemblyzer 0.1.4's GE2E weights (or its architecture, seeded, if not pretrained)."""
    return GE2EEncoder(weights_path, pretrained=pretrained, seed=seed)

