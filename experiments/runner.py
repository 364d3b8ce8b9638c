"""One experiment run: its folder, corpus, stores and cached units, shared by the three studies.

A run folder holds ``run.yaml`` (the config it was started with, written first), ``units/`` (one folder
per finished piece of work: a sweep of one encoder on one task, an audit, an ablation; each written
whole, via a temporary folder and a rename), then ``results.json``, ``figures/`` and the report. A rerun
of the same config reuses every finished unit whose inputs are unchanged, so an interrupted run resumes
where it stopped and a finished one is re-reported in seconds; a folder holding another config's run is
refused.

A unit is keyed by what it was computed from, recorded beside it in ``inputs.json``: the content key of
every store it read (the store manifest's ``key``: encoder weights, corpus fingerprint, pooling, layers),
the corpus fingerprint, the config sections it reads (seed, probe settings, its study's section) and
:data:`UNIT_FORMAT`. A rerun brings every store a unit read up to date first (a store whose corpus or
weights changed is extracted again), compares, and recomputes exactly the units whose inputs changed,
saying which and why on stderr. The check reads store manifests and the corpus fingerprint (whose file
digests are remembered), never the arrays, so an unchanged rerun stays cheap.

Stores are reused across runs: ``<stores>/<encoder>`` is extracted once (resumable, see
:func:`encoders.extraction.extract`) and every study reads it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional

import numpy as np
import yaml

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.config import parse_config, RunConfig, SweepSection
from speechprobe.io import check_writable, dumps_json, naming, write_atomically, write_directory
from speechprobe.tasks.errors import CorpusError

if TYPE_CHECKING:
    from speechprobe.probing.options import TrainingOptions

RUN_FILE, UNIT_FILE, INPUTS_FILE = "run.yaml", "unit.json", "inputs.json"
UNITS_DIR = "units"

# The result format of units: bump it when what a unit holds, or how it is computed, changes, and every
# unit written before is recomputed (it records the format it was written in).
UNIT_FORMAT = 2
# A study's own revision, bumped when only its units change: those units alone are recomputed (absent: 0).
# compare 1: fixed parameters (Whisper's sinusoidal positions) are no longer counted in a layer's change.
STUDY_REVISIONS = {"compare": 1}

# The config sections a unit reads besides seed and probe settings, by the first part of its name. An
# audit or an ablation reads sweep units too, so the sweep section is among its inputs.
_UNIT_SECTIONS = {"sweep": ("sweep",), "gradnap": ("sweep",), "attribution": ("sweep",), "similarity": ("sweep",),
                  "audit": ("audit", "sweep"), "ablation": ("ablation", "sweep"),
                  "intervention": ("intervention", "sweep"), "compare": ("compare",)}
_UNIT_SECTIONS["topomap"] = ("topomap", "sweep")  # its maps read the sweep's probes


def store_dir_name(encoder: str) -> str:
    """`random:ge2e@1` -> `random-ge2e@1`; `hf:facebook/wav2vec2-base` -> `hf-facebook--wav2vec2-base`."""
    return re.sub(r"[^A-Za-z0-9._@-]", "-", encoder.replace("/", "--").replace(":", "-", 1))


def unit_dir_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]", "-", name.replace("/", "--"))


def intervention_base(section: Any) -> str:
    """The units folder of one intervention section (a config section or its plain values):
    ``intervention/<encoder>/<attribute>/<layer>``."""
    get = section.get if isinstance(section, Mapping) else lambda key: getattr(section, key)
    return "/".join(["intervention", *(unit_dir_name(str(get(key))) for key in ("encoder", "attribute", "layer"))])


def _first_difference(a: Any, b: Any, where: str = "") -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    return None if a == b else (where or "(top level)")


# Keys that change how a run is shown, logged or computed, not its numbers (where and within how much memory
# probes train changes them by float rounding at most): a rerun may change them freely.
_PRESENTATION_KEYS = ("logger", "out", "compute")


@dataclass
class Run:
    """The state shared by a run's studies (see the module docstring)."""

    config: RunConfig
    out: Path
    tell: Callable[[str], None]
    corpus: Any = None
    stores: dict[str, Any] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)  # units computed (not reused) by this invocation
    _fingerprint: Optional[str] = field(default=None, repr=False)
    _reading: list[set] = field(default_factory=list, repr=False)  # per unit being computed: the stores it read

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
                raise SpeechprobeError(f"{run_file} is not a run config; choose another out or remove {out}")
            try:  # read with today's defaults, so a key added since the folder was written is no difference
                previous = parse_config(previous, str(run_file)).as_plain()
            except SpeechprobeError:
                pass  # an older schema: compared as written
            key = _first_difference({k: v for k, v in previous.items() if k not in _PRESENTATION_KEYS},
                                    {k: v for k, v in plain.items() if k not in _PRESENTATION_KEYS})
            if key is not None:
                raise SpeechprobeError(f"{out} holds a different run (its config differs at {key}); "
                                   "choose another out or remove that folder")
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SpeechprobeError(f"{out} exists and is not a speechprobe run folder; choose another out")
        check_writable(out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomically(run_file, lambda tmp: tmp.write_text(yaml.safe_dump(plain, sort_keys=False)))

        return cls(config=config, out=out, tell=reporter(quiet), corpus=corpus)

    # ---------------------------------------------------------------------------------------------
    # data

    def load_corpus(self) -> Any:
        if self.corpus is None:
            self.corpus = prepare_corpus(self.config, self.tell)
        return self.corpus

    def corpus_fingerprint(self) -> str:
        """The corpus's content fingerprint, computed once per invocation."""
        if self._fingerprint is None:
            self._fingerprint = self.load_corpus().fingerprint()
        return self._fingerprint

    def store(self, encoder: str) -> Any:
        """The representation store of ``encoder`` over the corpus: reused, resumed or extracted."""
        if encoder not in self.stores:
            self.stores[encoder] = encoder_store(self.load_corpus(), encoder, self.config.stores, self.tell,
                                                 fingerprint=self.corpus_fingerprint())
        for reading in self._reading:  # every unit being computed (an audit and the sweep unit it reads)
            reading.add(encoder)
        return self.stores[encoder]

    # ---------------------------------------------------------------------------------------------
    # units

    def unit(self, name: str, compute: Callable[[], tuple[dict, Optional[Callable[[Path], None]]]]) -> tuple[dict, Path]:
        """A finished unit's data and folder: read back if this run finished it before from the same inputs,
        else computed (a stale one is replaced, saying why).

        ``compute`` returns the unit's JSON data and, optionally, a function that writes its other files
        (probes, predictions) into the folder it is given. The stores it opens through :meth:`store`
        (directly or through the units it reads) are recorded as its inputs.
        """
        path = self.out / UNITS_DIR / name
        if path.exists() or path.is_symlink():
            data, reason = self._cached(name, path)
            if reason is None:
                return data, path
            self.tell(f"{UNITS_DIR}/{name}: recomputing ({reason})")
            _discard(path)
        started = time.perf_counter()
        self._reading.append(set())
        try:
            data, extra = compute()
        finally:
            read = self._reading.pop()
        inputs = self.unit_inputs(name, read)

        def fill(tmp: Path) -> None:
            if extra is not None:
                extra(tmp)
            (tmp / UNIT_FILE).write_text(dumps_json(data))
            (tmp / INPUTS_FILE).write_text(json.dumps(inputs, indent=1) + "\n")

        write_directory(path, fill)
        self.computed.append(name)
        self.tell(f"{name}: done in {time.perf_counter() - started:.1f} s")
        return json.loads((path / UNIT_FILE).read_text()), path

    def unit_inputs(self, name: str, stores: Iterable[str]) -> dict[str, Any]:
        """What unit ``name`` is computed from, now: format, corpus, the keys of ``stores``, config sections.

        Opening a store brings it up to date first (extracting it again if its corpus changed)."""
        plain = json.loads(json.dumps(self.config.as_plain()))
        sections = ("seed", "probe", *_UNIT_SECTIONS.get(name.split("/", 1)[0], ("sweep", "audit", "ablation")))
        config = {key: plain.get(key) for key in sections}
        if isinstance(config.get("intervention"), list):  # only the section this unit belongs to
            config["intervention"] = next((entry for entry in config["intervention"]
                                           if name.startswith(intervention_base(entry) + "/")), None)
        inputs = {"format": UNIT_FORMAT,
                  "corpus": self.corpus_fingerprint(),
                  "stores": {encoder: self.store(encoder).manifest.get("key") for encoder in sorted(set(stores))},
                  "config": config}
        revision = STUDY_REVISIONS.get(name.split("/", 1)[0], 0)
        if revision:  # recorded only where there is one: units of other studies keep their inputs
            inputs["revision"] = revision
        return inputs

    def _cached(self, name: str, path: Path) -> tuple[Optional[dict], Optional[str]]:
        """The cached unit's data, and None, or why it must be recomputed."""
        try:
            data = json.loads((path / UNIT_FILE).read_text())
        except (OSError, ValueError):
            return None, f"its {UNIT_FILE} is missing or does not read back"
        try:
            recorded = json.loads((path / INPUTS_FILE).read_text())
        except (OSError, ValueError):
            recorded = None
        if not isinstance(recorded, dict) or not isinstance(recorded.get("stores"), dict):
            return None, f"it has no readable {INPUTS_FILE}: it was written before units were keyed by their inputs"
        if recorded.get("format") != UNIT_FORMAT:
            return None, f"it was written in unit format {recorded.get('format')}, this speechprobe writes {UNIT_FORMAT}"
        current = self.unit_inputs(name, recorded["stores"])
        if recorded.get("revision", 0) != current.get("revision", 0):
            return None, (f"it was written by revision {recorded.get('revision', 0)} of the {name.split('/', 1)[0]} "
                          f"study, this speechprobe writes revision {current.get('revision', 0)}")
        changed = []
        if recorded.get("corpus") != current["corpus"]:
            changed.append("the corpus")
        stores = [encoder for encoder, key in current["stores"].items() if recorded["stores"].get(encoder) != key]
        if stores:
            changed.append(f"the store{'s' if len(stores) > 1 else ''} {', '.join(stores)}")
        config = recorded.get("config") if isinstance(recorded.get("config"), dict) else {}
        sections = [key for key, value in current["config"].items() if config.get(key) != value]
        if sections:
            changed.append(f"the config's {', '.join(sections)}")
        if changed:
            return None, (" and ".join(changed) if len(changed) < 3 else
                          ", ".join(changed[:-1]) + " and " + changed[-1]) + " changed"
        return data, None


def _discard(path: Path) -> None:
    """Remove a stale unit or store: renamed aside first (one step), so no half-deleted folder is ever read."""
    aside = path.with_name(f".{path.name}.stale-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    with naming(path):
        os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def encoder_store(corpus: Any, encoder: str, stores: str | Path, tell: Callable[[str], None], *,
                  progress: bool = True, fingerprint: Optional[str] = None) -> Any:
    """The store of ``encoder`` over ``corpus`` in ``stores``/<encoder>: reused, resumed or extracted.

    A complete store there that was extracted by this encoder from this corpus source, but whose corpus
    content (fingerprint) or encoder weights have changed since, is out of date: it is extracted again
    (saying so). A store of another encoder or corpus source is never removed (extraction refuses it).
    """
    from speechprobe.encoders.extraction import extract
    from speechprobe.encoders.registry import create_encoder
    from speechprobe.encoders.store import RepresentationStore

    path = Path(stores) / store_dir_name(encoder)
    model = create_encoder(encoder)
    manifest = _read_manifest(path)
    if manifest is not None:
        stale = _out_of_date(manifest, model, corpus, fingerprint)
        if stale:
            check_writable(path.parent, path)
            tell(f"store {encoder} ({path}): {stale} since it was extracted; extracting it again")
            _discard(path)
            manifest = None
    if manifest is None:
        check_writable(path)
        tell(f"extracting {encoder} over {len(corpus)} utterances into {path}")
    started = time.perf_counter()
    with naming(path):
        result = extract(corpus, model, path, progress=progress)
    if not result.reused:
        tell(f"extracted {encoder} in {time.perf_counter() - started:.0f} s")
    return RepresentationStore(path)


def _read_manifest(path: Path) -> Optional[dict]:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _out_of_date(manifest: dict, model: Any, corpus: Any, fingerprint: Optional[str]) -> Optional[str]:
    """Why a complete store of this encoder over this corpus source no longer matches them, or None (also for
    a store of something else, which extraction then refuses rather than this run removing it)."""
    if manifest.get("encoder") != model.name or manifest.get("corpus_source") != corpus.source:
        return None
    reasons = []
    if manifest.get("corpus_fingerprint") != (fingerprint or corpus.fingerprint()):
        reasons.append("the corpus changed")
    if manifest.get("weights_hash") != model.weights_hash():
        reasons.append("the encoder's weights changed")
    return " and ".join(reasons) or None


def baselines_of(section: SweepSection) -> dict[str, str]:
    """Encoder -> its random-weights baseline, as the section asks."""
    from speechprobe.encoders.registry import random_twin

    if section.baselines == "none":
        return {}
    if section.baselines == "auto":
        return {name: twin for name in section.encoders if (twin := random_twin(name)) is not None}
    return dict(section.baselines)


def run_encoders(config: RunConfig) -> list[str]:
    """Every encoder whose store the run reads: the sections' encoders and the sweep's baselines."""
    names = list(config.encoders())
    if config.sweep:
        names += [b for b in baselines_of(config.sweep).values() if b not in names]
    return names


def check_stores_writable(config: RunConfig) -> None:
    """Stores still to extract must be writable: checked before any work (complete stores are only read)."""
    for encoder in run_encoders(config):
        path = Path(config.stores) / store_dir_name(encoder)
        if _read_manifest(path) is None:
            check_writable(path)


def reporter(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr (stdout keeps the results)."""
    def tell(message: str) -> None:
        if not quiet:
            print(f"speechprobe: {message}", file=sys.stderr, flush=True)
    return tell


def prepare_corpus(config: RunConfig, tell: Callable[[str], None]) -> Any:
    """The config's corpus, built first when a synthetic preset is named and the folder is missing."""
    from speechprobe.tasks.corpus import load_corpus

    path = Path(config.corpus)
    if config.corpus_preset and not path.exists():
        from speechprobe.tasks.synthetic import build_corpus, config_from_args

        check_writable(path)
        tell(f"building the {config.corpus_preset} synthetic corpus in {path}")
        with naming(path):
            build_corpus(path, config_from_args(config.corpus_preset), progress=True)
    return load_corpus(str(path), columns=config.columns or None, split=config.corpus_split)


def check_names(config: RunConfig, corpus: Any) -> None:
    """Every encoder and task the config names, checked before any work or any file is written."""
    from speechprobe.encoders.registry import check_name
    from speechprobe.tasks.tasks import get_task, task_labels

    for name in config.encoders():
        check_name(name)
    if config.sweep and isinstance(config.sweep.baselines, dict):
        for encoder, baseline in config.sweep.baselines.items():
            if encoder not in config.sweep.encoders:
                raise SpeechprobeError(f"sweep.baselines: {encoder!r} is not one of sweep.encoders "
                                   f"({', '.join(config.sweep.encoders)})")
            check_name(baseline)
    tasks = [*(config.sweep.tasks if config.sweep else ()),
             *([config.audit.attribute, *config.audit.tasks] if config.audit else []),
             *([config.ablation.task] if config.ablation else []),
             *[task for section in config.intervention or () for task in (section.attribute, *section.tasks)],
             *(config.compare.tasks if config.compare else ()),
             *(config.topomap.tasks if config.topomap else ())]
    from speechprobe.tasks.splits import control_split, cross_validation_splits

    for task in dict.fromkeys(tasks):  # the labels and splits each task needs, so no run stops half-way for them
        task_labels(corpus.metadata, get_task(task, corpus.metadata))
        cross_validation_splits(corpus.metadata, task, folds=config.probe.folds, seed=config.seed)
    if config.probe.control and (config.sweep or config.compare or config.topomap):  # they read the sweep's units
        control_split(corpus.metadata, seed=config.seed, folds=config.probe.folds)
    if config.compare:  # two checkpoints of one architecture, or one line naming the first difference
        from speechprobe.encoders.checkpoints import weight_changes
        from speechprobe.encoders.registry import create_encoder

        weight_changes(*(create_encoder(name) for name in config.compare.encoders))


@dataclass
class TaskArrays:
    """A task over a store: labels, the cross-validation splits, speakers, and the control task."""

    task: Any  # tasks.tasks.Task
    labels: np.ndarray
    splits: list
    groups: Optional[np.ndarray]
    control_labels: Optional[np.ndarray]
    control_split: Any

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def split_policy(self) -> str:
        return self.task.split_policy

    @property
    def split(self) -> Any:
        """The split one probe is trained and scored on (fold 0, `tasks.splits.make_split`)."""
        return self.splits[0]

    @property
    def control_note(self) -> Optional[str]:
        """Why the task's control task means nothing (speaker identity), or None."""
        return self.task.control_note

    def sizes(self) -> dict[str, int]:
        return {part: int(len(rows)) for part, rows in self.split.parts().items()}


def task_arrays(store: Any, task_name: str, *, folds: int, seed: int, control: bool) -> TaskArrays:
    """Labels, the splits to score on, speakers and the control task.

    Speaker-disjoint tasks get all `folds` cross-validation splits (their test parts partition the
    utterances, so every speaker is tested once); a within-speaker task (speaker identity) gets the first
    only: its test part already holds every speaker, and more folds would multiply the run's most
    expensive probes (one output per speaker) for no new speaker.
    """
    from speechprobe.tasks.splits import cross_validation_splits
    from speechprobe.tasks.tasks import get_task, task_labels

    index = store.index
    task = get_task(task_name, index)
    labels = task_labels(index, task)
    splits = cross_validation_splits(index, task, folds=folds, seed=seed)
    if task.split_policy != "speaker_disjoint":
        splits = splits[:1]
    groups = index["speaker"].astype(str).to_numpy() if "speaker" in index.columns else None
    c_labels, c_split = _control_task(index, task, seed=seed, folds=folds) if control else (None, None)
    return TaskArrays(task, labels, splits, groups, c_labels, c_split)


def _control_task(index: Any, task: Any, *, seed: int, folds: int) -> tuple[np.ndarray, Any]:
    """The task's control labels and the within-speaker split they are scored on."""
    from speechprobe.tasks.splits import control_labels, control_split

    return control_labels(index, task, seed=seed), control_split(index, seed=seed, folds=folds)


def command_task(store: Any, task_name: str, *, seed: int, control: bool, folds: int = 5) -> TaskArrays:
    """A task for a one-store command (`probe`, `neurons`): every corpus check runs here, and the control
    task only where it means something (not for speaker identity)."""
    data = task_arrays(store, task_name, folds=folds, seed=seed, control=False)
    if not control or data.control_note is not None:
        return data
    try:
        c_labels, c_split = _control_task(store.index, data.task, seed=seed, folds=folds)
    except CorpusError as error:
        raise CorpusError(f"{error} (or skip it with --no-control)") from error
    return replace(data, control_labels=c_labels, control_split=c_split)


def training_options(config: RunConfig) -> "TrainingOptions":
    """How the run's probes are trained (a :class:`probing.options.TrainingOptions`): the config's
    ``probe.max_epochs`` and ``compute.accelerator``/``device``, the rest the defaults. Never part of a unit's
    key itself: units are keyed by the config sections (``probe`` among them, never ``compute``: where probes
    train is not what they compute), which these options are built from."""
    from speechprobe.probing.options import TrainingOptions

    return TrainingOptions(max_epochs=config.probe.max_epochs, accelerator=config.compute.accelerator,
                           device=config.compute.device)


def memory_budget(config: RunConfig) -> Optional[int]:
    """The config's ``compute.memory`` in bytes (None: the probing default, half the available memory)."""
    from speechprobe.probing.budget import parse_size

    return None if config.compute.memory is None else parse_size(config.compute.memory)


def grid(config: RunConfig) -> list[tuple[float, float]]:
    from speechprobe.probing.sweep import DEFAULT_GRID

    return list(DEFAULT_GRID if config.probe.grid is None else config.probe.grid)
