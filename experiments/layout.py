"""Where results go on disk: file and folder names shared by the commands and the studies that write them."""
from __future__ import annotations

from typing import Sequence

RESULTS, NEURONS, PREDICTIONS = "results.json", "neurons.json", "predictions.csv"
FIGURES_DIR, LOGS_DIR = "figures", "logs"  # of a run folder
PROBES_DIR, CONTROL_PROBES_DIR, PROBE_DIR = "probes", "control_probes", "probe"
GRADNAP_RESULTS, GRADNAP_PROFILES, GRADNAP_FIGURE = "gradnap.json", "profiles.npz", "gradnap.png"
ALL_LAYERS = "all"  # a layer argument meaning every layer of a store, concatenated


def probe_dir_names(layers: Sequence[str]) -> dict[str, str]:
    """Layer -> folder name safe on every file system (the store's own layer file naming), unique."""
    from speechprobe.encoders.store import layer_file_name

    names: dict[str, str] = {}
    for layer in layers:
        base = layer_file_name(layer)[: -len(".npy")]
        if base.strip(".") == "":
            base = "_" + base
        name, n = base, 1
        while name in names.values():
            n += 1
            name = f"{base}-{n}"
        names[layer] = name
    return names
