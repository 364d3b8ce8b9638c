"""Extraction throughput against two baselines measured in the same run, and peak memory vs corpus size.

For each encoder, on the same utterances of the default corpus:
- `pipeline`: `speechprobe extract` as users run it (decoding, Lightning loop, pooling, shards, store);
- `bare_forward`: the encoder's forward alone on the same length-bucketed batches, audio preloaded:
  the limit, so `overhead = pipeline / bare_forward - 1` is what pooling, storage and I/O cost;
- `naive`: one utterance at a time with a per-utterance front end and every layer's frames kept
  (transformers' feature extractor and `output_hidden_states=True` for transformers models).
Memory: peak RSS of extraction over the default corpus listed once and ten times (the same files), in
fresh processes; flat means the store, not RAM, grows with the corpus.

    python benchmarks/extraction.py [--utterances 64] [--repeats 2] [--encoders ge2e whisper-tiny.en random:wav2vec2]

Compute mode (`--flops`, and any `--device cuda` or `--dtype bfloat16` run), per encoder, on one device and dtype:
- `model_flops`: FLOPs of one forward pass over the same length-bucketed batches, per second of real audio
  (`benchmarks/flops.py`: matrix products and convolutions only, counted on CPU float32, so the number is
  the model's and the batching's, whatever the device);
- `bare_forward`: the encoder's forward alone on the device (bf16 under autocast), warm-up, median of
  `--timed-runs` (>= 5) passes over the batches with `torch.cuda.synchronize()` around each: seconds of
  audio per second, achieved FLOP/s, and the fraction of the device's peak;
- `peak`: that peak, measured in the same run with a large plain matmul in the same dtype;
- `pipeline`: `extract(...)` on the same device and precision (its `accelerator` and `precision`), timed alike.
Without CUDA, `--device cuda` prints a `skipped` line and exits 0.

    python benchmarks/extraction.py --flops --encoders ge2e --utterances 16          # CPU, float32
    python benchmarks/extraction.py --device cuda --dtype bfloat16                   # a GPU, bf16 autocast
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from speechprobe.encoders.extraction import LengthBucketSampler, collate, extract
from speechprobe.encoders.registry import create_encoder
from speechprobe.encoders.windows import effective_window, encode
from speechprobe.tasks.corpus import load_corpus
from speechprobe.tasks.synthetic import PRESETS, build_corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.*`, also when run as a script
from benchmarks.fair import MIN_REPEATS, ratio  # noqa: E402
from benchmarks.flops import (COUNTED, DTYPES, autocast, device_facts, forward_flops, peak_matmul,  # noqa: E402
                              skipped, synchronize, time_runs)

# extract()'s Lightning names for a device and a dtype: bf16 there is the same autocast as the bare forward's.
ACCELERATORS = {"cpu": "cpu", "cuda": "gpu"}
PRECISIONS = {"float32": "32", "bfloat16": "bf16-mixed"}


def subset_corpus(source: Path, n: int, folder: Path) -> Path:
    """The first n utterances of a stratified shuffle, as a CSV corpus pointing at the same files."""
    metadata = pd.read_csv(source / "metadata.csv")
    chosen = metadata.sample(n=min(n, len(metadata)), random_state=0).sort_index()
    chosen = chosen.assign(file_name=[str((source / f).resolve()) for f in chosen["file_name"]])
    table = folder / f"subset-{n}.csv"
    chosen.to_csv(table, index=False)
    return table


def time_pipeline(corpus, name: str, batch_size: int, folder: Path) -> float:
    encoder = create_encoder(name)
    out = Path(tempfile.mkdtemp(dir=folder)) / "store"
    start = time.perf_counter()
    # accelerator="cpu": the CPU comparison stays on the CPU on a machine with a GPU too (auto would take it)
    extract(corpus, encoder, out, batch_size=batch_size, accelerator="cpu", progress=False)
    return time.perf_counter() - start


def time_bare_forward(corpus, name: str, batch_size: int) -> float:
    encoder = create_encoder(name)
    waves = [corpus.load_audio(i, encoder.sample_rate) for i in range(len(corpus))]
    lengths = np.array([len(w) for w in waves])
    batches = [collate([(i, waves[i], encoder.sample_rate, None) for i in batch])
               for batch in LengthBucketSampler(range(len(waves)), lengths, batch_size)]
    with torch.inference_mode():
        start = time.perf_counter()
        for batch in batches:
            encoder(batch["waves"], batch["lengths"])
        return time.perf_counter() - start


def time_naive(corpus, name: str) -> float:
    """One utterance at a time, every layer's frames kept as numpy, pooled at the end."""
    encoder = create_encoder(name)
    waves = [corpus.load_audio(i, encoder.sample_rate) for i in range(len(corpus))]
    kept: list[list[np.ndarray]] = []
    with torch.inference_mode():
        start = time.perf_counter()
        if name.startswith("whisper") or name.startswith("random:wav2vec2"):
            model, extractor = _transformers_model(encoder, name)
            for wave in waves:
                inputs = extractor(wave, sampling_rate=16000, return_tensors="pt")
                output = model(**inputs, output_hidden_states=True)
                kept.append([h[0].numpy().copy() for h in output.hidden_states])
        else:
            for wave in waves:
                output = encoder(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
                kept.append([s[0].numpy().copy() for s in output.states])
        _ = [[layer.mean(axis=0) for layer in layers] for layers in kept]
        return time.perf_counter() - start


def _transformers_model(encoder, name: str):
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    if name.startswith("whisper"):
        return encoder.encoder, WhisperFeatureExtractor(feature_size=80)
    return encoder.model, Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)


def peak_memory_mb(corpus_table: Path, folder: Path, encoder: str) -> float:
    """Peak RSS of one `speechprobe extract` in a fresh process."""
    # VmHWM is this process image's peak; ru_maxrss would also count the benchmark process it was forked from.
    code = ("import re, sys; from speechprobe.experiments.cli import main; main(sys.argv[1:]); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    out = folder / f"mem-{corpus_table.stem}"
    result = subprocess.run([sys.executable, "-c", code, "extract", "--corpus", str(corpus_table), "--encoder", encoder,
                             "--out", str(out), "--quiet"], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


# ---- compute mode: FLOPs, achieved FLOP/s and fraction of peak on one device in one dtype -------------------


def device_batches(corpus, encoder, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The bare forward's batches (audio preloaded at the encoder's rate, length-bucketed, right-padded)."""
    waves = [corpus.load_audio(i, encoder.sample_rate) for i in range(len(corpus))]
    lengths = np.array([len(w) for w in waves])
    batches = [collate([(i, waves[i], encoder.sample_rate, None) for i in batch])
               for batch in LengthBucketSampler(range(len(waves)), lengths, batch_size)]
    return [(batch["waves"], batch["lengths"]) for batch in batches]


def _error(error: BaseException) -> dict[str, str]:
    return {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"}


def compute_encoder(name: str, corpus, folder: Path, device: torch.device, dtype: str, batch_size: int,
                    timed_runs: int, peak: dict) -> dict[str, object]:
    """One encoder's compute report; a stage that fails is reported as its error and the others still run."""
    encoder = create_encoder(name)
    window = effective_window(encoder, None)  # as extract does: longer clips are encoded in windows

    def forward(waves: torch.Tensor, lengths: torch.Tensor) -> object:
        return encode(encoder, waves, lengths, window, batch_size=len(lengths))

    batches = device_batches(corpus, encoder, batch_size)
    audio_seconds = sum(float(lengths.sum()) for _, lengths in batches) / encoder.sample_rate
    report: dict[str, object] = {"parameters": sum(p.numel() for p in encoder.parameters()),
                                 "batches": len(batches)}
    flops: int | None = None
    try:
        counted = forward_flops(forward, batches, encoder.sample_rate)  # the encoder is still on CPU, float32
        flops = counted["total"]
        report["model_flops"] = {key: value for key, value in counted.items() if key != "counts"}
    except Exception as error:  # noqa: BLE001 - reported, the timing still runs
        report["model_flops"] = _error(error)

    def rates(timing: dict) -> dict[str, object]:
        out: dict[str, object] = {"audio_s_per_s": round(audio_seconds / timing["seconds"], 2)}
        if flops is not None:
            out["model_flops_per_s"] = flops / timing["seconds"]
            if "timing" in peak:  # achieved / peak = (flops / t) / (peak flops / t_peak)
                out["fraction_of_peak"] = ratio(peak["timing"], timing, scale=flops / peak["flops_per_run"])
        return out

    bare = None
    try:
        encoder.to(device)
        on_device = [(waves.to(device), lengths.to(device)) for waves, lengths in batches]

        def run_bare() -> None:
            with torch.inference_mode(), autocast(device, DTYPES[dtype]):
                for waves, lengths in on_device:
                    forward(waves, lengths)

        bare = time_runs(run_bare, device, repeats=timed_runs)
        report["bare_forward"] = {**rates(bare), "timing": bare}
        on_device.clear()  # the device memory goes back before the pipeline runs
    except Exception as error:  # noqa: BLE001
        report["bare_forward"] = _error(error)
    finally:
        encoder.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()

    threads = torch.get_num_threads()  # extract sets its own CPU thread count; the next encoder gets ours back
    settings = {"accelerator": ACCELERATORS[device.type], "devices": 1, "precision": PRECISIONS[dtype]}
    try:
        def run_pipeline() -> None:
            out = Path(tempfile.mkdtemp(dir=folder)) / "store"
            extract(corpus, encoder, out, batch_size=batch_size, progress=False, **settings)
            synchronize(device)

        pipeline = time_runs(run_pipeline, device, repeats=timed_runs)
        report["pipeline"] = {**rates(pipeline), "extract": settings, "timing": pipeline}
        if bare is not None:
            report["pipeline"]["time_over_bare_forward"] = ratio(pipeline, bare)
    except Exception as error:  # noqa: BLE001
        report["pipeline"] = {**_error(error), "extract": settings}
    finally:
        torch.set_num_threads(threads)
        encoder.to("cpu")
    return report


def compute_main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    skip = skipped(device, DTYPES[args.dtype])
    if skip:
        print(json.dumps(skip))
        return
    if args.timed_runs < MIN_REPEATS:
        raise SystemExit(f"--timed-runs: at least {MIN_REPEATS}")
    source, _ = build_corpus(args.corpus, PRESETS["default"], progress=False)
    results: dict[str, object] = {
        "benchmark": "extraction-compute", "device": args.device, "dtype": args.dtype,
        "autocast": args.dtype != "float32", "machine": device_facts(device), "batch_size": args.batch_size,
        "timed_runs": args.timed_runs, "flops_count": COUNTED,
        "pipeline_note": "extract() takes the device and precision (Lightning accelerator, precision): timed on it",
    }
    results["peak"] = peak_matmul(device, DTYPES[args.dtype], n=args.peak_size, repeats=args.timed_runs)
    print(json.dumps({"peak_flops_per_s": results["peak"]["flops_per_s"]}), file=sys.stderr)
    results["encoders"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = load_corpus(subset_corpus(source, args.utterances, folder))
        results["utterances"], results["audio_seconds"] = len(corpus), round(float(corpus.durations().sum()), 1)
        for name in args.encoders:
            try:
                report = compute_encoder(name, corpus, folder, device, args.dtype, args.batch_size,
                                         args.timed_runs, results["peak"])
            except Exception as error:  # noqa: BLE001 - e.g. weights missing: the other encoders still run
                report = _error(error)
            results["encoders"][name] = report
            print(json.dumps({name: {stage: {k: v for k, v in part.items() if k != "timing"}
                                     if isinstance(part, dict) else part for stage, part in report.items()
                                     if stage not in ("model_flops",)}}, default=str), file=sys.stderr)
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/demo-corpus")
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--encoders", nargs="*", default=["ge2e", "whisper-tiny.en", "whisper-tiny.en-fast",
                                                          "random:wav2vec2"])
    parser.add_argument("--memory-encoder", default="random:wav2vec2-tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="compute mode's device (cuda: the FLOPs/peak report; without CUDA it says so and exits)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="compute mode's dtype: bfloat16 runs the forward under autocast, extract with bf16-mixed")
    parser.add_argument("--flops", action="store_true",
                        help="compute mode on CPU float32 (implied by --device cuda or --dtype bfloat16)")
    parser.add_argument("--timed-runs", type=int, default=MIN_REPEATS, help="compute mode: median of this many")
    parser.add_argument("--peak-size", type=int, default=None,
                        help="compute mode: n of the n x n peak matmul (8192 on CUDA, 2048 on CPU)")
    args = parser.parse_args()
    if args.flops or args.device != "cpu" or args.dtype != "float32":
        compute_main(args)
        return
    source, _ = build_corpus(args.corpus, PRESETS["default"], progress=False)
    results: dict[str, object] = {"benchmark": "extraction", "repeats": args.repeats, "cpu_count": os.cpu_count(),
                                  "torch_threads": torch.get_num_threads(), "encoders": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = load_corpus(subset_corpus(source, args.utterances, folder))
        audio_seconds = float(corpus.durations().sum())
        results["utterances"], results["audio_seconds"] = len(corpus), round(audio_seconds, 1)
        for name in args.encoders:
            # Alternate the three and keep each one's best of `repeats`: the first pass of anything pays
            # one-off costs (kernel selection, lazy imports), and these machines are noisy.
            times: dict[str, list[float]] = {"pipeline": [], "bare": [], "naive": []}
            for _ in range(args.repeats):
                times["pipeline"].append(time_pipeline(corpus, name, args.batch_size, folder))
                times["bare"].append(time_bare_forward(corpus, name, args.batch_size))
                times["naive"].append(time_naive(corpus, name))
            pipeline, bare, naive = (min(times[k]) for k in ("pipeline", "bare", "naive"))
            results["encoders"][name] = {
                "pipeline_audio_s_per_s": round(audio_seconds / pipeline, 1),
                "bare_forward_audio_s_per_s": round(audio_seconds / bare, 1),
                "naive_audio_s_per_s": round(audio_seconds / naive, 1),
                "overhead_vs_bare_forward": round(pipeline / bare - 1, 3),
                "speedup_vs_naive": round(naive / pipeline, 2),
            }
            print(json.dumps({name: results["encoders"][name]}), file=sys.stderr)
        full = pd.read_csv(source / "metadata.csv")
        full = full.assign(file_name=[str((source / f).resolve()) for f in full["file_name"]])
        once, tenfold = folder / "once.csv", folder / "tenfold.csv"
        full.to_csv(once, index=False)
        pd.concat([full.assign(utt_id=full["utt_id"] + f"-copy{k}") for k in range(10)]).to_csv(tenfold, index=False)
        memory = {"once": peak_memory_mb(once, folder, args.memory_encoder),
                  "tenfold": peak_memory_mb(tenfold, folder, args.memory_encoder)}
        results["peak_memory_mb"] = {"encoder": args.memory_encoder, "utterances": [len(full), 10 * len(full)],
                                     **{k: round(v) for k, v in memory.items()},
                                     "ratio_tenfold_to_once": round(memory["tenfold"] / memory["once"], 3)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
