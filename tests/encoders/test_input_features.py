"""The encoders' split into input features and the rest, which input attribution differentiates through."""
from __future__ import annotations

import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from speechprobe.encoders.ge2e import GE2EEncoder
from speechprobe.encoders.whisper import WhisperEncoder
from tests.encoders.toy import ToyEncoder


def _waves() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(2, 6000, generator=generator)
    lengths = torch.tensor([6000, 4100])
    waves[1, 4100:] = 0
    return waves, lengths


def _tiny_whisper(fast: bool) -> WhisperEncoder:
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100,
                           pad_token_id=0, bos_token_id=1, eos_token_id=0, decoder_start_token_id=1)
    torch.manual_seed(0)
    return WhisperEncoder.from_transformers(WhisperModel(config), WhisperFeatureExtractor(), "hf:random", fast=fast)


@pytest.mark.parametrize("make", [ToyEncoder, lambda: GE2EEncoder(pretrained=False),
                                  lambda: _tiny_whisper(True), lambda: _tiny_whisper(False)],
                         ids=["waveform-default", "ge2e", "whisper-fast", "whisper-faithful"])
def test_forward_features_of_input_features_is_forward(make) -> None:
    encoder = make()
    waves, lengths = _waves()
    with torch.no_grad():
        direct = encoder(waves, lengths)
        features = encoder.input_features(waves, lengths)
        split = encoder.forward_features(features, lengths)
        last = encoder.forward_features(features, lengths, last_layer=1)
    if encoder.feature_kind == "waveform":
        assert features is waves
    else:
        assert features.shape[0] == 2 and features.ndim == 3 and features.shape[1] >= int(encoder.feature_frames(lengths).max())
    assert len(split.states) == len(direct.states) == len(encoder.layer_names)
    for a, b, la, lb in zip(direct.states, split.states, direct.frame_lengths, split.frame_lengths):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert torch.equal(la.cpu(), lb.cpu())
    assert len(last.states) >= 2  # stopping early keeps every layer up to the one asked for
    for a, b in zip(direct.states[:2], last.states[:2]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
