"""Attribution units of a run: the best layer's probe (first fold) attributed to the input of a few test
utterances per model encoder x task, with the model-randomisation check."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from speechprobe.experiments.config import SweepSection
from speechprobe.experiments.runner import Run, task_arrays, unit_dir_name

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
        from speechprobe.experiments.studies.attribution.attribute import AttributionSettings, run_attribution
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


def run_attribution_units(run: Run, section: SweepSection, results: dict) -> list[dict]:
    """Input attribution of the sweep's best-layer probe, per model encoder x task (after the sweep)."""
    from speechprobe.experiments.studies.sweep.compute import sweep_unit

    out = []
    for encoder in section.encoders:
        for task in section.tasks:
            unit, folder = sweep_unit(run, encoder, task)
            out.append(attribution_unit(run, section, encoder, task, unit, folder)[0])
    return out
