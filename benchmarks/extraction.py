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
from speechprobe.tasks.corpus import load_corpus
from speechprobe.tasks.synthetic import PRESETS, build_corpus


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
    extract(corpus, encoder, out, batch_size=batch_size, progress=False)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/demo-corpus")
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--encoders", nargs="*", default=["ge2e", "whisper-tiny.en", "whisper-tiny.en-fast",
                                                          "random:wav2vec2"])
    parser.add_argument("--memory-encoder", default="random:wav2vec2-tiny")
    args = parser.parse_args()
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
