"""GradNAP units of a run: per model encoder x task, the groups' profiles per layer, reusing the sweep's probes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speechprobe.experiments.config import SweepSection
from speechprobe.experiments.runner import Run, task_arrays, training_options, unit_dir_name
from speechprobe.experiments.studies.sweep.compute import sweep_unit

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
        # the other folds' probes are seeded with the run's seed (what the cached units were computed with)
        options = training_options(config).replace(seed=config.seed)
        result, profiles = gradnap_layers(layers, arrays.labels, arrays.labels, splits, blocks=blocks, settings=settings,
                                          options=options, seed=config.seed, probes=probes, tell=run.tell)
        data = {"encoder": encoder, "task": arrays.name, "groups_column": column, "n_utterances": int(len(arrays.labels)),
                "folds": len(splits), **result}

        def extra(folder: Path) -> None:
            np.savez_compressed(folder / PROFILES, **{f"layer{i}": profiles[n] for i, n in enumerate(layers)},
                                layers=np.array(list(layers)))

        return data, extra

    return run.unit(f"gradnap/{unit_dir_name(encoder)}/{unit_dir_name(task)}", compute)


def run_gradnap(run: Run, section: SweepSection, results: dict) -> list[dict]:
    """GradNAPs for every model encoder x task of the sweep (after it: the units reuse its probes)."""
    return [gradnap_unit(run, encoder, task)[0] for encoder in section.encoders for task in section.tasks]
