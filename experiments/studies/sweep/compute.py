"""The layer-wise probing sweep: encoders x tasks x layers, beside each encoder's random-weights twin.

One unit per (encoder, task): a cross-validated sweep (:func:`probing.crossval.cross_validate_layers`:
every utterance tested once, by a probe that never saw its speaker when the task is speaker-disjoint),
control task and selectivity (none for speaker identity, whose control task is itself learnt by
recognising speakers: the unit then holds null control accuracy and selectivity and a
``selectivity_note``), and where the task's salient neurons live when every layer is probed at once
(the top 5% of a probe on all layers concatenated, counted per layer). The unit folder keeps the
first fold's probes and the pooled test predictions, which the bias audit reads. With
`sweep.attribution`, one more unit per model encoder x task attributes the best layer's probe to the
input features of a few of that fold's test utterances (:mod:`experiments.attribution`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from speechprobe.experiments.config import SweepSection
from speechprobe.experiments.figures import selectivity_note
from speechprobe.experiments.runner import Run, baselines_of, grid, probe_params, task_arrays, unit_dir_name
from speechprobe.probing.ranking import TOP_FRACTION, top_counts

PREDICTIONS, PROBES_DIR, CONTROL_PROBES_DIR = "predictions.csv", "probes", "control_probes"


def _salient(layers: dict[str, np.ndarray], labels: np.ndarray, split: Any, l1: float, l2: float,
             params: dict, seed: int) -> dict:
    """Where the top neurons of a probe on every layer at once live (counts per layer)."""
    from speechprobe.probing.probe import ElasticNetProbe
    from speechprobe.probing.ranking import rank_neurons

    names = list(layers)
    X = np.hstack([layers[name] for name in names])
    probe = ElasticNetProbe(l1=l1, l2=l2, seed=seed, **params).fit(
        X[split.train], labels[split.train], X[split.validation], labels[split.validation])
    widths = [layers[name].shape[1] for name in names]
    # the training split's features and labels: what the rankings that read data (path, probeless) need
    ranking = rank_neurons(probe, X=X[split.train], y=labels[split.train])
    top_k, counts = top_counts(names, widths, ranking)
    return {"top_fraction": TOP_FRACTION, "top_k": top_k, "l1": l1, "l2": l2, "counts": counts,
            "share_of_layer": {name: counts[name] / w for name, w in zip(names, widths)}}


def sweep_unit(run: Run, encoder: str, task: str, role: str = "model") -> tuple[dict, Path]:
    """The cross-validated sweep of one encoder on one task (cached in the run folder)."""

    def compute():
        from speechprobe.experiments.layout import probe_dir_names
        from speechprobe.probing.crossval import cross_validate_layers
        from speechprobe.tasks.tasks import get_task

        config = run.config
        store = run.store(encoder)
        note = get_task(task, store.index).control_note  # the speaker task's control would be speaker identity
        arrays = task_arrays(store, task, folds=config.probe.folds, seed=config.seed,
                             control=config.probe.control and note is None)
        layers = {name: np.asarray(store.layer(name), dtype=np.float32) for name in store.layer_names}
        settings = grid(config)
        run.tell(f"sweep {encoder} / {task}: {len(layers)} layers x {len(settings)} settings x {len(arrays.splits)} fold{'s' if len(arrays.splits) > 1 else ''}")
        cv = cross_validate_layers(
            layers, arrays.labels, arrays.splits, grid=settings, groups=arrays.groups,
            control_labels=arrays.control_labels, control_split=arrays.control_split,
            probe_params=probe_params(config), n_resamples=config.probe.n_resamples, seed=config.seed)
        best = next(s for s in cv.layers if s.layer == cv.best_layer)
        salient = _salient(layers, arrays.labels, arrays.splits[0], *best.settings[0], probe_params(config), config.seed)
        index = store.index
        data = {
            "encoder": encoder,
            "task": arrays.name,
            "role": role,
            "store": str(store.path),
            "store_key": store.manifest.get("key"),
            "n_utterances": int(len(arrays.labels)),
            "n_speakers": int(index["speaker"].nunique()) if "speaker" in index.columns else None,
            "classes": sorted(set(arrays.labels.tolist())),
            "split_policy": arrays.split_policy,
            **cv.as_dict(),
            "salient": salient,
        }
        if note is not None:
            data["selectivity_note"] = note
        dirs = probe_dir_names(list(layers))

        def extra(folder: Path) -> None:
            for name, probe in cv.probes.items():
                probe.save(folder / PROBES_DIR / dirs[name])
            for name, probe in cv.control_probes.items():
                probe.save(folder / CONTROL_PROBES_DIR / dirs[name])
            table = pd.DataFrame({"row": cv.test_rows, "utt_id": index["utt_id"].to_numpy()[cv.test_rows],
                                  "label": arrays.labels[cv.test_rows]})
            for name, predicted in cv.predictions.items():
                table[f"predicted:{name}"] = predicted
            table.to_csv(folder / PREDICTIONS, index=False)

        data["probe_dirs"] = {name: f"{PROBES_DIR}/{dirs[name]}" for name in layers}
        return data, extra

    data, folder = run.unit(f"sweep/{unit_dir_name(encoder)}/{unit_dir_name(task)}", compute)
    return without_meaningless_control(data), folder


def without_meaningless_control(data: dict) -> dict:
    """A sweep unit with control accuracy and selectivity set to null where they mean nothing (the speaker
    task; a unit cached before units said so may still hold numbers), and the ``selectivity_note`` why."""
    note = selectivity_note(data)
    if note is None:
        return data
    layers = [{**s, "control_accuracy": None, "selectivity": None} for s in data.get("layers", [])]
    return {**data, "layers": layers, "selectivity_note": note}


def run_sweep(run: Run, section: SweepSection) -> dict:
    """Every (encoder or baseline) x task unit, then the comparisons the report states."""
    baselines = baselines_of(section)
    results, folders = [], {}
    for encoder in section.encoders:
        for role, name in (("model", encoder), ("baseline", baselines.get(encoder))):
            if name is None:
                continue
            for task in section.tasks:
                data, folder = sweep_unit(run, name, task, role)
                results.append({**data, "baseline_of": encoder if role == "baseline" else None})
                folders[(name, task)] = folder
    sweep = {"encoders": list(section.encoders), "baselines": baselines, "tasks": list(section.tasks),
             "results": results, "findings": findings(results, baselines)}
    if section.similarity:
        from speechprobe.experiments.layer_similarity import run_similarity

        sweep["similarity"] = run_similarity(run, section, baselines)
    if section.gradnap:
        sweep["gradnap"] = [gradnap_unit(run, encoder, task)[0] for encoder in section.encoders for task in section.tasks]
    if section.attribution is not None:
        models = {(r["encoder"], r["task"]): r for r in results if r["role"] == "model"}
        sweep["attribution"] = [attribution_unit(run, section, e, t, models[(e, t)], folders[(e, t)])[0]
                                for e in section.encoders for t in section.tasks]
    return sweep


def gradnap_unit(run: Run, encoder: str, task: str) -> tuple[dict, Path]:
    """GradNAPs of the task's label groups per layer (cached), with the sweep unit's settings and first-fold probes.

    The other folds' probes are trained at the setting the sweep chose for the layer on the first fold, so every utterance's
    relevance comes from a probe that never saw it (see experiments.gradnap_commands).
    """
    sweep_data, sweep_path = sweep_unit(run, encoder, task)

    def compute():
        from speechprobe.experiments.layout import GRADNAP_PROFILES as PROFILES
        from speechprobe.probing.gradnap import gradnap_layers
        from speechprobe.probing.probe import ElasticNetProbe
        from speechprobe.tasks.splits import cross_validation_splits
        from speechprobe.tasks.tasks import get_task

        config = run.config
        store = run.store(encoder)
        index = store.index
        arrays = task_arrays(store, task, folds=config.probe.folds, seed=config.seed, control=False)
        splits = cross_validation_splits(index, task, folds=config.probe.folds, seed=config.seed)
        column = get_task(task, index).label_column
        layers = {s["layer"]: np.asarray(store.layer(s["layer"]), dtype=np.float32) for s in sweep_data["layers"]}
        settings = {s["layer"]: tuple(s["settings"][0]) for s in sweep_data["layers"]}  # the saved probes' (fold 0)
        probes = {name: {0: ElasticNetProbe.load(sweep_path / folder)} for name, folder in sweep_data["probe_dirs"].items()}
        blocks = index["speaker"].astype(str).to_numpy() if "speaker" in index.columns else None
        run.tell(f"gradnap {encoder} / {task}: {len(layers)} layers x {len(splits)} folds")
        result, profiles = gradnap_layers(layers, arrays.labels, arrays.labels, splits, blocks=blocks, settings=settings,
                                          probe_params=probe_params(config), seed=config.seed, probes=probes, tell=run.tell)
        data = {"encoder": encoder, "task": arrays.name, "groups_column": column, "n_utterances": int(len(arrays.labels)),
                "folds": len(splits), **result}

        def extra(folder: Path) -> None:
            np.savez_compressed(folder / PROFILES, **{f"layer{i}": profiles[n] for i, n in enumerate(layers)},
                                layers=np.array(list(layers)))

        return data, extra

    return run.unit(f"gradnap/{unit_dir_name(encoder)}/{unit_dir_name(task)}", compute)


# --------------------------------------------------------------------------------------------------
# optional: input attribution of the best layer's probe (experiments.attribution)

ATTRIBUTION_MAPS = "attribution-{index}.npz"


def _attribution_utterances(labels: np.ndarray, candidates: np.ndarray, classes: list[str], n: int) -> list[int]:
    """Store rows among `candidates`: the first utterance of each class in turn (sorted classes), until `n`."""
    candidates = np.sort(np.asarray(candidates, dtype=int))
    by_class = {c: [int(i) for i in candidates[labels[candidates] == c]] for c in classes}
    rows: list[int] = []
    while len(rows) < min(n, len(candidates)):
        before = len(rows)
        for c in classes:
            if by_class[c] and len(rows) < n:
                rows.append(by_class[c].pop(0))
        if len(rows) == before:
            break
    return rows


def attribution_unit(run: Run, section: SweepSection, encoder: str, task: str, unit: dict,
                     unit_folder: Path) -> tuple[dict, Path]:
    """Attribution maps of the sweep's best-layer probe (first fold) for a few utterances, with the
    model-randomisation check; one cached unit per encoder x task (maps as npz in its folder)."""
    settings = section.attribution

    def compute():
        from speechprobe.encoders.registry import create_encoder
        from speechprobe.experiments.attribution import AttributionSettings, run_attribution
        from speechprobe.probing.probe import ElasticNetProbe

        layer = unit["best_layer"]
        probe = ElasticNetProbe.load(unit_folder / unit["probe_dirs"][layer])
        store = run.store(encoder)
        arrays = task_arrays(store, task, folds=run.config.probe.folds, seed=run.config.seed, control=False)
        classes = [str(c) for c in probe.classes_]
        # utterances the probe (the first fold's) was not trained on: that fold's test part
        rows = _attribution_utterances(np.asarray(arrays.labels).astype(str), arrays.splits[0].test, classes,
                                       settings.utterances)
        model = create_encoder(encoder)
        corpus = run.load_corpus()
        ids = store.index["utt_id"].astype(str).to_numpy()
        options = AttributionSettings(methods=tuple(settings.methods), ig_steps=settings.ig_steps,
                                      shap_samples=settings.shap_samples, seed=run.config.seed)
        run.tell(f"attribution {encoder} / {task}: layer {layer}, {len(rows)} utterance(s), "
                 f"{', '.join(settings.methods)}")
        records, arrays_out = [], []
        for index, row in enumerate(rows):
            label = str(arrays.labels[row])
            result = run_attribution(model, model.layer_names.index(layer), probe, store.manifest.get("pooling", "mean"),
                                     corpus.load_audio(row, model.sample_rate), classes.index(label), options,
                                     skip_unsupported=True)
            records.append({
                "encoder": encoder, "task": task, "layer": layer, "utterance": str(ids[row]), "target": label,
                "probabilities": dict(zip(classes, result.probabilities.tolist())),
                "feature_kind": result.feature_kind, "feature_hop": result.feature_hop,
                "sample_rate": model.sample_rate, "real_frames": result.real_frames,
                "methods": result.summaries, "maps_file": ATTRIBUTION_MAPS.format(index=index)})
            arrays_out.append({"features": result.features, **{f"map_{m}": v for m, v in result.maps.items()}})
        data = {"encoder": encoder, "task": task, "layer": layer, "methods": list(settings.methods),
                "utterances": records, "mean": _attribution_means(records, list(settings.methods))}

        def extra(folder: Path) -> None:
            for record, maps in zip(records, arrays_out):
                np.savez_compressed(folder / record["maps_file"], **maps)

        return data, extra

    data, folder = run.unit(f"attribution/{unit_dir_name(encoder)}/{unit_dir_name(task)}", compute)
    data = {**data, "folder": str(folder)}
    return data, folder


def _attribution_means(records: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per method, over the utterances: mean randomisation correlation and mean share of |attribution| per band."""
    out: dict[str, dict] = {}
    for method in methods:
        summaries = [r["methods"][method] for r in records if "error" not in r["methods"].get(method, {"error": 1})]
        rho = [s["randomisation_spearman"] for s in summaries if s.get("randomisation_spearman") is not None]
        entry: dict[str, Any] = {"randomisation_spearman": float(np.nanmean(rho)) if rho else None}
        errors = [r["methods"][method]["error"] for r in records if "error" in r["methods"].get(method, {})]
        if errors:
            entry["error"] = errors[0]
        bands = [s["band_fractions"] for s in summaries if s.get("band_fractions")]
        if bands:
            entry["band_fractions"] = {b: float(np.mean([x[b] for x in bands])) for b in ("low", "mid", "high")}
        out[method] = entry
    return out


def findings(results: list[dict], baselines: dict[str, str]) -> list[dict]:
    """Per (encoder, task): where it peaks (on validation) and the gain over random weights per layer."""
    by_key = {(r["encoder"], r["task"]): r for r in results}
    out = []
    for r in results:
        if r["role"] != "model":
            continue
        best = next(s for s in r["layers"] if s["layer"] == r["best_layer"])
        entry = {
            "encoder": r["encoder"], "task": r["task"], "peak_layer": r["best_layer"],
            "peak_position": [s["layer"] for s in r["layers"]].index(r["best_layer"]) / max(1, len(r["layers"]) - 1),
            "peak_accuracy": best["accuracy"], "majority_accuracy": best["majority_accuracy"],
            "selectivity": best["selectivity"],
            **({"selectivity_note": r["selectivity_note"]} if r.get("selectivity_note") else {}),
            "salient_counts": r["salient"]["counts"],
        }
        twin = by_key.get((baselines.get(r["encoder"]), r["task"]))
        if twin is not None:
            random_by_layer = {s["layer"]: s["accuracy"]["value"] for s in twin["layers"]}
            entry["baseline"] = twin["encoder"]
            entry["gain_over_random"] = {s["layer"]: s["accuracy"]["value"] - random_by_layer[s["layer"]]
                                         for s in r["layers"] if s["layer"] in random_by_layer}
        out.append(entry)
    return out
