"""`speechprobe similarity`: how alike the layers of one encoder are, or the layers of two encoders
(a pretrained model against its random-weights twin), over the same utterances of two stores."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from experiments.cli import CommandError, cmd_lazy, write_directory

# numpy and the probing code load only when the command runs: `speechprobe --help` stays instant

MEASURES = ("linear_cka", "rbf_cka", "svcca", "pwcca")
RESULTS, FIGURE = "similarity.json", "similarity.png"


def aligned_layers(store_a: Any, store_b: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both stores' layers with their rows in the first store's utterance order.

    Two stores extracted from one corpus hold the same utterances, but nothing forces the same order;
    a row-wise measure compares nonsense if the rows are not the same utterances.
    """
    import numpy as np

    ids_a = store_a.index["utt_id"].astype(str).to_numpy()
    ids_b = store_b.index["utt_id"].astype(str).to_numpy()
    if len(set(ids_a)) != len(ids_a) or len(set(ids_b)) != len(ids_b):
        raise CommandError("a store has repeated utt_id values; rows cannot be matched between the stores")
    position = {utt: i for i, utt in enumerate(ids_b)}
    missing = [utt for utt in ids_a if utt not in position]
    if missing or len(ids_a) != len(ids_b):
        raise CommandError(f"{store_a.path} and {store_b.path} hold different utterances "
                           f"({len(ids_a)} vs {len(ids_b)}; e.g. {missing[0] if missing else 'extra rows in the second'}): "
                           "extract both from the same corpus")
    order = np.array([position[utt] for utt in ids_a])
    layers_a = {name: np.asarray(store_a.layer(name)) for name in store_a.layer_names}
    layers_b = {name: np.asarray(store_b.layer(name))[order] for name in store_b.layer_names}
    return layers_a, layers_b


def cmd_similarity(args: argparse.Namespace) -> int:
    import numpy as np

    from experiments.figures import draw_similarity
    from experiments.probe_commands import check_out, library_call, open_store, progress, write_json
    from probing.similarity import similarity_matrix

    if len(args.store) > 2:
        raise CommandError(f"--store is given {len(args.store)} times; give one store (its layers against each "
                           "other) or two (the first's layers against the second's)")
    out = check_out(args.out)
    stores = [open_store(path) for path in args.store]
    within = len(stores) == 1
    if within:
        layers_a = {name: np.asarray(stores[0].layer(name)) for name in stores[0].layer_names}
        layers_b = None
    else:
        layers_a, layers_b = aligned_layers(*stores)
    tell = progress(args) or (lambda message: None)
    tell(f"{args.measure} over {len(layers_a)} x {len(layers_b or layers_a)} layers, "
         f"{next(iter(layers_a.values())).shape[0]} utterances")
    names_a, names_b, matrix = library_call(
        "similarity", lambda: similarity_matrix(layers_a, layers_b, measure=args.measure))
    encoders = [store.manifest.get("encoder", str(store.path)) for store in stores]
    results = {
        "measure": args.measure,
        "within": within,
        "stores": [str(store.path) for store in stores],
        "encoder_a": encoders[0],
        "encoder_b": encoders[-1],
        "n_utterances": int(next(iter(layers_a.values())).shape[0]),
        "layers_a": list(names_a),
        "layers_b": list(names_b),
        "matrix": np.asarray(matrix, dtype=float).tolist(),
    }

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
    parser.add_argument("--measure", default="linear_cka", choices=MEASURES,
                        help="linear_cka (default; scales to any N), rbf_cka (N <= 5000), svcca, pwcca")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder for the results")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=cmd_lazy("experiments.similarity_commands", "cmd_similarity"))
