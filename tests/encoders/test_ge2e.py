"""GE2E (resemblyzer 0.1.4 weights) against references that do not go through encoders.ge2e's code paths.

- The front end against librosa's melspectrogram formula written here in numpy, one frame at a time.
- The split LSTMs against the checkpoint loaded into one `nn.LSTM(40, 256, 3)`.
- The "embedding" layer against resemblyzer's own `embed_utterance`, `compute_partial_slices`,
  `normalize_volume` and `forward`, compiled from its installed source (the package itself is never
  imported: it needs librosa and webrtcvad), with the numpy mel standing in for librosa.
- The weights doing their job: same-speaker d-vectors closer than different-speaker ones, which the
  same architecture with random weights does not manage.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from scipy.signal import get_window
from torch import nn

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.ge2e import GE2EEncoder, ge2e, weights_available
from speechprobe.tasks.corpus import load_corpus

needs_weights = pytest.mark.skipif(not weights_available(), reason="resemblyzer 0.1.4 is not installed")


def _resemblyzer_dir() -> Path:
    spec = importlib.util.find_spec("resemblyzer")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0])


# ---------------------------------------------------------------- independent references


def _slaney_hz_to_mel(hz: float) -> float:
    return hz * 3.0 / 200.0 if hz < 1000.0 else 15.0 + np.log(hz / 1000.0) * 27.0 / np.log(6.4)


def _slaney_mel_to_hz(mel: float) -> float:
    return mel * 200.0 / 3.0 if mel < 15.0 else 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0)


def _librosa_mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) (htk=False, norm='slaney'), one filter at a time."""
    top = _slaney_hz_to_mel(sr / 2.0)
    edges = [_slaney_mel_to_hz(top * k / (n_mels + 1)) for k in range(n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    basis = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        rise = (freqs - left) / (centre - left)
        fall = (right - freqs) / (right - centre)
        basis[m] = np.clip(np.minimum(rise, fall), 0.0, None) * 2.0 / (right - left)
    return basis


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """resemblyzer's wav_to_mel_spectrogram: librosa melspectrogram (n_fft 400, hop 160, zero centre
    padding, periodic Hann, power 2, 40 Slaney mels), no log; returns (frames, 40) float32."""
    n_fft, hop = 400, 160
    padded = np.pad(np.asarray(wav, dtype=np.float64), n_fft // 2)
    window = get_window("hann", n_fft, fftbins=True)
    n_frames = 1 + (len(padded) - n_fft) // hop
    power = np.stack([np.abs(np.fft.rfft(padded[t * hop:t * hop + n_fft] * window)) ** 2 for t in range(n_frames)])
    return (power @ _librosa_mel_basis(16000, n_fft, 40).T).astype(np.float32)


def _hparams() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile((_resemblyzer_dir() / "hparams.py").read_text(), "hparams.py", "exec"), namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def _functions_from(file: str, names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Compile the named functions (methods included) of a resemblyzer source file, nothing else."""
    tree = ast.parse((_resemblyzer_dir() / file).read_text())
    found = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name in names]
    for node in found:
        node.decorator_list = []
    assert {node.name for node in found} == names
    constants = [node for node in tree.body if isinstance(node, ast.Assign)]  # e.g. audio.py's int16_max
    exec(compile(ast.Module(body=constants + found, type_ignores=[]), file, "exec"), namespace)
    return {name: namespace[name] for name in names}


def _checkpoint_lstm() -> tuple[nn.LSTM, nn.Linear]:
    state = torch.load(_resemblyzer_dir() / "pretrained.pt", map_location="cpu", weights_only=True)["model_state"]
    lstm, linear = nn.LSTM(40, 256, 3, batch_first=True), nn.Linear(256, 256)
    lstm.load_state_dict({k[len("lstm."):]: v for k, v in state.items() if k.startswith("lstm.")})
    linear.load_state_dict({k[len("linear."):]: v for k, v in state.items() if k.startswith("linear.")})
    return lstm.eval(), linear.eval()


def _resemblyzer_reference() -> tuple[Any, Any]:
    """(voice encoder, normalize_volume) from resemblyzer's source, librosa replaced by `_reference_mel`."""
    namespace = {"np": np, "torch": torch, **_hparams(),
                 "audio": SimpleNamespace(wav_to_mel_spectrogram=_reference_mel)}
    methods = _functions_from("voice_encoder.py", {"forward", "compute_partial_slices", "embed_utterance"}, namespace)
    normalize_volume = _functions_from("audio.py", {"normalize_volume"}, dict(namespace))["normalize_volume"]

    class VoiceEncoder(nn.Module):
        forward = methods["forward"]
        compute_partial_slices = staticmethod(methods["compute_partial_slices"])
        embed_utterance = methods["embed_utterance"]

        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.linear = _checkpoint_lstm()
            self.relu, self.device = nn.ReLU(), torch.device("cpu")

    return VoiceEncoder().eval(), normalize_volume


# ---------------------------------------------------------------- fixtures and helpers


# LSTMs step frame by frame; with other jobs on the 2 cores, 2 threads wait on each other 10x slower.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder() -> GE2EEncoder:
    if not weights_available():
        pytest.skip("resemblyzer 0.1.4 is not installed")
    return ge2e()


@pytest.fixture(scope="module")
def resemblyzer() -> tuple[Any, Any]:
    if not weights_available():
        pytest.skip("resemblyzer 0.1.4 is not installed")
    return _resemblyzer_reference()


@pytest.fixture(scope="module")
def clips(tiny_corpus: Path) -> tuple[list[np.ndarray], np.ndarray]:
    corpus = load_corpus(tiny_corpus)
    return [corpus.load_audio(i, 16000) for i in range(len(corpus))], corpus.metadata["speaker"].to_numpy()


def _batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, wave in enumerate(waves):
        batch[i, :len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
    return batch, lengths


def _d_vectors(model: GE2EEncoder, waves: list[np.ndarray], batch_size: int = 8) -> np.ndarray:
    """resemblyzer's utterance d-vector: mean of the partial embeddings, renormalised."""
    vectors = []
    for start in range(0, len(waves), batch_size):
        out = model(*_batch(waves[start:start + batch_size]))
        partials, counts = out.states[-1], out.frame_lengths[-1]
        vectors += [partials[i, :int(n)].mean(0) for i, n in enumerate(counts)]
    return torch.nn.functional.normalize(torch.stack(vectors), dim=1).numpy()


def _same_vs_different(vectors: np.ndarray, speakers: np.ndarray) -> tuple[float, float]:
    """(mean same-speaker minus different-speaker cosine, AUC of same over different pairs)."""
    upper = np.triu_indices(len(speakers), 1)
    sims = (vectors @ vectors.T)[upper]
    same = (speakers[:, None] == speakers[None, :])[upper]
    pos, neg = sims[same], sims[~same]
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    return float(pos.mean() - neg.mean()), auc


# ---------------------------------------------------------------- tests


@needs_weights
def test_weights_separate_speakers_and_random_weights_do_not(encoder: GE2EEncoder, clips) -> None:
    waves, speakers = clips  # 8 speakers, each heard once in each of 5 channels: every same pair crosses channels
    gap, auc = _same_vs_different(_d_vectors(encoder, waves), speakers)
    random_gap, random_auc = _same_vs_different(_d_vectors(ge2e(pretrained=False, seed=0), waves), speakers)
    assert gap > 0.05 and auc > 0.75, (gap, auc)
    assert auc > random_auc + 0.15, (auc, random_auc)
    assert abs(random_gap) < gap, (gap, random_gap)


@needs_weights
def test_split_lstms_equal_the_checkpoints_three_layer_lstm(encoder: GE2EEncoder, clips, resemblyzer) -> None:
    reference, normalize_volume = resemblyzer
    mel = torch.from_numpy(_reference_mel(normalize_volume(clips[0][3], -30, increase_only=True)))[None]
    with torch.no_grad():
        expected, (last_hidden, _) = reference.lstm(mel)
        hidden, ours = mel, []
        for lstm in encoder.lstms:
            hidden, _ = lstm(hidden)
            ours.append(hidden)
    torch.testing.assert_close(ours[-1], expected, rtol=1e-5, atol=1e-5)
    for layer, states in enumerate(ours):  # every layer's final state, which nn.LSTM returns per layer
        torch.testing.assert_close(states[:, -1], last_hidden[layer], rtol=1e-5, atol=1e-5)


@needs_weights
def test_utterance_states_equal_the_three_layer_lstm_on_the_reference_mel(
        encoder: GE2EEncoder, clips, resemblyzer) -> None:
    wave = clips[0][8]
    out = encoder(*_batch([wave]))
    reference, normalize_volume = resemblyzer
    with torch.no_grad():
        expected, _ = reference.lstm(torch.from_numpy(_reference_mel(normalize_volume(wave, -30, increase_only=True)))[None])
    assert out.frame_lengths[2].tolist() == [expected.shape[1]]
    torch.testing.assert_close(out.states[2], expected, rtol=1e-4, atol=1e-4)


@needs_weights
def test_front_end_matches_librosa_formula(encoder: GE2EEncoder, clips) -> None:
    waves = [clips[0][i][: 16000 + 37 * i] for i in (0, 5, 11)]
    batch, lengths = _batch(waves)
    mel = encoder.mel(batch).numpy()
    for i, wave in enumerate(waves):
        expected = _reference_mel(wave)
        assert len(expected) == 1 + len(wave) // 160
        np.testing.assert_allclose(mel[i, :len(expected)], expected, rtol=1e-4, atol=1e-5 * expected.max())


@needs_weights
def test_embedding_layer_is_resemblyzers_embed_utterance(encoder: GE2EEncoder, clips, resemblyzer) -> None:
    reference, normalize_volume = resemblyzer
    # last window dropped (clips 2, 10), last window kept and zero-padded (56960 samples: 78% coverage),
    # shorter than one window (9000); a quiet clip that volume normalisation raises by 26 dB, a loud one
    # that it leaves as it is
    waves = [clips[0][2] * 0.05, clips[0][10], clips[0][17][:56960], clips[0][17][:9000], np.clip(clips[0][20] * 40, -1, 1)]
    out = encoder(*_batch(waves))
    padded = []
    for i, wave in enumerate(waves):
        wav = normalize_volume(wave, -30, increase_only=True).astype(np.float32)
        embed, partials, slices = reference.embed_utterance(wav, return_partials=True)
        padded.append(slices[-1].stop > len(wav))
        count = int(out.frame_lengths[-1][i])
        assert count == len(partials) == len(slices)
        ours = out.states[-1][i, :count]
        np.testing.assert_allclose(ours.numpy(), partials, atol=2e-5)
        np.testing.assert_allclose(torch.nn.functional.normalize(ours.mean(0), dim=0).numpy(), embed, atol=2e-5)
    assert padded == [False, False, True, True, False]  # both of embed_utterance's branches were exercised


@needs_weights
def test_padding_does_not_change_any_layer(encoder: GE2EEncoder, clips) -> None:
    # quiet rows: their volume gain must come from their own samples, not the padded length
    waves = [clips[0][10], clips[0][4][:20000] * 0.1, clips[0][27][:700] * 0.02]
    batched = encoder(*_batch(waves))
    for i, wave in enumerate(waves):
        alone = encoder(*_batch([wave]))
        for name, states, lengths, single, single_lengths in zip(
                encoder.layer_names, batched.states, batched.frame_lengths, alone.states, alone.frame_lengths):
            n = int(single_lengths[0])
            assert int(lengths[i]) == n and single.shape[1] == n, name
            torch.testing.assert_close(states[i, :n], single[0], rtol=1e-5, atol=1e-5 * float(single.abs().max()))


@needs_weights
def test_layout_and_sizes(encoder: GE2EEncoder) -> None:
    out = encoder(*_batch([np.zeros(16000 * 3, np.float32), np.full(2000, 0.01, np.float32)]))
    assert encoder.layer_names == ("lstm1", "lstm2", "lstm3", "embedding")
    assert [s.shape[-1] for s in out.states] == list(encoder.layer_dims)
    assert out.frame_lengths[0].tolist() == [301, 13]
    assert sum(p.numel() for p in encoder.parameters()) == 1_423_616
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    assert torch.isfinite(torch.cat([s.flatten() for s in out.states])).all()  # silence is not turned into NaN


@needs_weights
def test_too_short_input_is_refused(encoder: GE2EEncoder) -> None:
    assert encoder.min_samples == 1
    encoder(*_batch([np.full(1, 0.1, np.float32)]))  # one sample already gives a frame and a window
    with pytest.raises(EncoderError, match="row 1 has 0 samples"):
        encoder(torch.zeros(2, 800), torch.tensor([800, 0]))


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pretrained.pt"
    with pytest.raises(EncoderError, match="nowhere/pretrained.pt"):
        GE2EEncoder(missing)
