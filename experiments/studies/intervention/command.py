"""`speechprobe intervene`: a run with one ``intervention`` section built from flags (as `speechprobe audit` and
`speechprobe ablation` build theirs), so it gets the same checks, run folder, cached units, report and dashboards
as ``speechprobe run CONFIG.yaml`` with that section. Imported lazily by the CLI."""
from __future__ import annotations

import argparse
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import cmd_lazy


def parse_ks(text: str) -> list:
    """`minimal,8,32` -> ["minimal", 8, 32]."""
    ks: list = []
    for part in (p.strip() for p in text.split(",")):
        if part == "minimal":
            ks.append(part)
        elif part.isdigit() and int(part) >= 1:
            ks.append(int(part))
        else:
            raise SpeechprobeError(f"--ks: {part!r} is not a number of neurons (>= 1) or minimal")
    if not ks:
        raise SpeechprobeError("--ks: give at least one k (numbers, or minimal)")
    return ks


def cmd_intervene(args: argparse.Namespace) -> int:
    from speechprobe.experiments.run_commands import run_section

    section: dict[str, Any] = {"encoder": args.encoder, "attribute": args.attribute, "layer": args.layer}
    if args.ks is not None:
        section["ks"] = parse_ks(args.ks)
    for key in ("random_draws", "modes", "erasure", "tasks", "job", "trials"):
        value = getattr(args, key)
        if value is not None:
            section[key] = value
    return run_section(args, "intervene", f"intervention-{args.attribute}", "intervention", section)


def add_parser(sub: Any) -> None:
    from speechprobe.experiments.config import INTERVENTION_JOBS, INTERVENTION_MODES, InterventionSection, default_of
    from speechprobe.experiments.run_commands import add_common_options

    parser = sub.add_parser(
        "intervene", help="remove an attribute inside the encoder's forward pass and measure what it costs",
        description="At one layer (--layer, default the attribute's best on validation), remove the attribute while "
                    "the encoder runs: the top-k neurons of its ranking (k from --ks; minimal: the minimal subset) "
                    "filled by --modes, as many random neurons (--random-draws), and LEACE erasure with random "
                    "directions as its null. For each, a store of the intervened encoder is extracted (cached in the "
                    "run folder) and the attribute is probed again at every later layer (does it vanish or does the "
                    "network recover it?), with the encoder's own job (GE2E: speaker-verification EER per gender; "
                    "Whisper: WER) and the other tasks' accuracy at the last layer as the cost. Writes the run "
                    "folder: results.json, figures/, report.md, report.html.")
    parser.add_argument("--encoder", required=True, help="a name from `speechprobe encoders`, hf:PATH or random:ARCH")
    parser.add_argument("--attribute", default=default_of(InterventionSection, "attribute"),
                        help="the attribute to remove (default %(default)s)")
    parser.add_argument("--layer", default=default_of(InterventionSection, "layer"),
                        help="a layer name, or best (default: the attribute's best layer on validation)")
    parser.add_argument("--ks", metavar="K,K,...",
                        help="top-k sizes to remove, numbers or minimal (default minimal,8,32)")
    parser.add_argument("--random-draws", type=int, metavar="N",
                        help="random neurons (and directions) drawn per k (default 3)")
    parser.add_argument("--modes", nargs="+", choices=INTERVENTION_MODES, metavar="MODE",
                        help="how removed neurons are filled: mean (their mean over real frames; default), zero (raw 0, "
                             "out of distribution), resample (frames of other utterances)")
    parser.add_argument("--erasure", choices=("leace", "none"), help="also erase the attribute with LEACE (default leace)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="the other tasks whose accuracy is the cost to them (default speaker dialect channel)")
    parser.add_argument("--job", choices=INTERVENTION_JOBS,
                        help="the encoder's own job: verification, transcription, none (default auto: by encoder)")
    parser.add_argument("--trials", type=int, metavar="N", help="verification trials of each kind at most (default 5000)")
    add_common_options(parser, name_help="run name (default intervention-<attribute>)",
                       seed_help="splits, random draws, bootstrap (default 0)",
                       folds_help="speaker folds of the split (default 5; the first fold is used)")
    parser.set_defaults(func=cmd_lazy("speechprobe.experiments.studies.intervention.command", "cmd_intervene"))
