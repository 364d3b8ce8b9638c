"""Causal interventions as a study (issue 17): remove an attribute inside the encoder's forward pass at one layer
and measure what happens after it.

Probing says where an attribute can be read; it does not say the network *uses* it there, nor what removing it
costs. Here the attribute is removed while the encoder runs (``encoders.interventions``), so every later layer
sees the change, and a store of the intervened encoder is extracted (``encoders.extraction.extract(...,
intervention=...)``). On each such store:

(a) the attribute's probes, retrained on every layer from L on (same speaker-disjoint split as the plain probes,
    against the majority class): does the attribute vanish after L, or does the network recover it? Beside them,
    the plain store's probes applied unchanged (what the intervention does to a fixed reader);
(b) the encoder's own job (``jobs``): GE2E's speaker-verification EER on its embedding layer, among the held-out
    test speakers only, overall and per gender; Whisper's WER when transcription is installed;
(c) the other tasks' probes, retrained at the last layer: the cost to them;
(d) agreement with stored-vector ablation at L itself: the plain probe of L on the intervened store against
    ``probing.ablation.ablate`` (or the eraser applied to the stored vectors) for the same neurons, and the
    largest difference between the intervened vectors of L and the stored vectors edited the same way.

Conditions, each against its null:
- ``none``: an intervention on no neuron (``neurons=()``), running all the machinery: its store must equal the
  plain store exactly, and it is the no-intervention point every other condition is compared with;
- ``top<k>-<mode>``: the top k neurons of the attribute's ranking at L (``rank_neurons``, the run's method; the
  k named ``minimal`` is the minimal subset's, ``minimal_subset`` with the run's target), filled by ``mode``;
- ``random<k>-<mode>-<draw>``: k random neurons of L (seeded draws): the null of every top-k;
- ``leace``: LEACE erasure of the attribute at L (``probing.erasure.LeaceEraser``);
- ``random-directions<r>-<draw>``: an orthogonal projection removing r random directions (r = LEACE's rank)
  about the same mean: the null of LEACE (removing that many dimensions of nothing in particular).

Fitted on the plain store and the training utterances only (never validation or test):
- the probes, ranking and minimal subset: on the pooled vectors of the training rows (validation picks the
  setting and the subset's k);
- the fill values (``mean``): each neuron's mean over every real frame of the training utterances
  (``encoders.interventions.layer_frames``), the in-distribution value DESIGN.md asks for, not the mean of the
  pooled vectors (which weights utterances, not frames: the two differ slightly, which is why (d) at L agrees
  closely rather than exactly for mean ablation);
- the LEACE eraser: on a seeded sample of at most ``FRAME_SAMPLE`` real frames of the training utterances, each
  labelled with its utterance's attribute: fitted on the frames the forward pass transforms, not on pooled
  vectors. Being affine, erasure commutes with mean pooling, so the intervened store's vectors of L are exactly
  the eraser applied to the stored vectors, and (d) agrees to float rounding;
- the ``resample`` bank: ``BANK_ROWS`` frames of that sample.

Units (cached, keyed by the plain store, the config's seed/probe/intervention/sweep sections) under
``units/intervention/<encoder>/<attribute>/<layer>/``: one ``fit`` unit and one unit per condition. A condition
unit also records the fit it was computed from and the intervention's content key, and is recomputed when either
changed. The intervened stores sit beside them in ``stores/<condition>-<intervention key>``: content-addressed
(extraction reuses a complete store of the same key, resumes an interrupted one), so a unit recomputed because
the probe settings or the ks changed reads its store again instead of extracting it; stores and units no current
condition reads are removed at the end.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.config import InterventionSection
from speechprobe.experiments.runner import (grid, intervention_base, memory_budget, Run, task_arrays, training_options,
                                            UNIT_FILE, UNITS_DIR)
from speechprobe.experiments.studies.intervention.jobs import (job_kind, no_job, transcription_job,
                                                               verification_job)
from speechprobe.experiments.writing import N_SD

FRAME_SAMPLE = 50_000   # frames of the training utterances kept for the LEACE fit (a seeded sample)
BANK_ROWS = 4096        # frames in the resample bank
FRAME_BATCH = 16        # utterances per forward pass of the frame statistics
STORES_DIR = "stores"   # the intervened stores, beside the units that read them: <condition>-<intervention key>
FIT_ARRAYS = "fit.npz"
GROUP_COLUMN = "gender"  # the bias angle of the own job: its metric within each of these groups


# --------------------------------------------------------------------------------------------------
# the fit: probes, ranking, minimal subset, frame statistics, eraser


def frame_statistics(corpus: Any, encoder: Any, layer: str, rows: np.ndarray, labels: np.ndarray, *, seed: int,
                     sample: int = FRAME_SAMPLE, tell: Callable[[str], None] = lambda m: None) -> dict:
    """Each neuron's mean over every real frame of ``rows`` at ``layer``, and a seeded sample of at most
    ``sample`` frames with their utterance's label.

    Utterances are batched within one label at a time (so every frame of a batch has the same label), longest
    first; at most ``ceil(sample / len(rows))`` frames per utterance of a batch are kept, so the sample spreads
    over the utterances instead of filling up with the first ones. Runs on the GPU when there is one (torch's
    thread setting otherwise).
    """
    import torch

    from speechprobe.encoders.interventions import layer_frames

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    encoder = encoder.to(device).eval()
    rng = np.random.default_rng([seed, 17])
    per_utterance = max(1, -(-sample // max(1, len(rows))))
    limit = getattr(encoder, "max_samples", None)  # Whisper: 30 s; longer utterances in equal windows, as extraction
    durations = corpus.durations()
    total, count = None, 0
    kept, kept_labels = [], []
    classes = sorted(np.unique(labels[rows]).tolist(), key=str)
    for value in classes:
        members = rows[labels[rows] == value]
        members = members[np.argsort(-durations[members], kind="stable")]
        for start in range(0, len(members), FRAME_BATCH):
            batch = members[start:start + FRAME_BATCH]
            waves = [piece for i in batch for piece in _pieces(corpus.load_audio(int(i), encoder.sample_rate), limit)]
            lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
            padded = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
            for r, wave in enumerate(waves):
                padded[r, :len(wave)] = torch.from_numpy(wave)
            frames = layer_frames(encoder, padded.to(device), lengths.to(device), layer).numpy().astype(np.float64)
            total = frames.sum(0) if total is None else total + frames.sum(0)
            count += len(frames)
            quota = min(len(frames), per_utterance * len(batch))
            pick = np.sort(rng.choice(len(frames), size=quota, replace=False))
            kept.append(frames[pick].astype(np.float32))
            kept_labels.append(np.full(quota, value))
    encoder.to("cpu")
    frames = np.concatenate(kept)
    frame_labels = np.concatenate(kept_labels)
    if len(frames) > sample:
        pick = np.sort(rng.choice(len(frames), size=sample, replace=False))
        frames, frame_labels = frames[pick], frame_labels[pick]
    tell(f"frame statistics at {layer}: {count} frames of {len(rows)} training utterances ({len(frames)} kept)")
    return {"mean": total / max(count, 1), "frames": frames, "labels": frame_labels, "n_frames": int(count)}


def _pieces(wave: Any, limit: Optional[int]) -> list[np.ndarray]:
    """An utterance, or its equal windows when it is longer than the encoder takes at once (every real frame
    counts once, as in extraction: ``encoders.windows``)."""
    from speechprobe.encoders.windows import window_bounds

    wave = np.asarray(wave, dtype=np.float32)
    if not limit or len(wave) <= limit:
        return [wave]
    return [wave[a:b] for a, b in window_bounds(len(wave), int(limit))]


def _check_tasks(store: Any, section: InterventionSection, config: Any) -> list[str]:
    """The attribute and the other tasks exist in the corpus (one line naming the missing one), before any work."""
    task_arrays(store, section.attribute, folds=config.probe.folds, seed=config.seed, control=False)
    others = [t for t in dict.fromkeys(section.tasks) if t != section.attribute]
    for task in others:
        task_arrays(store, task, folds=config.probe.folds, seed=config.seed, control=False)
    return others


def _interval(score: dict) -> dict:
    return {key: score["accuracy"][key] for key in ("value", "low", "high")}


def _best_layer_from_sweep(run: Run, section: InterventionSection) -> Optional[str]:
    """The sweep's best layer for the attribute when the run's sweep covers this encoder and attribute."""
    sweep = run.config.sweep
    if sweep is None or section.encoder not in sweep.encoders or section.attribute not in sweep.tasks:
        return None
    from speechprobe.experiments.studies.sweep.compute import sweep_unit

    return sweep_unit(run, section.encoder, section.attribute)[0]["best_layer"]


def fit_unit(run: Run, section: InterventionSection, base: str) -> tuple[dict, Path]:
    """The attribute's probes on the plain store (every layer, first fold), the layer L, its ranking and minimal
    subset, the frame means, the eraser and the resample bank, cached."""

    def compute():
        from speechprobe.encoders.registry import create_encoder
        from speechprobe.experiments.layout import probe_dir_names
        from speechprobe.probing.erasure import LeaceEraser
        from speechprobe.probing.options import TrainingOptions
        from speechprobe.probing.ranking import rank_neurons
        from speechprobe.probing.subset import minimal_subset
        from speechprobe.probing.sweep import probe_layers

        config = run.config
        store = run.store(section.encoder)
        arrays = task_arrays(store, section.attribute, folds=config.probe.folds, seed=config.seed, control=False)
        split, y = arrays.splits[0], arrays.labels
        names = list(store.layer_names)
        run.tell(f"intervention {section.encoder} / {section.attribute}: probing the plain store's {len(names)} layers")
        plain = probe_layers({name: store.layer(name) for name in names}, y, split, grid=grid(config),
                             groups=arrays.groups, options=training_options(config), n_resamples=config.probe.n_resamples,
                             seed=config.seed, memory=memory_budget(config))
        if section.layer == "best":
            from_sweep = _best_layer_from_sweep(run, section)
            layer, chosen_by = (from_sweep, "the sweep's best layer on validation (mean over folds)") if from_sweep \
                else (plain.best_layer, "best validation accuracy of the first fold's probes")
        else:
            if section.layer not in names:
                raise SpeechprobeError(f"intervention: {section.encoder} has no layer {section.layer!r}; its layers: "
                                       f"{', '.join(names)}")
            layer, chosen_by = section.layer, "named in the config"
        position = names.index(layer)
        probe = plain.probes[layer]
        X = np.asarray(store.layer(layer), dtype=np.float32)
        train, val = split.train, split.validation
        run.tell(f"intervention: ranking {X.shape[1]} neurons of {layer} ({config.probe.method}) and the minimal subset")
        ranking = rank_neurons(probe, config.probe.method, X=X[train], y=y[train])
        minimal = minimal_subset(X[train], y[train], X[val], y[val], ranking, target=config.probe.target,
                                 l1=probe.l1, l2=probe.l2, options=TrainingOptions.from_probe(probe))

        encoder = create_encoder(section.encoder)
        stats = frame_statistics(run.load_corpus(), encoder, layer, np.asarray(train), y, seed=config.seed,
                                 tell=run.tell)
        eraser = LeaceEraser().fit(stats["frames"], stats["labels"]) if section.erasure == "leace" else None
        shuffled = np.random.default_rng([config.seed, 3]).permutation(len(stats["frames"]))  # every class mixed
        bank = stats["frames"][np.sort(shuffled[:BANK_ROWS])] if "resample" in section.modes else None
        saved = {"ranking": np.asarray(ranking, dtype=np.int64), "mean": stats["mean"]}
        if eraser is not None:
            saved.update(eraser_mean=eraser.mean_, eraser_left=eraser.proj_left_, eraser_right=eraser.proj_right_)
        if bank is not None:
            saved["bank"] = bank
        after = names[position:]
        dirs = probe_dir_names(after)
        data = {
            "fit_id": uuid.uuid4().hex,
            "encoder": section.encoder, "attribute": section.attribute, "layer": layer, "layer_spec": section.layer,
            "layer_chosen_by": chosen_by, "layers": names, "position": position, "n_neurons": int(X.shape[1]),
            "method": config.probe.method, "split": arrays.sizes(), "split_policy": arrays.split_policy,
            "classes": sorted(np.unique(y).astype(str).tolist()),
            "plain": [score.as_dict() for score in plain.layers],
            "probe_dirs": dirs,
            "probe": {"l1": float(probe.l1), "l2": float(probe.l2)},
            "minimal_subset": {"k": int(minimal.k), "fraction": float(minimal.fraction),
                               "accuracy": float(minimal.accuracy), "full_accuracy": float(minimal.full_accuracy),
                               "threshold": float(minimal.threshold), "target": float(config.probe.target),
                               "reached": bool(minimal.reached), "neurons": [int(i) for i in minimal.neurons]},
            "frames": {"utterances": int(len(train)), "frames": stats["n_frames"], "kept": int(len(stats["frames"])),
                       "bank": None if bank is None else int(len(bank)),
                       "values": "each neuron's mean over every real frame of the training utterances"},
            "eraser": None if eraser is None else {
                "method": "LEACE", "fitted_on": f"{len(stats['frames'])} real frames of the training utterances, "
                                                "each labelled with its utterance's attribute",
                "rank": int(eraser.rank_)},
        }

        def extra(folder: Path) -> None:
            np.savez(folder / FIT_ARRAYS, **saved)
            for name in after:
                plain.probes[name].save(folder / "probes" / dirs[name])

        return data, extra

    return run.unit(f"{base}/fit", compute)


# --------------------------------------------------------------------------------------------------
# conditions


def resolve_ks(ks: tuple, minimal_k: int, d: int) -> list[dict]:
    """The config's ks as numbers (``minimal`` -> the minimal subset's k), at most d, without repeats."""
    out: dict[int, dict] = {}
    for k in ks:
        value = min(int(minimal_k if k == "minimal" else k), d)
        entry = out.setdefault(value, {"k": value, "minimal": False, "capped": False})
        entry["minimal"] |= k == "minimal"
        entry["capped"] |= k != "minimal" and int(k) > d
    return sorted(out.values(), key=lambda e: e["k"])


def random_neurons(d: int, k: int, seed: int, draw: int) -> list[int]:
    rng = np.random.default_rng([seed, k, draw, 1])
    return sorted(int(i) for i in rng.choice(d, size=k, replace=False))


def random_directions(d: int, r: int, seed: int, draw: int) -> np.ndarray:
    """(d, r) orthonormal random directions, seeded."""
    rng = np.random.default_rng([seed, r, draw, 2])
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return q


def plan_conditions(section: InterventionSection, fit: dict, arrays: dict, seed: int) -> list[dict]:
    """Every condition the section asks for: name, kind, k, mode, draw, neurons, and how to build it."""
    d = fit["n_neurons"]
    ranking = arrays["ranking"]
    conditions = [{"name": "none", "kind": "none", "k": 0, "mode": None, "draw": None, "neurons": []}]
    for mode in section.modes:
        for entry in resolve_ks(section.ks, fit["minimal_subset"]["k"], d):
            k = entry["k"]
            conditions.append({"name": f"top{k}-{mode}", "kind": "top", "k": k, "mode": mode, "draw": None,
                               "minimal": entry["minimal"], "neurons": [int(i) for i in ranking[:k]]})
            for draw in range(section.random_draws):
                conditions.append({"name": f"random{k}-{mode}-{draw}", "kind": "random", "k": k, "mode": mode,
                                   "draw": draw, "minimal": entry["minimal"],
                                   "neurons": random_neurons(d, k, seed, draw)})
    if fit.get("eraser") is not None:
        r = fit["eraser"]["rank"]
        conditions.append({"name": "leace", "kind": "leace", "k": r, "mode": "transform", "draw": None, "neurons": None})
        for draw in range(section.random_draws):
            conditions.append({"name": f"random-directions{r}-{draw}", "kind": "random_directions", "k": r,
                               "mode": "transform", "draw": draw, "neurons": None})
    return conditions


def build_intervention(condition: dict, layer: str, arrays: dict, seed: int) -> Any:
    """The ``encoders.interventions.Intervention`` of a condition (the fill values from the fit's arrays)."""
    from speechprobe.encoders.interventions import Intervention

    kind, mode, neurons = condition["kind"], condition["mode"], condition["neurons"]
    if kind == "none":
        return Intervention.mean(layer, (), ())
    if kind in ("top", "random"):
        if mode == "mean":
            return Intervention.mean(layer, neurons, arrays["mean"][neurons])
        if mode == "zero":
            return Intervention.zero(layer, neurons)
        if mode == "resample":
            return Intervention.resample(layer, neurons, arrays["bank"], seed=seed)
        raise SpeechprobeError(f"intervention: unknown mode {mode!r}")
    if kind == "leace":
        return Intervention.erase(layer, (arrays["eraser_mean"], arrays["eraser_left"], arrays["eraser_right"]))
    if kind == "random_directions":
        q = random_directions(len(arrays["mean"]), condition["k"], seed, condition["draw"])
        return Intervention.erase(layer, (arrays["eraser_mean"], q, q.T.copy()))
    raise SpeechprobeError(f"intervention: unknown condition kind {kind!r}")


def _expected_at_layer(condition: dict, intervention: Any, X: np.ndarray) -> Optional[np.ndarray]:
    """The stored vectors of L edited as the intervention edits frames (exact for mean pooling), or None where no
    stored-vector counterpart exists (resample: random frames, not a fixed value)."""
    mode = intervention.mode
    if mode in ("mean", "value", "zero"):
        out = X.astype(np.float64).copy()
        if intervention.neurons:
            out[:, list(intervention.neurons)] = 0.0 if mode == "zero" else np.asarray(intervention.values)
        return out
    if mode == "transform" and intervention.affine is not None:
        a = intervention.affine
        return X - ((X - a.mean) @ a.right.T) @ a.left.T
    return None


def _stored_accuracy(condition: dict, intervention: Any, probe: Any, X_test: np.ndarray, y_test: np.ndarray,
                     expected: Optional[np.ndarray]) -> tuple[Optional[float], str]:
    """The plain probe of L on the stored vectors edited the same way: ``ablate`` for neurons (its own fill: the
    probe's training mean of the pooled vectors for ``mean``; raw 0 for ``zero``), the eraser applied to the
    stored vectors for erasure."""
    from speechprobe.probing.ablation import ablate

    mode = intervention.mode
    if condition["kind"] == "none":
        return float(probe.score(X_test, y_test)), "the plain probe on the stored vectors"
    if mode in ("mean", "zero"):
        return float(ablate(probe, X_test, y_test, condition["neurons"], mode=mode)), f"ablate(mode={mode})"
    if mode == "resample":
        return float(ablate(probe, X_test, y_test, condition["neurons"], mode="mean")), \
            "ablate(mode=mean): resampling has no stored-vector counterpart; its nearest is the mean"
    if expected is not None:
        return float(probe.score(expected, y_test)), "the same affine map applied to the stored vectors"
    return None, "no stored-vector counterpart"


def _discard_stale(path: Path, fit_id: str, key: str, tell: Callable[[str], None]) -> None:
    """A cached condition unit computed from another fit or another intervention is removed (then recomputed; its
    store is content-addressed, so an unchanged intervention's store is reused)."""
    try:
        data = json.loads((path / UNIT_FILE).read_text())
    except (OSError, ValueError):
        return
    if data.get("fit_id") != fit_id or data.get("intervention_key") != key:
        tell(f"{path.name}: recomputing (the fit or the intervention changed)")
        shutil.rmtree(path, ignore_errors=True)


def store_name(condition: dict, key: str) -> str:
    return f"{condition['name']}-{key}"


def tidy(folder: Path, names: list[str], stores: list[str], tell: Callable[[str], None]) -> None:
    """Remove what no current condition reads: condition units of another plan (e.g. an old minimal k) and
    intervened stores of other interventions. Only folders this study writes are touched."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name in ("fit", STORES_DIR, *names) or entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / UNIT_FILE).is_file():
            tell(f"removing the unit {entry.name}: no longer a condition of this run")
            shutil.rmtree(entry, ignore_errors=True)
    for entry in (folder / STORES_DIR).iterdir() if (folder / STORES_DIR).is_dir() else ():
        if entry.name not in stores and entry.is_dir() and not entry.name.startswith("."):
            tell(f"removing the intervened store {entry.name}: no current condition reads it")
            shutil.rmtree(entry, ignore_errors=True)


def condition_unit(run: Run, section: InterventionSection, base: str, fit: dict, fit_folder: Path, arrays: dict,
                   condition: dict, others: list[str], model_of: Callable[[], Any]) -> dict:
    """One condition: extract the intervened store (content-addressed beside the units) and measure (a)-(d) on it."""
    config = run.config
    layer = fit["layer"]
    intervention = build_intervention(condition, layer, arrays, config.seed)
    key = intervention.key()
    name = f"{base}/{condition['name']}"
    folder = run.out / UNITS_DIR / base
    where = folder / STORES_DIR / store_name(condition, key)
    _discard_stale(run.out / UNITS_DIR / name, fit["fit_id"], key, run.tell)

    def compute():
        from speechprobe.encoders.extraction import extract
        from speechprobe.encoders.store import RepresentationStore
        from speechprobe.io import naming
        from speechprobe.probing.probe import ElasticNetProbe
        from speechprobe.probing.sweep import probe_layers

        store = run.store(section.encoder)
        corpus = run.load_corpus()
        run.tell(f"intervention {condition['name']}: {section.encoder} with {intervention.summary()}")
        started = time.perf_counter()
        with naming(where):
            reused = extract(corpus, model_of(), where, intervention=intervention, progress=False).reused
        run.tell(f"intervention {condition['name']}: " + ("reused its intervened store" if reused else
                 f"extracted the intervened store in {time.perf_counter() - started:.0f} s"))
        istore = RepresentationStore(where)
        names, position = fit["layers"], fit["position"]
        plain_layers = {n: np.asarray(store.layer(n), dtype=np.float32) for n in names}
        new_layers = {n: np.asarray(istore.layer(n), dtype=np.float32) for n in names}
        differences = {n: float(np.max(np.abs(plain_layers[n] - new_layers[n]))) for n in names}

        arrays_a = task_arrays(store, section.attribute, folds=config.probe.folds, seed=config.seed, control=False)
        split, y = arrays_a.splits[0], arrays_a.labels
        test = np.asarray(split.test)
        after = names[position:]
        common = dict(grid=grid(config), options=training_options(config), n_resamples=config.probe.n_resamples,
                      seed=config.seed, memory=memory_budget(config))
        run.tell(f"intervention {condition['name']}: probing {section.attribute} on {', '.join(after)}")
        sweep = probe_layers({n: new_layers[n] for n in after}, y, split, groups=arrays_a.groups, **common)
        probes = {n: ElasticNetProbe.load(fit_folder / "probes" / fit["probe_dirs"][n]) for n in after}
        attribute = []
        for score in sweep.layers:
            n = score.layer
            attribute.append({"layer": n, "accuracy": _interval(score.as_dict()),
                              "validation_accuracy": float(score.validation_accuracy),
                              "majority_accuracy": float(score.majority_accuracy),
                              "fixed_probe_accuracy": float(probes[n].score(new_layers[n][test], y[test]))})

        probe = probes[layer]
        X_test = plain_layers[layer][test]
        expected = _expected_at_layer(condition, intervention, plain_layers[layer])
        stored, stored_how = _stored_accuracy(condition, intervention, probe, X_test, y[test],
                                              None if expected is None else expected[test])
        in_forward = float(probe.score(new_layers[layer][test], y[test]))
        agreement = {"layer": layer, "in_forward_accuracy": in_forward, "stored_accuracy": stored,
                     "stored_how": stored_how,
                     "difference": None if stored is None else in_forward - stored,
                     "vector_max_abs_difference": None if expected is None else
                     float(np.max(np.abs(expected - new_layers[layer])))}

        last = names[-1]
        tasks = {}
        for task in others:
            run.tell(f"intervention {condition['name']}: probing {task} on {last}")
            t_arrays = task_arrays(store, task, folds=config.probe.folds, seed=config.seed, control=False)
            result = probe_layers({last: new_layers[last]}, t_arrays.labels, t_arrays.splits[0],
                                  groups=t_arrays.groups, **common)
            score = result.layers[0]
            tasks[task] = {"layer": last, "accuracy": _interval(score.as_dict()),
                           "majority_accuracy": float(score.majority_accuracy), "split_policy": t_arrays.split_policy}

        kind = job_kind(section.job, section.encoder)
        index = store.index
        if kind == "verification":
            speakers = index["speaker"].astype(str).to_numpy() if "speaker" in index.columns else None
            if speakers is None:
                job = no_job("verification", "no speaker column: speaker verification needs one")
            else:
                groups = index[GROUP_COLUMN].astype(str).to_numpy() if GROUP_COLUMN in index.columns else None
                job = verification_job(new_layers[last], speakers, test, layer=last, n_pairs=section.trials,
                                       seed=config.seed, groups=groups,
                                       group_column=GROUP_COLUMN if groups is not None else None)
                job["speaker_disjoint"] = arrays_a.split_policy == "speaker_disjoint"
        elif kind == "transcription":
            run.tell(f"intervention {condition['name']}: transcribing the clean-channel test utterances")
            groups = index[GROUP_COLUMN].astype(str).to_numpy() if GROUP_COLUMN in index.columns else None
            job = transcription_job(corpus, model_of(), test, intervention, groups=groups,
                                    group_column=GROUP_COLUMN if groups is not None else None)
        else:
            job = no_job()

        data = {**{k: v for k, v in condition.items()}, "layer": layer, "fit_id": fit["fit_id"],
                "intervention_key": key, "intervention": intervention.summary(),
                "store": str(Path(UNITS_DIR) / base / STORES_DIR / where.name), "store_reused": bool(reused),
                "max_abs_difference": differences,
                "earlier_layers_max_abs_difference": max((differences[n] for n in names[:position]), default=None),
                "attribute": attribute, "at_layer": agreement, "tasks": tasks, "job": job}

        return data, None

    data, _ = run.unit(name, compute)
    return data


# --------------------------------------------------------------------------------------------------
# the study


def _mean_std(values: list) -> tuple[Optional[float], Optional[float]]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0


def _last(condition: dict) -> dict:
    return condition["attribute"][-1]


def _job_value(condition: dict) -> Optional[float]:
    job = condition.get("job") or {}
    return job.get("value") if job.get("available") else None


def _cost(condition: dict, none: dict) -> Optional[float]:
    """The own job's increase (EER or WER) over the no-intervention condition."""
    a, b = _job_value(condition), _job_value(none)
    return None if a is None or b is None else a - b


def _task_changes(condition: dict, none: dict) -> dict:
    return {task: condition["tasks"][task]["accuracy"]["value"] - none["tasks"][task]["accuracy"]["value"]
            for task in condition["tasks"] if task in none["tasks"]}


def _at_chance(interval: dict, majority: float) -> bool:
    """The attribute is gone when its accuracy's interval reaches down to the majority class's accuracy."""
    return interval["low"] <= majority


def _recovery(condition: dict, none: dict) -> list[dict]:
    """Per layer from L on: the share of the no-intervention accuracy above the majority class that is left
    (1: untouched, 0: down to the majority), and whether the attribute is at chance there."""
    rows = []
    for mine, plain in zip(condition["attribute"], none["attribute"]):
        above = plain["accuracy"]["value"] - plain["majority_accuracy"]
        share = None if above <= 0 else (mine["accuracy"]["value"] - mine["majority_accuracy"]) / above
        rows.append({"layer": mine["layer"], "kept": share,
                     "at_chance": _at_chance(mine["accuracy"], mine["majority_accuracy"])})
    return rows


def versus_null(target: Optional[float], mean: Optional[float], std: Optional[float], n: int, null: str) -> str:
    """Whether a removal's accuracy is below its null's (a larger drop), in words: beyond N_SD standard deviations
    of the null draws when there are at least two with some spread, else only which side, saying why."""
    if target is None or mean is None:
        return f"not comparable with {null}"
    if n >= 2 and std:
        margin = N_SD * std
        if target < mean - margin:
            return f"a larger drop than {null} (more than {N_SD:g} SD below their mean)"
        if target > mean + margin:
            return f"a smaller drop than {null} (more than {N_SD:g} SD above their mean)"
        return f"no different from {null} (within {N_SD:g} SD)"
    side = "below" if target < mean else "above" if target > mean else "equal to"
    why = "one draw" if n == 1 else f"{n} draws without spread"
    return f"{side} {null} ({why}: too few to call it a difference)"


def compare(conditions: list[dict], none: dict) -> list[dict]:
    """Each removal against its null: top-k vs random-k per (mode, k), LEACE vs random directions."""
    groups: dict[tuple, dict] = {}
    for c in conditions:
        if c["kind"] in ("top", "random"):
            key, what, mode = ("neurons", c["mode"], c["k"]), "neurons", c["mode"]
        elif c["kind"] in ("leace", "random_directions"):
            key, what, mode = ("erasure",), "erasure", "leace"
        else:
            continue
        g = groups.setdefault(key, {"what": what, "mode": mode, "k": c["k"], "minimal": bool(c.get("minimal")),
                                    "target": None, "null": []})
        if c["kind"] in ("top", "leace"):
            g["target"] = c
        else:
            g["null"].append(c)
    out = []
    for g in groups.values():
        target, null = g["target"], g["null"]
        if target is None:
            continue
        null_name = "random neurons" if g["what"] == "neurons" else "random directions"

        def side(read: Callable[[dict], Optional[float]]) -> dict:
            values = [read(c) for c in null]
            mean, std = _mean_std(values)
            return {"target": read(target), "null_mean": mean, "null_std": std, "null": values}

        def verdict(part: dict) -> str:
            return versus_null(part["target"], part["null_mean"], part["null_std"], len(null), null_name)

        at_layer = side(lambda c: c["at_layer"]["in_forward_accuracy"])
        last = side(lambda c: _last(c)["accuracy"]["value"])
        later = side(lambda c: max(row["accuracy"]["value"] for row in c["attribute"][1:])
                     if len(c["attribute"]) > 1 else None)
        retrained_at_layer = side(lambda c: c["attribute"][0]["accuracy"]["value"])
        cost = side(lambda c: _cost(c, none))
        tasks = {task: side(lambda c, task=task: _task_changes(c, none).get(task)) for task in target["tasks"]}
        by_group = {}
        for group in ((target.get("job") or {}).get("by_group") or {}):
            def read(c: dict, group: str = group) -> Optional[float]:
                mine = ((c.get("job") or {}).get("by_group") or {}).get(group) or {}
                base = ((none.get("job") or {}).get("by_group") or {}).get(group) or {}
                key = (c.get("job") or {}).get("metric") or "eer"
                return None if mine.get(key) is None or base.get(key) is None else mine[key] - base[key]
            by_group[group] = side(read)
        last_row = _last(target)
        out.append({
            "what": g["what"], "mode": g["mode"], "k": g["k"], "minimal": g["minimal"],
            "target": target["name"], "null": [c["name"] for c in null], "null_kind": null_name,
            "at_layer": {**at_layer, "verdict": verdict(at_layer),
                         "at_least_null": at_layer["null_mean"] is None or at_layer["target"] <= at_layer["null_mean"]},
            "retrained_at_layer": {**retrained_at_layer, "verdict": verdict(retrained_at_layer)},
            "last_layer": {**last, "verdict": verdict(last), "majority": last_row["majority_accuracy"],
                           "at_chance": _at_chance(last_row["accuracy"], last_row["majority_accuracy"]),
                           "none_at_chance": _at_chance(_last(none)["accuracy"], _last(none)["majority_accuracy"])},
            "best_later_layer": later,
            "recovery": _recovery(target, none),
            "cost": cost, "cost_by_group": by_group, "tasks": tasks,
        })
    return out


def tradeoff(conditions: list[dict], none: dict, comparisons: list[dict]) -> dict:
    """The trade-off plot's points: x the attribute's accuracy at the last layer, y the own job's increase (EER
    or WER) over no intervention, or, where the encoder has no own-job metric, the mean accuracy drop of the
    other tasks."""
    job = none.get("job") or {}
    use_job = job.get("available") and _job_value(none) is not None

    def y_of(c: dict) -> Optional[float]:
        if use_job:
            return _cost(c, none)
        changes = list(_task_changes(c, none).values())
        return -float(np.mean(changes)) if changes else None

    by_name = {c["name"]: c for c in conditions}
    points = [{"label": "no intervention", "kind": "none", "k": 0, "mode": None,
               "x": _last(none)["accuracy"]["value"], "y": 0.0 if y_of(none) is not None else None,
               "x_std": None, "y_std": None}]
    for comp in comparisons:
        target = by_name[comp["target"]]
        label = ("LEACE" if comp["what"] == "erasure" else
                 f"top {comp['k']}{' (minimal)' if comp['minimal'] else ''}, {comp['mode']}")
        points.append({"label": label, "kind": "leace" if comp["what"] == "erasure" else "top", "k": comp["k"],
                       "mode": comp["mode"], "x": _last(target)["accuracy"]["value"], "y": y_of(target),
                       "x_std": None, "y_std": None})
        xs = [_last(by_name[n])["accuracy"]["value"] for n in comp["null"]]
        ys = [y_of(by_name[n]) for n in comp["null"]]
        x_mean, x_std = _mean_std(xs)
        y_mean, y_std = _mean_std(ys)
        if x_mean is not None:
            points.append({"label": ("random directions" if comp["what"] == "erasure" else
                                     f"random {comp['k']}, {comp['mode']}") + f" ({len(xs)} draws)",
                           "kind": "random_directions" if comp["what"] == "erasure" else "random", "k": comp["k"],
                           "mode": comp["mode"], "x": x_mean, "y": y_mean, "x_std": x_std, "y_std": y_std})
    metric = job.get("metric") if use_job else None
    y_label = {"eer": "EER increase (speaker verification)", "wer": "WER increase (transcription)"}.get(
        metric, "mean accuracy drop of the other tasks")
    return {"x_label": f"attribute accuracy at {_last(none)['layer']} (retrained)", "y_label": y_label,
            "y_metric": metric or "tasks", "majority": _last(none)["majority_accuracy"], "points": points}


def run_intervention(run: Run, section: InterventionSection) -> dict:
    config = run.config
    store = run.store(section.encoder)
    others = _check_tasks(store, section, config)
    kind = job_kind(section.job, section.encoder)
    if kind == "transcription" and job_kind("auto", section.encoder) != "transcription":
        raise SpeechprobeError(f"intervention: job transcription needs a Whisper encoder, not {section.encoder}")
    base = intervention_base(section)
    fit, fit_folder = fit_unit(run, section, base)
    with np.load(fit_folder / FIT_ARRAYS) as saved:
        arrays = {name: saved[name] for name in saved.files}
    conditions = plan_conditions(section, fit, arrays, config.seed)
    model: list = []

    def model_of():
        if not model:
            from speechprobe.encoders.registry import create_encoder

            model.append(create_encoder(section.encoder))
        return model[0]

    run.tell(f"intervention {section.encoder} / {section.attribute} at {fit['layer']}: {len(conditions)} conditions")
    results = [condition_unit(run, section, base, fit, fit_folder, arrays, c, others, model_of) for c in conditions]
    tidy(run.out / UNITS_DIR / base, [c["name"] for c in conditions], [Path(c["store"]).name for c in results], run.tell)
    none = results[0]
    comparisons = compare(results, none)
    return {
        "encoder": section.encoder, "attribute": section.attribute, "layer": fit["layer"],
        "layer_spec": section.layer, "layer_chosen_by": fit["layer_chosen_by"], "layers": fit["layers"][fit["position"]:],
        "all_layers": fit["layers"], "last_layer": fit["layers"][-1], "n_neurons": fit["n_neurons"],
        "method": fit["method"], "split": fit["split"], "split_policy": fit["split_policy"],
        "classes": fit["classes"], "tasks": others, "job": kind, "modes": list(section.modes),
        "random_draws": section.random_draws, "ks": list(section.ks),
        "minimal_subset": fit["minimal_subset"], "frames": fit["frames"], "eraser": fit["eraser"],
        "plain": [row for row in fit["plain"] if row["layer"] in fit["layers"][fit["position"]:]],
        "conditions": results, "comparisons": comparisons, "tradeoff": tradeoff(results, none, comparisons),
        "control": {"none_max_abs_difference": max(none["max_abs_difference"].values()),
                    "earlier_layers_max_abs_difference": max(
                        (c["earlier_layers_max_abs_difference"] or 0.0 for c in results), default=0.0)},
    }
