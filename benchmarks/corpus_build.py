"""Corpus build throughput (utterances and seconds of audio per second of build), as JSON.

Builds the same configuration twice into temporary folders, with one worker and with all cores, so
the parallel speed-up is a ratio measured in one run (absolute numbers vary between machines).

    python benchmarks/corpus_build.py [--preset default] [--speakers N]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from speechprobe.tasks.synthetic import build_corpus, config_from_args


def timed_build(config, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path, _ = build_corpus(Path(tmp) / "corpus", config, jobs=jobs, progress=False)
        seconds = time.perf_counter() - start
        audio_seconds = float(pd.read_csv(path / "metadata.csv")["duration"].sum())
    n = config.speakers * config.utterances_per_speaker
    return {"jobs": jobs, "seconds": round(seconds, 2), "utterances_per_second": round(n / seconds, 1),
            "audio_seconds_per_second": round(audio_seconds / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--speakers", type=int)
    args = parser.parse_args()
    config = config_from_args(args.preset, speakers=args.speakers)
    cores = os.cpu_count() or 1
    serial = timed_build(config, 1)
    parallel = timed_build(config, cores)
    print(json.dumps({
        "benchmark": "corpus_build",
        "preset": args.preset,
        "speakers": config.speakers,
        "utterances": config.speakers * config.utterances_per_speaker,
        "cores": cores,
        "serial": serial,
        "parallel": parallel,
        "parallel_speedup": round(serial["seconds"] / parallel["seconds"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
