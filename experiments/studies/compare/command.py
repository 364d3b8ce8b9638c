"""`speechprobe compare`: a run with one ``compare`` section built from flags (as `speechprobe intervene` builds
its section), so it gets the same checks, run folder, cached units, report and dashboards as ``speechprobe run
CONFIG.yaml`` with that section. Imported lazily by the CLI."""
from __future__ import annotations

import argparse
import re
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import cmd_lazy


def default_name(a: str, b: str) -> str:
    """`compare-ge2e-vs-random-ge2e`: a run name (letters, digits, . _ -) from the two encoder names."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]", "-", f"compare-{a}-vs-{b}")).strip("-.")


def cmd_compare(args: argparse.Namespace) -> int:
    from speechprobe.experiments.run_commands import run_section

    encoders = list(args.encoder or [])
    if len(encoders) != 2:
        raise SpeechprobeError(f"--encoder: give it exactly twice, A (the reference) then B; got {len(encoders)}"
                               + (f" ({', '.join(encoders)})" if encoders else ""))
    if encoders[0] == encoders[1]:
        raise SpeechprobeError(f"--encoder: A and B are both {encoders[0]!r}: name two checkpoints to compare")
    return run_section(args, "compare", default_name(*encoders), "compare",
                       {"encoders": encoders, **({"tasks": args.tasks} if args.tasks else {})})


def add_parser(sub: Any) -> None:
    from speechprobe.experiments.run_commands import add_common_options

    parser = sub.add_parser(
        "compare", help="compare two checkpoints of one architecture layer by layer (weights, CKA, probes)",
        description="For two checkpoints of one architecture (a pretrained and a fine-tuned hf: folder, or an "
                    "encoder and its random: twin), per layer of the store: the relative change of the weights "
                    "computing it (||W_B - W_A|| / ||W_A||; 0 for identical weights), the linear CKA of A's and B's "
                    "representations of the corpus (1 for identical), and the cross-validated probe accuracy of "
                    "both on each task against the majority class. Two architectures that differ are refused "
                    "before any work. Writes the run folder: results.json, figures/, report.md, report.html.")
    parser.add_argument("--encoder", action="append", metavar="ENCODER",
                        help="give it twice: A (the reference) then B; a name from `speechprobe encoders`, hf:PATH "
                             "or random:ARCH")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="default: speaker gender dialect channel")
    add_common_options(parser, name_help="run name (default compare-<A>-vs-<B>)")
    parser.set_defaults(func=cmd_lazy("speechprobe.experiments.studies.compare.command", "cmd_compare"))
