"""One experiment run: its folder, corpus, stores and cached units, shared by the three studies.

A run folder holds ``run.yaml`` (the config it was started with, written first), ``units/`` (one folder
per finished piece of work: a sweep of one encoder on one task, an audit, an ablation; each written
whole, via a temporary folder and a rename), then ``results.json``, ``figures/`` and the report. A rerun
of the same config reuses every finished unit, so an interrupted run resumes where it stopped and a
finished one is re-reported in seconds; a folder holding another config's run is refused.

Stores are reused across runs: ``<stores>/<encoder>`` is extracted once (resumable, see
:func:`encoders.extraction.extract`) and every study reads it.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from experiments.cli import CommandError, write_atomically, write_directory
from experiments.config import RunConfig, parse_config

RUN_FILE, UNIT_FILE = "run.yaml", "unit.json"
UNITS_DIR = "units"


def store_dir_name(encoder: str) -> str:
    """`random:ge2e@1` -> `random-ge2e@1`; `hf:facebook/wav2vec2-base` -> `hf-facebook--wav2vec2-base`."""
    return re.sub(r"[^A-Za-z0-9._@-]", "-", encoder.replace("/", "--").replace(":", "-", 1))


def unit_dir_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]", "-", name.replace("/", "--"))


def to_json(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays, tuples, paths; NaN and Inf become null."""
    from experiments.probe_commands import to_json as convert

    return convert(value)


def write_json(path: Path, payload: Any) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(to_json(payload), indent=1, allow_nan=False) + "\n"))


def _first_difference(a: Any, b: Any, where: str = "") -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    return None if a == b else (where or "(top level)")


# Keys that change how a run is shown or logged, not its numbers: a rerun may change them freely.
_PRESENTATION_KEYS = ("logger", "out")


@dataclass
class Run:
    """The state shared by a run's studies (see the module docstring)."""

    config: RunConfig
    out: Path
    tell: Callable[[str], None]
    corpus: Any = None
    stores: dict[str, Any] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)  # units computed (not reused) by this invocation

    # ---------------------------------------------------------------------------------------------
    # folder

    @classmethod
    def open(cls, config: RunConfig, *, quiet: bool = False, corpus: Any = None) -> "Run":
        """Claim the run folder: new, empty, or holding this same config (then resumed)."""
        out = config.out_dir
        run_file = out / RUN_FILE
        plain = config.as_plain()
        if run_file.is_file():
            try:
                previous = yaml.safe_load(run_file.read_text())
            except (OSError, yaml.YAMLError):
                previous = None
            if not isinstance(previous, dict):
                raise CommandError(f"{run_file} is not a run config; choose another out or remove {out}")
            try:  # read with today's defaults, so a key added since the folder was written is no difference
                previous = parse_config(previous, str(run_file)).as_plain()
            except CommandError:
                pass  # an older schema: compared as written
            key = _first_difference({k: v for k, v in previous.items() if k not in _PRESENTATION_KEYS},
                                    {k: v for k, v in plain.items() if k not in _PRESENTATION_KEYS})
            if key is not None:
                raise CommandError(f"{out} holds a different run (its config differs at {key}); "
                                   "choose another out or remove that folder")
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise CommandError(f"{out} exists and is not a speechprobe run folder; choose another out")
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(run_file, lambda tmp: tmp.write_text(yaml.safe_dump(plain, sort_keys=False)))

        return cls(config=config, out=out, tell=reporter(quiet), corpus=corpus)

    # ---------------------------------------------------------------------------------------------
    # data

    def load_corpus(self) -> Any:
        if self.corpus is None:
            self.corpus = prepare_corpus(self.config, self.tell)
        return self.corpus

    def store(self, encoder: str) -> Any:
        """The representation store of ``encoder`` over the corpus: reused, resumed or extracted."""
        if encoder not in self.stores:
            self.stores[encoder] = encoder_store(self.load_corpus(), encoder, self.config.stores, self.tell)
        return self.stores[encoder]

    # ---------------------------------------------------------------------------------------------
    # units

    def unit(self, name: str, compute: Callable[[], tuple[dict, Optional[Callable[[Path], None]]]]) -> tuple[dict, Path]:
        """A finished unit's data and folder: read back if this run finished it before, else computed.

        ``compute`` returns the unit's JSON data and, optionally, a function that writes its other files
        (probes, predictions) into the folder it is given.
        """
        path = self.out / UNITS_DIR / name
        cached = path / UNIT_FILE
        if cached.is_file():
            try:
                return json.loads(cached.read_text()), path
            except (OSError, ValueError):
                shutil.rmtree(path, ignore_errors=True)  # unreadable: redo it
        started = time.perf_counter()
        data, extra = compute()

        def fill(tmp: Path) -> None:
            if extra is not None:
                extra(tmp)
            (tmp / UNIT_FILE).write_text(json.dumps(to_json(data), indent=1, allow_nan=False) + "\n")

        write_directory(path, fill)
        self.computed.append(name)
        self.tell(f"{name}: done in {time.perf_counter() - started:.1f} s")
        return json.loads(cached.read_text()), path


def encoder_store(corpus: Any, encoder: str, stores: str | Path, tell: Callable[[str], None], *,
                  progress: bool = True) -> Any:
    """The store of ``encoder`` over ``corpus`` in ``stores``/<encoder>: reused, resumed or extracted."""
    from encoders.extraction import extract
    from encoders.registry import create_encoder
    from encoders.store import RepresentationStore

    path = Path(stores) / store_dir_name(encoder)
    if not (path / "manifest.json").is_file():
        tell(f"extracting {encoder} over {len(corpus)} utterances into {path}")
    started = time.perf_counter()
    result = extract(corpus, create_encoder(encoder), path, progress=progress)
    if not result.reused:
        tell(f"extracted {encoder} in {time.perf_counter() - started:.0f} s")
    return RepresentationStore(path)


def reporter(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr (stdout keeps the results)."""
    def tell(message: str) -> None:
        if not quiet:
            print(f"speechprobe: {message}", file=sys.stderr, flush=True)
    return tell


def prepare_corpus(config: RunConfig, tell: Callable[[str], None]) -> Any:
    """The config's corpus, built first when a synthetic preset is named and the folder is missing."""
    from tasks.corpus import load_corpus

    path = Path(config.corpus)
    if config.corpus_preset and not path.exists():
        from tasks.synthetic import build_corpus, config_from_args

        tell(f"building the {config.corpus_preset} synthetic corpus in {path}")
        build_corpus(path, config_from_args(config.corpus_preset), progress=True)
    return load_corpus(str(path), columns=config.columns or None, split=config.corpus_split)


def check_names(config: RunConfig, corpus: Any) -> None:
    """Every encoder and task the config names, checked before any work or any file is written."""
    from encoders.registry import check_name
    from tasks.tasks import get_task, task_labels

    for name in config.encoders():
        check_name(name)
    if config.sweep and isinstance(config.sweep.baselines, dict):
        for encoder, baseline in config.sweep.baselines.items():
            if encoder not in config.sweep.encoders:
                raise CommandError(f"sweep.baselines: {encoder!r} is not one of sweep.encoders "
                                   f"({', '.join(config.sweep.encoders)})")
            check_name(baseline)
    tasks = [*(config.sweep.tasks if config.sweep else ()),
             *([config.audit.attribute, *config.audit.tasks] if config.audit else []),
             *([config.ablation.task] if config.ablation else [])]
    from tasks.splits import control_split, cross_validation_splits

    for task in dict.fromkeys(tasks):  # the labels and splits each task needs, so no run stops half-way for them
        task_labels(corpus.metadata, get_task(task, corpus.metadata))
        cross_validation_splits(corpus.metadata, task, folds=config.probe.folds, seed=config.seed)
    if config.probe.control and config.sweep:
        control_split(corpus.metadata, seed=config.seed, folds=config.probe.folds)


@dataclass
class TaskArrays:
    """A task over a store: labels, the cross-validation splits, speakers, and the control task."""

    name: str
    split_policy: str
    labels: np.ndarray
    splits: list
    groups: Optional[np.ndarray]
    control_labels: Optional[np.ndarray]
    control_split: Any


def task_arrays(store: Any, task_name: str, *, folds: int, seed: int, control: bool) -> TaskArrays:
    """Labels, the splits to score on, speakers and the control task.

    Speaker-disjoint tasks get all `folds` cross-validation splits (their test parts partition the
    utterances, so every speaker is tested once); a within-speaker task (speaker identity) gets the first
    only: its test part already holds every speaker, and more folds would multiply the run's most
    expensive probes (one output per speaker) for no new speaker.
    """
    from tasks.splits import control_labels, control_split, cross_validation_splits
    from tasks.tasks import get_task, task_labels

    index = store.index
    task = get_task(task_name, index)
    labels = task_labels(index, task)
    splits = cross_validation_splits(index, task, folds=folds, seed=seed)
    if task.split_policy != "speaker_disjoint":
        splits = splits[:1]
    groups = index["speaker"].astype(str).to_numpy() if "speaker" in index.columns else None
    c_labels = c_split = None
    if control:
        c_labels = control_labels(index, task, seed=seed)
        c_split = control_split(index, seed=seed, folds=folds)
    return TaskArrays(task.name, task.split_policy, labels, splits, groups, c_labels, c_split)


def probe_params(config: RunConfig) -> dict[str, Any]:
    return {"max_epochs": config.probe.max_epochs}


def grid(config: RunConfig) -> list[tuple[float, float]]:
    from probing.sweep import DEFAULT_GRID

    return list(DEFAULT_GRID if config.probe.grid is None else config.probe.grid)
