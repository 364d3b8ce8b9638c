"""Two checkpoints of one architecture compared layer by layer (issue 18, after "Transfer learning for speech
recognition on a budget": small weight changes, mostly in the inner layers, were enough to fine-tune).

For encoders A (the reference) and B, e.g. a pretrained model and its fine-tuned self as two ``hf:`` folders, or
an encoder and its ``random:`` twin, per layer of the store:

1. how far the weights computing the layer moved: ``||W_B - W_A|| / ||W_A||`` over all of the layer's parameters
   (:func:`encoders.checkpoints.weight_changes`; 0 for identical weights, about 1 against random weights);
2. how alike A's and B's representations of the same corpus are there: linear CKA of the two stores' vectors
   (:func:`probing.similarity.linear_cka`, rows matched by ``utt_id``; 1 for identical representations);
3. the probe accuracy of both on every task, with intervals and the majority class: the sweep's own cached units
   (:func:`studies.sweep.compute.sweep_unit`), so a run that also sweeps A or B computes them once.

The architecture check (same layers, parameter names and shapes, module classes) runs before any work, in
:func:`experiments.runner.check_names`; it runs again here, before either store is opened.

Units: ``compare/<A>--<B>`` (weights and CKA; keyed by both stores, whose keys include the encoders' weights,
the seed, probe settings and the compare section) and the sweep units ``sweep/<encoder>/<task>``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from speechprobe.experiments.config import CompareSection
from speechprobe.experiments.runner import Run, unit_dir_name

TOP_TENSORS = 3  # the tensors of a layer with the largest absolute change, kept in the result


def _change_row(change: Any) -> dict:
    """One :class:`encoders.checkpoints.LayerChange` as plain values, with its largest-moving tensors."""
    row = change.as_dict()
    tensors = sorted(row.pop("tensors"), key=lambda t: -t["change"])
    row.pop("parameters")
    row["n_tensors"] = len(tensors)
    row["top_tensors"] = [{key: t[key] for key in ("name", "shape", "n_parameters", "norm_a", "change", "relative")}
                          for t in tensors[:TOP_TENSORS]]
    return row


def compare_unit(run: Run, a: str, b: str) -> dict:
    """The weight change and linear CKA per layer of A and B (one cached unit)."""

    def compute():
        from speechprobe.encoders.checkpoints import FIXED, UNASSIGNED, weight_changes
        from speechprobe.encoders.registry import create_encoder
        from speechprobe.experiments.studies.similarity.compute import aligned_layers
        from speechprobe.probing.similarity import linear_cka

        run.tell(f"compare {a} vs {b}: weight changes per layer")
        changes = weight_changes(create_encoder(a), create_encoder(b), per_tensor=True)  # before any extraction
        store_a, store_b = run.store(a), run.store(b)
        layers_a, layers_b = aligned_layers(store_a, store_b)
        if list(layers_a) != list(layers_b):
            from speechprobe.errors import SpeechprobeError

            raise SpeechprobeError(f"compare: the stores of {a} and {b} hold other layers ({', '.join(layers_a)} "
                                   f"vs {', '.join(layers_b)})")
        n = next(iter(layers_a.values())).shape[0]
        run.tell(f"compare {a} vs {b}: linear CKA over {len(layers_a)} layers, {n} utterances")
        by_layer = {c.layer: c for c in changes}
        layers = []
        for name in layers_a:
            row = {"layer": name, "cka": float(linear_cka(layers_a[name], layers_b[name])),
                   "n_neurons": int(layers_a[name].shape[1])}
            change = by_layer.get(name)
            row.update(_change_row(change) if change is not None else
                       {"relative": None, "reason": "no weights mapped to this layer"})
            layers.append(row)
        unassigned = next((_change_row(c) for c in changes if c.layer == UNASSIGNED), None)
        fixed = next((_change_row(c) for c in changes if c.layer == FIXED), None)
        data = {"encoder_a": a, "encoder_b": b, "stores": [str(store_a.path), str(store_b.path)],
                "store_keys": [store_a.manifest.get("key"), store_b.manifest.get("key")],
                "n_utterances": int(n), "layers": layers, "fixed": fixed, "unassigned": unassigned}
        return data, None

    data, _ = run.unit(f"compare/{unit_dir_name(a)}--{unit_dir_name(b)}", compute)
    return data


def _interval(interval: dict) -> dict:
    return {key: interval.get(key) for key in ("value", "low", "high", "confidence", "resampled", "n_resamples")
            if key in interval}


def overlap(first: dict, second: dict) -> Optional[bool]:
    """Whether two accuracy intervals overlap (None when a bound is missing)."""
    bounds = [first.get("low"), first.get("high"), second.get("low"), second.get("high")]
    if any(b is None or not np.isfinite(b) for b in bounds):
        return None
    return bool(first["low"] <= second["high"] and second["low"] <= first["high"])


def task_rows(a: str, b: str, unit_a: dict, unit_b: dict) -> dict:
    """One task's accuracy per layer for A and B (the sweep units' numbers), their difference and overlap."""
    layers_b = {s["layer"]: s for s in unit_b["layers"]}
    rows = []
    for score_a in unit_a["layers"]:
        score_b = layers_b.get(score_a["layer"])
        if score_b is None:
            continue
        acc_a, acc_b = _interval(score_a["accuracy"]), _interval(score_b["accuracy"])
        rows.append({"layer": score_a["layer"], "a": acc_a, "b": acc_b,
                     "difference": None if acc_a.get("value") is None or acc_b.get("value") is None
                     else float(acc_b["value"] - acc_a["value"]),
                     "overlap": overlap(acc_a, acc_b),
                     "majority_a": score_a["majority_accuracy"], "majority_b": score_b["majority_accuracy"]})
    return {"task": unit_a["task"], "classes": unit_a.get("classes"), "n_folds": unit_a.get("n_folds"),
            "split_policy": unit_a.get("split_policy"), "best_layer_a": unit_a["best_layer"],
            "best_layer_b": unit_b["best_layer"], "layers": rows}


def run_compare(run: Run, section: CompareSection) -> dict:
    """Weights and CKA per layer (one unit), then every task's sweep units of A and B."""
    from speechprobe.encoders.registry import random_twin
    from speechprobe.experiments.studies.sweep.compute import sweep_unit

    a, b = section.encoders
    data = compare_unit(run, a, b)
    # B as the sweep would name it: the random-weights baseline of A, or a model of its own
    role_b = "baseline" if random_twin(a) == b else "model"
    tasks = []
    for task in section.tasks:
        run.tell(f"compare {a} vs {b}: probes for {task}")
        unit_a, _ = sweep_unit(run, a, task, "model")
        unit_b, _ = sweep_unit(run, b, task, role_b)
        tasks.append(task_rows(a, b, unit_a, unit_b))
    return {**data, "tasks": tasks}
