"""A tiny deterministic SpeechEncoder for testing extraction and the store without a real model."""
from __future__ import annotations

import torch
from torch import nn

from speechprobe.encoders.base import EncoderOutput, SpeechEncoder


class ToyEncoder(SpeechEncoder):
    """Non-centred 400-sample frames -> two small layers; padding-invariant by construction."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.name, self.sample_rate, self.min_samples = "toy", 16000, 400
        self.layer_names, self.layer_dims = ("frames", "hidden"), (8, 5)
        self.project = nn.Linear(400, 8)
        self.hidden = nn.Linear(8, 5)
        self.calls = 0
        self.rows_seen = 0

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        self.calls += 1
        self.rows_seen += len(waves)
        frames = waves.unfold(1, 400, 160)
        first = torch.tanh(self.project(frames))
        second = self.hidden(first)
        counts = torch.div(lengths - 400, 160, rounding_mode="floor") + 1
        return EncoderOutput([first, second], [counts, counts])
