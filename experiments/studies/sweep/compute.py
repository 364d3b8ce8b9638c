"""The layer-wise probing sweep: encoders x tasks x layers, beside each encoder's random-weights twin.

One unit per (encoder, task): a cross-validated sweep (:func:`probing.crossval.cross_validate_layers`:
every utterance tested once, by a probe that never saw its speaker when the task is speaker-disjoint),
control task and selectivity (none for speaker identity, whose control task is itself learnt by
recognising speakers: the unit then holds null control accuracy and selectivity and a
``selectivity_note``), and where the task's salient neurons live when every layer is probed at once
(the top 5% of a probe on all layers concatenated, counted per layer). The unit folder keeps the
first fold's probes and the pooled test predictions, which the bias audit, the GradNAPs and the input
attribution read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from speechprobe.experiments.config import SweepSection
from speechprobe.experiments.layout import CONTROL_PROBES_DIR, PREDICTIONS, PROBES_DIR
from speechprobe.experiments.runner import (baselines_of, grid, memory_budget, Run, task_arrays, training_options,
                                            unit_dir_name)
from speechprobe.experiments.studies.sweep.results import selectivity_note
from speechprobe.probing.ranking import top_counts, TOP_FRACTION


def _salient(layers: dict[str, np.ndarray], labels: np.ndarray, split: Any, l1: float, l2: float,
             options: Any) -> dict:
    """Where the top neurons of a probe (penalty l1, l2; TrainingOptions ``options``) on every layer at once
    live (counts per layer)."""
    from speechprobe.probing.probe import ElasticNetProbe
    from speechprobe.probing.ranking import rank_neurons

    names = list(layers)
    X_train = np.hstack([np.asarray(layers[name][split.train], dtype=np.float32) for name in names])
    X_val = np.hstack([np.asarray(layers[name][split.validation], dtype=np.float32) for name in names])
    probe = ElasticNetProbe(l1, l2, **options.as_dict()).fit(X_train, labels[split.train], X_val, labels[split.validation])
    widths = [layers[name].shape[1] for name in names]
    # the training split's features and labels: what the rankings that read data (path, probeless) need
    ranking = rank_neurons(probe, X=X_train, y=labels[split.train])
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
        layers = {name: store.layer(name) for name in store.layer_names}  # memory maps: read a bank of rows at a time
        settings = grid(config)
        run.tell(f"sweep {encoder} / {task}: {len(layers)} layers x {len(settings)} settings x {len(arrays.splits)} fold{'s' if len(arrays.splits) > 1 else ''}")
        cv = cross_validate_layers(
            layers, arrays.labels, arrays.splits, grid=settings, groups=arrays.groups,
            control_labels=arrays.control_labels, control_split=arrays.control_split,
            options=training_options(config), n_resamples=config.probe.n_resamples, seed=config.seed,
            memory=memory_budget(config))
        best = next(s for s in cv.layers if s.layer == cv.best_layer)
        # the all-layers probe is seeded with the run's seed (the sweep's probes keep the options' seed 0):
        # what the cached units were computed with
        salient = _salient(layers, arrays.labels, arrays.splits[0], best.l1, best.l2,
                           training_options(config).replace(seed=config.seed))
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
    results = []
    for encoder in section.encoders:
        for role, name in (("model", encoder), ("baseline", baselines.get(encoder))):
            if name is None:
                continue
            for task in section.tasks:
                data, folder = sweep_unit(run, name, task, role)
                results.append({**data, "baseline_of": encoder if role == "baseline" else None})
    return {"encoders": list(section.encoders), "baselines": baselines, "tasks": list(section.tasks),
            "results": results, "findings": findings(results, baselines)}


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
