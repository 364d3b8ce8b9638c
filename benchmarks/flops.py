"""Model FLOPs, device timing and a measured matmul peak: the pieces of the extraction benchmark's compute mode.

- `forward_flops` counts a forward pass's FLOPs with `torch.utils.flop_counter.FlopCounterMode`, on CPU in
  float32: what it counts (`COUNTED`) is the matrix products and convolutions, a property of the model and
  of the batches, not of the device or the dtype (autocast changes the dtype of the same ops, not their
  number). The counter has no formula for recurrent layers or for the CPU flash attention (it knows only
  the CUDA ones): it would silently miss oneDNN's LSTM products, and decompose a packed LSTM into one
  Python-dispatched product per time step (minutes for GE2E). Both get a formula here (`EXTRA_FORMULAS`);
  the tests check them against torch's own counts of the plain kernels (oneDNN off, math attention) and
  against hand counts.
- `time_runs` times a callable on a device the way `fair.time_isolated` does in a process of its own: a
  warm-up, then the median of at least five runs, `torch.cuda.synchronize()` around each on CUDA, and the
  CPU time other processes took meanwhile; its result has the keys `fair.ratio` reads.
- `peak_matmul` measures the device's peak in a dtype with a plain large matmul in the same run, so a
  fraction of peak is achieved over measured, never over a datasheet number.

Nothing here imports speechprobe: it works on any `forward(waves, lengths)`.
"""
from __future__ import annotations

import math
import os
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.fair`, also when run as a script
from benchmarks.fair import IDLE_OTHERS, MIN_REPEATS, busy_seconds, machine_state  # noqa: E402

COUNTED = ("FLOPs of matrix products and convolutions only (torch.utils.flop_counter.FlopCounterMode: mm, addmm, "
           "bmm, baddbmm, convolution, attention; plus LSTM/GRU layers and CPU flash attention, which it "
           "misses), 2 per multiply-add, counted on CPU in float32; elementwise ops, norms, activations, "
           "STFT/FFT front ends and resampling are not counted")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
aten = torch.ops.aten


def _rnn_flops(input_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """`aten.lstm`/`gru`/`rnn_*`, padded (`.input`) or packed (`.data`): every weight matrix (input-to-hidden,
    hidden-to-hidden, projection; every layer and direction) multiplies one vector per step of every row,
    padded steps included (as the kernels compute them): 2 * steps * sum of |W|. The only 2-D tensors in the
    arguments after the input are these matrices (states are 3-D, biases and packed batch sizes 1-D)."""
    steps = math.prod(input_shape[:-1])  # (batch, time, in) / (time, batch, in), or packed (steps, in)
    shapes = [shape for shape in _flat_shapes(args) if len(shape) == 2]
    return 2 * steps * sum(math.prod(shape) for shape in shapes)


def _flat_shapes(value: Any) -> list[torch.Size]:
    if isinstance(value, torch.Size):
        return [value]
    if isinstance(value, (list, tuple)):
        return [shape for item in value for shape in _flat_shapes(item)]
    return []


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None,
                         **kwargs: Any) -> int:
    """The CPU flash attention does the two products of the math kernel (QK^T and softmax(.)V)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _rnn_layer_flops(input_shape, weight0, weight1, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """oneDNN's one-layer, one-direction RNN (what `aten.lstm` becomes on CPU where it is decomposed)."""
    return 2 * math.prod(input_shape[:-1]) * (math.prod(weight0) + math.prod(weight1))


# The counter looks an op's overload up to decide whether to decompose it (so `aten.lstm.input` must be a key
# for the layer to be counted whole, without one dispatched product per step) and its packet to count it.
_RNNS = (aten.lstm, aten.gru, aten.rnn_tanh, aten.rnn_relu)
EXTRA_FORMULAS = {
    **{op: _rnn_flops for rnn in _RNNS for op in (rnn, rnn.input, rnn.data)},
    aten.mkldnn_rnn_layer: _rnn_layer_flops,  # only reached if an RNN is decomposed after all
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
}


def count_flops(run: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Total FLOPs of `run()` and the count per aten op (under inference mode)."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with torch.inference_mode(), counter:
        run()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), dict(sorted(by_op.items()))


Batch = tuple[torch.Tensor, torch.Tensor]  # right-padded waves (batch, samples), real samples per row (batch,)


def forward_flops(forward: Callable[[torch.Tensor, torch.Tensor], Any], batches: Sequence[Batch],
                  sample_rate: int) -> dict[str, Any]:
    """FLOPs of `forward(waves, lengths)` over every batch, and per second of real audio (the lengths, not
    the padding: padding a batch costs FLOPs and encodes no audio, so it is counted against the model's
    batching). Run it on CPU float32 (see the module's docstring)."""
    total, by_op = 0, {}
    for waves, lengths in batches:
        flops, ops = count_flops(lambda: forward(waves, lengths))
        total += flops
        for op, n in ops.items():
            by_op[op] = by_op.get(op, 0) + n
    audio = sum(float(lengths.sum()) for _, lengths in batches) / sample_rate
    padded = sum(waves.shape[0] * waves.shape[1] for waves, _ in batches) / sample_rate
    return {"total": total, "audio_seconds": round(audio, 3), "padded_audio_seconds": round(padded, 3),
            "per_audio_second": total / audio if audio else None, "by_op": dict(sorted(by_op.items())),
            "counts": COUNTED}


# ---- timing on a device ---------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype) -> ContextManager[Any]:
    """Autocast to `dtype` on `device` (bf16 on CUDA, and on CPU where it is asked for); float32 runs as is."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def time_runs(run: Callable[[], Any], device: torch.device, *, repeats: int = MIN_REPEATS,
              warmup: int = 1) -> dict[str, Any]:
    """Median wall time of `run()` over `repeats` runs after `warmup` untimed ones, synchronising the device
    around each, with the CPU time other processes took meanwhile (in cores) and whether that was idle."""
    if repeats < MIN_REPEATS:
        raise ValueError(f"at least {MIN_REPEATS} timed runs give a median worth reporting, not {repeats}")
    for _ in range(warmup):
        run()
    synchronize(device)
    before, busy, own, wall = machine_state(), busy_seconds(), _own_seconds(), time.perf_counter()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    wall = time.perf_counter() - wall
    others = None if busy is None else max(0.0, (busy_seconds() - busy) - (_own_seconds() - own)) / wall
    after = machine_state()
    return {"seconds": statistics.median(times), "times": [round(t, 5) for t in times],
            "load_before": before["load_1min"], "load_after": after["load_1min"],
            "other_cores": None if others is None else round(others, 3),
            "idle": others < IDLE_OTHERS if others is not None else after["load_1min"] < 1 + IDLE_OTHERS}


def peak_matmul(device: torch.device, dtype: torch.dtype, *, n: int | None = None, target_seconds: float = 0.2,
                repeats: int = MIN_REPEATS) -> dict[str, Any]:
    """The device's matmul peak in `dtype`, measured: n x n products (8192 on CUDA, 2048 on CPU) repeated
    enough to take about `target_seconds` per timed run, median of `repeats`. TF32 stays as torch's
    settings have it (off for matmuls by default), as it is for the encoders' forward."""
    n = n or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        torch.mm(a, b, out=out)  # library start-up and kernel choice, untimed
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        inner = max(1, min(1000, round(target_seconds / max(time.perf_counter() - start, 1e-6))))

        def run() -> None:
            for _ in range(inner):
                torch.mm(a, b, out=out)

        timing = time_runs(run, device, repeats=repeats, warmup=0)
    flops = 2 * n ** 3 * inner
    return {"matmul": f"{n}x{n} @ {n}x{n}", "dtype": str(dtype).replace("torch.", ""), "products_per_run": inner,
            "flops_per_run": flops, "flops_per_s": flops / timing["seconds"], "timing": timing}


def skipped(device: torch.device, dtype: torch.dtype) -> dict[str, str] | None:
    """The line a run prints instead of numbers where the device (or its bfloat16) is missing, else None."""
    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return {"device": "cuda", "skipped": "no CUDA device on this machine"}
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return {"device": "cuda", "dtype": "bfloat16", "skipped": "this CUDA device has no bfloat16"}
    return None


def device_facts(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    facts: dict[str, Any] = {"torch": torch.__version__, "cpu_count": os.cpu_count(),
                             "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        facts.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                     capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                     matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                     cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return facts

