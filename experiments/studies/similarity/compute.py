"""Layer x layer similarity of stores, shared by `speechprobe similarity` and the sweep's optional section.

Within one encoder the matrix shows which layers compute alike (blocks of similar layers, where the
representation changes); against the random-weights twin, its diagonal shows from which layer on
training moved the representation away from what the architecture alone gives.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.config import SweepSection
from speechprobe.experiments.runner import baselines_of, Run, unit_dir_name


def aligned_layers(store_a: Any, store_b: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both stores' layers with their rows in the first store's utterance order.

    Two stores extracted from one corpus hold the same utterances, but nothing forces the same order;
    a row-wise measure compares nonsense if the rows are not the same utterances.
    """
    ids_a = store_a.index["utt_id"].astype(str).to_numpy()
    ids_b = store_b.index["utt_id"].astype(str).to_numpy()
    if len(set(ids_a)) != len(ids_a) or len(set(ids_b)) != len(ids_b):
        raise SpeechprobeError("a store has repeated utt_id values; rows cannot be matched between the stores")
    position = {utt: i for i, utt in enumerate(ids_b)}
    missing = [utt for utt in ids_a if utt not in position]
    if missing or len(ids_a) != len(ids_b):
        raise SpeechprobeError(f"{store_a.path} and {store_b.path} hold different utterances "
                           f"({len(ids_a)} vs {len(ids_b)}; e.g. {missing[0] if missing else 'extra rows in the second'}): "
                           "extract both from the same corpus")
    order = np.array([position[utt] for utt in ids_a])
    layers_a = {name: np.asarray(store_a.layer(name)) for name in store_a.layer_names}
    layers_b = {name: np.asarray(store_b.layer(name))[order] for name in store_b.layer_names}
    return layers_a, layers_b


def similarity_results(store_a: Any, store_b: Optional[Any], measure: str,
                       tell: Callable[[str], None] = lambda message: None,
                       names: Optional[tuple[str, str]] = None) -> dict[str, Any]:
    """The similarity JSON (what `speechprobe similarity` writes and :func:`draw_similarity` reads).

    ``names``: the encoders as the caller calls them (a run's config names); default, as the stores
    record them.
    """
    from speechprobe.probing.similarity import similarity_matrix

    within = store_b is None
    if within:
        layers_a = {name: np.asarray(store_a.layer(name)) for name in store_a.layer_names}
        layers_b = None
    else:
        layers_a, layers_b = aligned_layers(store_a, store_b)
    n = next(iter(layers_a.values())).shape[0]
    tell(f"{measure} over {len(layers_a)} x {len(layers_b or layers_a)} layers, {n} utterances")
    names_a, names_b, matrix = similarity_matrix(layers_a, layers_b, measure=measure)
    stores = [store_a] if within else [store_a, store_b]
    encoders = list(names) if names else [store.manifest.get("encoder", str(store.path)) for store in stores]
    return {
        "measure": measure,
        "within": within,
        "stores": [str(store.path) for store in stores],
        "encoder_a": encoders[0],
        "encoder_b": encoders[-1],
        "n_utterances": int(n),
        "layers_a": list(names_a),
        "layers_b": list(names_b),
        "matrix": np.asarray(matrix, dtype=float).tolist(),
    }


def similarity_unit(run: Run, encoder: str, other: Optional[str], measure: str) -> dict:
    """One cached similarity matrix of the run: within ``encoder``, or ``encoder`` against ``other``."""
    name = unit_dir_name(encoder) if other is None else f"{unit_dir_name(encoder)}--{unit_dir_name(other)}"

    def compute():
        store_b = None if other is None else run.store(other)
        return similarity_results(run.store(encoder), store_b, measure, run.tell, (encoder, other or encoder)), None

    data, _ = run.unit(f"similarity/{measure}/{name}", compute)
    return data


def run_similarity(run: Run, section: SweepSection, results: dict) -> list[dict]:
    """The sweep's similarity section: every encoder within itself, then against its random twin."""
    baselines = baselines_of(section)
    matrices = []
    for encoder in section.encoders:
        matrices.append(similarity_unit(run, encoder, None, section.similarity))
        if encoder in baselines:
            matrices.append(similarity_unit(run, encoder, baselines[encoder], section.similarity))
    return matrices

