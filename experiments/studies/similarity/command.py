"""`speechprobe similarity`: how alike the layers of one encoder are, or the layers of two encoders
(a pretrained model against its random-weights twin), over the same utterances of two stores."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import cmd_lazy
from speechprobe.experiments.config import SIMILARITY_MEASURES
from speechprobe.io import write_directory

# numpy and the probing code load only when the command runs: `speechprobe --help` stays instant

RESULTS, FIGURE = "similarity.json", "similarity.png"


def cmd_similarity(args: argparse.Namespace) -> int:
    from speechprobe.experiments.studies.similarity.figures import draw_similarity
    from speechprobe.experiments.studies.similarity.compute import similarity_results
    from speechprobe.experiments.arguments import check_out, library_call, open_store, progress
    from speechprobe.io import write_json

    if len(args.store) > 2:
        raise SpeechprobeError(f"--store is given {len(args.store)} times; give one store (its layers against each "
                           "other) or two (the first's layers against the second's)")
    out = check_out(args.out)
    stores = [open_store(path) for path in args.store]
    tell = progress(args) or (lambda message: None)
    results = library_call("similarity", lambda: similarity_results(
        stores[0], stores[1] if len(stores) == 2 else None, args.measure, tell))
    names_a, names_b = results["layers_a"], results["layers_b"]

    def fill(tmp: Path) -> None:
        write_json(tmp / RESULTS, results)
        draw_similarity(results, tmp / FIGURE)

    write_directory(out, fill)
    width = max(len(name) for name in names_a)
    print(" " * width + "  " + "  ".join(f"{name[:8]:>8}" for name in names_b))
    for name, row in zip(names_a, results["matrix"]):
        print(f"{name:<{width}}  " + "  ".join(f"{value:8.3f}" for value in row))
    print(f"wrote {out / RESULTS} and {out / FIGURE}")
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "similarity", help="layer x layer similarity (CKA, SVCCA, PWCCA) within one store or between two",
        description="Compare every layer of a store with every other (one --store), or every layer of the "
                    "first store with every layer of the second (two --store; rows matched by utt_id). "
                    "Writes DIR/similarity.json and DIR/similarity.png.")
    parser.add_argument("--store", action="append", required=True, metavar="STORE",
                        help="a representation store; give it twice to compare two encoders")
    parser.add_argument("--measure", default="linear_cka", choices=SIMILARITY_MEASURES,
                        help="linear_cka (default; scales to any N), rbf_cka (N <= 5000), svcca, pwcca")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder for the results")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=cmd_lazy("speechprobe.experiments.studies.similarity.command", "cmd_similarity"))
