"""The extraction benchmark's compute mode counts FLOPs exactly (hand counts, and torch's own counts of the plain
kernels), per second of real audio, measures a peak, and skips cleanly without CUDA."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("benchmark_flops", ROOT / "benchmarks" / "flops.py")
flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flops)

RATE, HOP = 16000, 160


class FrameLinear(nn.Module):
    """Frames of 160 samples through Linear(160, 64) -> ReLU -> Linear(64, 32): FLOPs linear in the frames."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(HOP, 64), nn.Linear(64, 32)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames = waves.unfold(1, HOP, HOP)  # (batch, frames, 160)
        return self.second(torch.relu(self.first(frames)))


def _torch_plain_count(run) -> int:
    """torch's own counter with no formulas of ours, on kernels whose every product it sees."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    counter = FlopCounterMode(display=False)
    with torch.backends.mkldnn.flags(enabled=False), sdpa_kernel([SDPBackend.MATH]), torch.inference_mode(), counter:
        run()
    return counter.get_total_flops()


def test_a_linear_stack_is_counted_exactly_and_per_second_of_audio() -> None:
    model = FrameLinear()
    batch, seconds = 3, 2
    waves = torch.randn(batch, seconds * RATE)
    lengths = torch.full((batch,), seconds * RATE)
    frames = batch * seconds * RATE // HOP
    by_hand = 2 * frames * HOP * 64 + 2 * frames * 64 * 32       # 2 * B * in * out per linear
    counted = flops.forward_flops(model, [(waves, lengths)], RATE)
    assert counted["total"] == by_hand
    assert counted["audio_seconds"] == batch * seconds == counted["padded_audio_seconds"]
    assert counted["per_audio_second"] == by_hand / (batch * seconds)
    assert set(counted["by_op"]) == {"aten.addmm"} and "matrix products and convolutions only" in counted["counts"]

    # twice the audio: twice the FLOPs, the same FLOPs per second of audio, as two batches or one longer one
    longer = flops.forward_flops(model, [(torch.randn(batch, 2 * seconds * RATE), 2 * lengths)], RATE)
    twice = flops.forward_flops(model, [(waves, lengths), (waves, lengths)], RATE)
    for doubled in (longer, twice):
        assert doubled["total"] == 2 * by_hand
        assert doubled["per_audio_second"] == counted["per_audio_second"]


def test_padding_costs_flops_but_is_not_audio() -> None:
    model = FrameLinear()
    waves = torch.randn(2, 2 * RATE)
    lengths = torch.tensor([2 * RATE, RATE])                      # the second row is half padding
    counted = flops.forward_flops(model, [(waves, lengths)], RATE)
    assert counted["audio_seconds"] == 3 and counted["padded_audio_seconds"] == 4
    assert counted["per_audio_second"] == counted["total"] / 3


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("mkldnn", [True, False])
def test_lstm_products_are_counted_whatever_the_kernel(packed: bool, mkldnn: bool) -> None:
    """oneDNN's fused LSTM hides its products from torch's counter (GE2E would count as a few products)."""
    lstm = nn.LSTM(40, 64, num_layers=2, batch_first=True).eval()
    x = torch.randn(3, 20, 40)
    steps = [20, 12, 5] if packed else [20, 20, 20]
    source = pack_padded_sequence(x, torch.tensor(steps), batch_first=True, enforce_sorted=False) if packed else x
    by_hand = 2 * sum(steps) * (4 * 64 * (40 + 64) + 4 * 64 * (64 + 64))
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        total, by_op = flops.count_flops(lambda: lstm(source))
    assert total == by_hand == _torch_plain_count(lambda: lstm(source))
    assert by_op == {"aten.lstm": by_hand}


def test_bidirectional_projected_lstm_agrees_with_torchs_plain_count() -> None:
    lstm = nn.LSTM(40, 64, num_layers=2, batch_first=True, bidirectional=True, proj_size=32).eval()
    x = torch.randn(2, 15, 40)
    assert flops.count_flops(lambda: lstm(x))[0] == _torch_plain_count(lambda: lstm(x)) > 0


def test_cpu_attention_is_counted_as_its_two_products() -> None:
    batch, heads, length, width = 2, 4, 50, 16
    q, k, v = (torch.randn(batch, heads, length, width) for _ in range(3))
    mask = torch.zeros(batch, 1, 1, length)
    run = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    by_hand = 2 * (2 * batch * heads * length * length * width)
    total, by_op = flops.count_flops(run)
    assert total == by_hand == _torch_plain_count(run)
    assert by_op == {"aten._scaled_dot_product_flash_attention_for_cpu": by_hand}


def test_the_peak_is_a_timed_matmul_of_known_flops() -> None:
    n = 256
    a, b = torch.randn(n, n), torch.randn(n, n)
    assert flops.count_flops(lambda: a @ b)[0] == 2 * n ** 3
    peak = flops.peak_matmul(torch.device("cpu"), torch.float32, n=n, target_seconds=0.01)
    assert peak["flops_per_run"] == 2 * n ** 3 * peak["products_per_run"]
    assert peak["flops_per_s"] == peak["flops_per_run"] / peak["timing"]["seconds"] > 0
    assert len(peak["timing"]["times"]) == flops.MIN_REPEATS and "idle" in peak["timing"]
    bf16 = flops.peak_matmul(torch.device("cpu"), torch.bfloat16, n=64, target_seconds=0.001)
    assert bf16["dtype"] == "bfloat16" and bf16["flops_per_s"] > 0


def test_timing_runs_warm_up_and_refuses_too_few_runs() -> None:
    calls = []
    timing = flops.time_runs(lambda: calls.append(1), torch.device("cpu"), repeats=5, warmup=2)
    assert len(calls) == 7 and len(timing["times"]) == 5
    with pytest.raises(ValueError, match="at least 5"):
        flops.time_runs(lambda: None, torch.device("cpu"), repeats=4)


def test_autocast_runs_bfloat16_and_leaves_float32_alone() -> None:
    cpu = torch.device("cpu")
    a = torch.randn(8, 8)
    with flops.autocast(cpu, torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with flops.autocast(cpu, torch.float32):
        assert (a @ a).dtype == torch.float32


def test_cuda_without_a_gpu_or_its_bfloat16_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--device cuda` prints this line and exits 0 (`extraction.py --device cuda` on a CPU machine)."""
    cuda = torch.device("cuda")
    assert flops.skipped(torch.device("cpu"), torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert flops.skipped(cuda, torch.float32) == {"device": "cuda", "skipped": "no CUDA device on this machine"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert flops.skipped(cuda, torch.float32) is None
    assert flops.skipped(cuda, torch.bfloat16)["skipped"] == "this CUDA device has no bfloat16"
