"""The bias audit of one attribute (gender by default) in one encoder.

It answers, from the sweep's units (computed here if the sweep did not run):
1. how strongly and where the attribute is encoded (its layer-wise accuracy, best layer on validation);
2. how many neurons carry it at the audited layer (minimal subset of the run's ranking, beside the k that
   random neurons need for the same accuracy; each ranking checked against random neurons kept alone)
   and how that set overlaps the minimal subsets of the other tasks (Jaccard beside the overlap expected
   by chance for sets of those sizes, with a hypergeometric p-value);
3. who the other tasks' probes disadvantage: their pooled cross-validated test accuracy per attribute
   group, with speaker-bootstrap intervals, and the best-minus-worst gap flagged when its own interval
   excludes 0 (:func:`probing.fairness.group_gap`);
4. what removing the attribute's salient neurons does (mean ablation, no retraining) to the attribute's
   probe and to the other tasks' probes at that layer, beside removing as many random neurons.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from speechprobe.experiments.config import AuditSection
from speechprobe.experiments.runner import Run, task_arrays, unit_dir_name

RANDOM_SEEDS = (0, 1, 2, 3, 4)


def audit_unit(run: Run, section: AuditSection) -> tuple[dict, Path]:
    from speechprobe.experiments.layout import PREDICTIONS
    from speechprobe.experiments.studies.sweep.compute import sweep_unit

    encoder, attribute = section.encoder, section.attribute
    others = [t for t in section.tasks if t != attribute]

    def compute():
        from speechprobe.probing.ablation import ablate
        from speechprobe.probing.fairness import group_gap
        from speechprobe.probing.options import TrainingOptions
        from speechprobe.probing.probe import ElasticNetProbe
        from speechprobe.probing.ranking import overlap, rank_neurons
        from speechprobe.probing.ranking_check import check_ranking, minimal_versus_random

        config = run.config
        store = run.store(encoder)
        units = {task: sweep_unit(run, encoder, task) for task in [attribute, *others]}
        attr_unit, _ = units[attribute]
        layer = attr_unit["best_layer"] if section.layer == "best" else section.layer
        if layer not in store.layer_names:
            from speechprobe.errors import SpeechprobeError

            raise SpeechprobeError(f"audit: {encoder} has no layer {layer!r}; its layers: {', '.join(store.layer_names)}")
        X = np.asarray(store.layer(layer), dtype=np.float32)
        index = store.index
        speakers = index["speaker"].astype(str).to_numpy()
        attribute_values = task_arrays(store, attribute, folds=config.probe.folds, seed=config.seed,
                                       control=False).labels
        run.tell(f"audit {attribute} in {encoder} at {layer}: minimal subsets of {1 + len(others)} tasks")

        salient, versus, checks, probes, splits, labels = {}, {}, {}, {}, {}, {}
        method = config.probe.method
        for task, (unit, folder) in units.items():
            arrays = task_arrays(store, task, folds=config.probe.folds, seed=config.seed, control=False)
            split = arrays.splits[0]
            y = arrays.labels
            probe = ElasticNetProbe.load(folder / unit["probe_dirs"][layer])
            ranking = rank_neurons(probe, method, X=X[split.train], y=y[split.train])
            retrained = dict(l1=probe.l1, l2=probe.l2, options=TrainingOptions.from_probe(probe))  # the probe's own
            checks[task] = check_ranking(X[split.train], y[split.train], X[split.validation], y[split.validation],
                                         X[split.test], y[split.test], ranking, **retrained)
            versus[task] = minimal_versus_random(X[split.train], y[split.train], X[split.validation],
                                                 y[split.validation], ranking, target=config.probe.target, **retrained)
            salient[task] = versus[task].subset
            probes[task], splits[task], labels[task] = probe, split, y

        d = X.shape[1]
        tasks = [attribute, *others]
        overlaps = [[overlap(salient[a].neurons, salient[b].neurons, d).__dict__ for b in tasks] for a in tasks]

        groups = {}
        for task in others:
            unit, folder = units[task]
            table = pd.read_csv(folder / PREDICTIONS, dtype=str, keep_default_na=False)
            rows = table["row"].astype(int).to_numpy()
            best = unit["best_layer"]
            gap = group_gap(table["label"], table[f"predicted:{best}"], attribute_values[rows], speakers[rows],
                            n_resamples=config.probe.n_resamples, seed=config.seed)
            groups[task] = {"layer": best, **gap.as_dict()}

        removed = [int(i) for i in salient[attribute].neurons]
        ablation = {}
        for task in tasks:
            test = splits[task].test
            Xt, yt = X[test], labels[task][test]
            rng_sets = [np.random.default_rng(s).permutation(d)[:len(removed)] for s in RANDOM_SEEDS]
            random_scores = [ablate(probes[task], Xt, yt, s, mode="mean") for s in rng_sets]
            ablation[task] = {
                "full": ablate(probes[task], Xt, yt, [], mode="mean"),
                "removed_attribute_neurons": ablate(probes[task], Xt, yt, removed, mode="mean"),
                "removed_random_mean": float(np.mean(random_scores)),
                "removed_random_std": float(np.std(random_scores)),
            }

        data = {
            "encoder": encoder, "attribute": attribute, "tasks": others, "layer": layer, "n_neurons": d,
            "encoding": {"best_layer": attr_unit["best_layer"], "layers": attr_unit["layers"]},
            "method": method,
            "salient": {task: {"k": m.k, "fraction": m.fraction, "accuracy": m.accuracy,
                               "full_accuracy": m.full_accuracy, "reached": m.reached,
                               "random_k": versus[task].random_k, "random_k_median": versus[task].random_k_median,
                               "is_minimal": versus[task].is_minimal, "summary": versus[task].summary(),
                               "neurons": [int(i) for i in m.neurons]} for task, m in salient.items()},
            "checks": {task: check.as_dict() for task, check in checks.items()},
            "overlap_tasks": tasks,
            "overlap": overlaps,
            "groups": groups,
            "ablation": {"neurons": removed, "mode": "mean", "random_seeds": list(RANDOM_SEEDS), "tasks": ablation},
        }
        return data, None

    return run.unit(f"audit/{unit_dir_name(encoder)}/{unit_dir_name(attribute)}", compute)


def run_audit(run: Run, section: AuditSection) -> dict:
    data, _ = audit_unit(run, section)
    return data
