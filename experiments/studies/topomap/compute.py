"""Topographic neuron maps as a study (issue 18, after Krug & Stober's learned topographic filter maps).

For every encoder x task of the ``topomap`` section, at one layer (``layer``: a name, ``best`` = the task's best
layer in the sweep's cross-validation, or ``all``), the layer's neurons are laid out on a grid so that grid
neighbours correlate over the corpus (:func:`probing.topography.neuron_layout`), and the map is painted with:

(a) each label group's profile: the group's mean standardised activation minus the overall mean (z-scored per
    neuron over all utterances; in units of the neuron's spread), or, where the run's sweep computed GradNAPs
    (``sweep.gradnap: true``), the GradNAP profiles of that unit;
(b) the magnitude of the probe's weights per neuron (the sweep unit's first-fold probe at the layer; L2 norm over
    classes of its standardised weights);
(c) the top ``top_fraction`` of the layer's neurons in the probe's ranking (``rank_neurons`` with the run's
    ``probe.method``, on the first fold's training utterances: what the ablation and intervention studies rank).

Statistics (:func:`probing.topography.clustering_test`, ``permutations`` seeded permutations each): whether the
salient neurons (c) gather (mean grid distance to the nearest other salient neuron, against the same number of
neurons placed at random among the layout's cells), and Moran's I of the weight map (b) and of every group's
profile (a), against the values shuffled over the neurons. Both nulls condition on the layout.

The layout: one per encoder and layer, shared by every task painted on it (its own unit), built from the first
fold's TRAINING utterances of the section's first task's split (the layout reads no labels), its quality (the
neighbour gain: how much more grid neighbours correlate than the average pair) measured on that fold's TEST
utterances against random assignments of the neurons to the same cells (the layout fits sampling noise too, so
the in-sample gain is reported beside it only for comparison), and its stability over three seeds each drawing
half of the training utterances (:func:`probing.topography.layout_stability`; Spearman of the neuron-pair grid
distances, 1 = the same map up to rotation and reflection).

Units (keyed by the stores, the seed, the probe settings and the topomap and sweep sections):
``topomap/<encoder>/layout@<layer>`` (the layout, its quality and stability) and
``topomap/<encoder>/<task>/<layer>`` (the painted values and the tests), beside the sweep units
``sweep/<encoder>/<task>`` whose probes they read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.config import TopomapSection
from speechprobe.experiments.runner import Run, task_arrays, unit_dir_name

STABILITY_SEEDS = 3   # layouts compared for stability, each on its own half of the training utterances
SUBSAMPLE = 0.5
N_RANDOM = 100        # random assignments of the neurons to the cells: the reference of the layout's quality
ALPHA = 0.05          # a test "finds" something below this p-value (each test on its own; see the report)


# --------------------------------------------------------------------------------------------------
# which layers


def check_layer(run: Run, section: TopomapSection) -> None:
    """A named layer must be a layer of every encoder's store (checked before any unit is computed)."""
    if section.layer in ("best", "all"):
        return
    for encoder in section.encoders:
        names = run.store(encoder).layer_names
        if section.layer not in names:
            raise SpeechprobeError(f"topomap.layer: {encoder} has no layer {section.layer!r}; its layers: "
                                   f"{', '.join(names)} (or best, all)")


def layers_for(run: Run, section: TopomapSection, encoder: str, task: str) -> list[tuple[str, str]]:
    """(layer, why this layer) for one encoder and task."""
    if section.layer == "best":
        from speechprobe.experiments.studies.sweep.compute import sweep_unit

        best = sweep_unit(run, encoder, task)[0]["best_layer"]
        return [(best, "best")]
    if section.layer == "all":
        return [(name, "all") for name in run.store(encoder).layer_names]
    return [(section.layer, "named")]


def salient_count(n_neurons: int, top_fraction: float) -> int:
    """How many neurons the top fraction holds: at least 2 and at most all but one (the clustering test's range)."""
    return int(min(max(2, round(top_fraction * n_neurons)), n_neurons - 1))


# --------------------------------------------------------------------------------------------------
# the layout of one encoder's layer


def layout_unit(run: Run, section: TopomapSection, encoder: str, layer: str) -> dict:
    """The neuron layout of ``layer`` with its held-out quality and stability (one cached unit per encoder and
    layer, whatever task is painted on it)."""
    split_task = section.tasks[0]

    def compute():
        from speechprobe.probing.topography import layout_quality, layout_stability, neuron_layout

        config = run.config
        store = run.store(encoder)
        arrays = task_arrays(store, split_task, folds=config.probe.folds, seed=config.seed, control=False)
        split = arrays.splits[0]
        train, test = np.sort(np.asarray(split.train)), np.sort(np.asarray(split.test))
        X = store.layer(layer)
        X_train = np.asarray(X[train], dtype=np.float64)
        X_test = np.asarray(X[test], dtype=np.float64)
        run.tell(f"topomap {encoder} / {layer}: laying out {X.shape[1]} neurons from {len(train)} training "
                 f"utterances, quality on {len(test)} others")
        layout = neuron_layout(X_train, seed=config.seed)
        held_out = layout_quality(X_test, layout, n_random=N_RANDOM, seed=config.seed)
        in_sample = layout_quality(X_train, layout, n_random=N_RANDOM, seed=config.seed)
        seeds = [config.seed + i for i in range(STABILITY_SEEDS)]
        stability = layout_stability(X_train, seeds=seeds, subsample=SUBSAMPLE)
        data = {"encoder": encoder, "layer": layer, "n_neurons": int(X.shape[1]), "shape": list(layout.shape),
                "method": layout.method, "refine": layout.refine, "seed": layout.seed,
                "split_task": arrays.name, "split_policy": arrays.split_policy,
                "n_train": int(len(train)), "n_test": int(len(test)),
                "quality": held_out, "quality_in_sample": in_sample, "stability": stability,
                "layout": layout.as_dict()}
        return data, None

    data, _ = run.unit(f"topomap/{unit_dir_name(encoder)}/layout@{unit_dir_name(layer)}", compute)
    return data


# --------------------------------------------------------------------------------------------------
# what is painted on it


def activation_profiles(X: np.ndarray, labels: np.ndarray) -> tuple[list[str], list[int], np.ndarray]:
    """Each group's mean standardised activation minus the overall mean: (groups, sizes, (groups, D)).

    Standardised per neuron over all utterances (a constant neuron's profile is 0)."""
    X = np.asarray(X, dtype=np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    Z = (X - mean) / np.where(std > 1e-12 * np.maximum(np.abs(mean), 1e-300), std, np.inf)
    overall = Z.mean(axis=0)
    labels = np.asarray(labels).astype(str)
    groups = sorted(np.unique(labels).tolist())
    profiles = np.stack([Z[labels == g].mean(axis=0) - overall for g in groups])
    return groups, [int(np.sum(labels == g)) for g in groups], profiles


def _gradnap_profiles(run: Run, encoder: str, task: str, layer: str) -> Optional[tuple[list[str], list[int], np.ndarray]]:
    """The run's GradNAP profiles of this encoder, task and layer, where its sweep computes GradNAPs."""
    sweep = run.config.sweep
    if not (sweep and sweep.gradnap and encoder in sweep.encoders and task in sweep.tasks):
        return None
    from speechprobe.experiments.layout import GRADNAP_PROFILES
    from speechprobe.experiments.studies.gradnap.compute import gradnap_unit

    data, folder = gradnap_unit(run, encoder, task)
    names = [entry["layer"] for entry in data.get("layers") or []]
    path = Path(folder) / GRADNAP_PROFILES
    if layer not in names or not path.is_file():
        return None
    position = names.index(layer)
    entry = data["layers"][position]
    with np.load(path) as stored:
        profiles = np.asarray(stored[f"layer{position}"], dtype=np.float64)
    sizes = entry.get("sizes") or [0] * len(entry["groups"])
    return [str(g) for g in entry["groups"]], [int(s) for s in sizes], profiles


def _moran(result: dict) -> dict:
    return {key: result[key] for key in ("moran_i", "moran_expected", "moran_null_std", "moran_p_value")}


def map_unit(run: Run, section: TopomapSection, encoder: str, task: str, layer: str, chosen: str) -> dict:
    """One task painted on one layer's map, with its clustering statistics (cached)."""
    from speechprobe.experiments.studies.sweep.compute import sweep_unit

    sweep_data, sweep_path = sweep_unit(run, encoder, task)
    layout_data = layout_unit(run, section, encoder, layer)
    gradnap = _gradnap_profiles(run, encoder, task, layer)

    def compute():
        from speechprobe.probing.probe import ElasticNetProbe
        from speechprobe.probing.ranking import rank_neurons
        from speechprobe.probing.topography import clustering_test, NeuronLayout

        config = run.config
        store = run.store(encoder)
        arrays = task_arrays(store, task, folds=config.probe.folds, seed=config.seed, control=False)
        split = arrays.splits[0]
        X = np.asarray(store.layer(layer), dtype=np.float32)
        labels = arrays.labels
        layout = NeuronLayout.from_dict(layout_data["layout"])
        d = layout.n_neurons
        if X.shape[1] != d:
            raise SpeechprobeError(f"topomap: the layout of {encoder} / {layer} has {d} neurons, the store {X.shape[1]}")
        probe = ElasticNetProbe.load(sweep_path / sweep_data["probe_dirs"][layer])
        weights = np.linalg.norm(np.asarray(probe.coef_, dtype=np.float64), axis=0)
        run.tell(f"topomap {encoder} / {task} / {layer}: ranking {d} neurons ({config.probe.method}), "
                 f"{section.permutations} permutations per test")
        ranking = np.asarray(rank_neurons(probe, config.probe.method, X=X[split.train], y=labels[split.train]))
        k = salient_count(d, section.top_fraction)
        mask = np.zeros(d, dtype=bool)
        mask[ranking[:k]] = True
        if gradnap is not None:
            groups, sizes, profiles = gradnap
            kind = "gradnap"
        else:
            groups, sizes, profiles = activation_profiles(X, labels)
            kind = "activation"
        seed, n = config.seed, section.permutations
        salient = clustering_test(layout, mask, n_permutations=n, seed=seed)
        weight_test = clustering_test(layout, weights, n_permutations=n, seed=seed)
        group_rows = []
        for group, size, profile in zip(groups, sizes, profiles):
            test = clustering_test(layout, profile, n_permutations=n, seed=seed)
            group_rows.append({"group": group, "size": size, **_moran(test), "profile": profile.tolist()})
        score = next((s for s in sweep_data["layers"] if s["layer"] == layer), {})
        data = {"encoder": encoder, "task": arrays.name, "layer": layer, "chosen": chosen,
                "best_layer": sweep_data.get("best_layer"), "n_neurons": d, "n_utterances": int(len(labels)),
                "accuracy": score.get("accuracy"), "majority_accuracy": score.get("majority_accuracy"),
                "method": config.probe.method, "top_fraction": section.top_fraction, "k": k,
                "salient_neurons": sorted(int(i) for i in ranking[:k]),
                "salient": {key: value for key, value in salient.items() if not key.startswith("moran")},
                "weights": weights.tolist(), "weight_moran": _moran(weight_test),
                "profile_kind": kind, "groups": group_rows, "n_permutations": n,
                "layout": layout_data["layout"]}
        return data, None

    data, _ = run.unit(f"topomap/{unit_dir_name(encoder)}/{unit_dir_name(task)}/{unit_dir_name(layer)}", compute)
    summary = {key: layout_data[key] for key in ("shape", "method", "refine", "split_task", "split_policy", "n_train",
                                                 "n_test", "quality", "quality_in_sample", "stability")}
    return {**data, "layout_summary": summary}


def run_topomap(run: Run, section: TopomapSection) -> dict:
    """Every encoder x task x chosen layer: its map and statistics (the layouts shared by the tasks)."""
    check_layer(run, section)
    maps = []
    for encoder in section.encoders:
        for task in section.tasks:
            for layer, chosen in layers_for(run, section, encoder, task):
                maps.append(map_unit(run, section, encoder, task, layer, chosen))
    return {"encoders": list(section.encoders), "tasks": list(section.tasks), "layer": section.layer,
            "top_fraction": section.top_fraction, "permutations": section.permutations, "alpha": ALPHA,
            "maps": maps}
