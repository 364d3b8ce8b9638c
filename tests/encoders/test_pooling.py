from __future__ import annotations

import pytest
import torch

from speechprobe.encoders.pooling import pool, pooled_dim


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    states = torch.randn(3, 7, 4)
    lengths = torch.tensor([7, 3, 1])
    for row, length in enumerate(lengths):
        states[row, length:] = 1e6  # padding garbage must never enter a statistic
    return states, lengths


@pytest.mark.parametrize("pooling", ["mean", "meanstd", "max"])
def test_pooling_uses_only_valid_frames(pooling: str) -> None:
    states, lengths = _batch()
    pooled = pool(states, lengths, pooling)
    assert pooled.shape == (3, pooled_dim(4, pooling))
    for row, length in enumerate(lengths):
        valid = states[row, :length]
        expected = {"mean": valid.mean(0), "max": valid.amax(0),
                    "meanstd": torch.cat([valid.mean(0), valid.std(0, unbiased=False)])}[pooling]
        assert torch.allclose(pooled[row], expected, atol=1e-5)


def test_unknown_pooling_is_named() -> None:
    states, lengths = _batch()
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        pool(states, lengths, "median")
