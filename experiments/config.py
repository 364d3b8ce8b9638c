"""Experiment configurations: typed, validated, loaded from YAML or built from command-line flags.

One config describes one run: where the corpus and the representation stores are, and the studies
(sections) run on them: ``sweep`` (layer-wise probing across encoders and tasks), ``audit`` (a bias audit
of one attribute), ``ablation`` (neuron ablation for one task and layer) and ``intervention`` (removing an
attribute inside the encoder's forward pass) and ``compare`` (two checkpoints of one architecture, layer by
layer). ``speechprobe run CONFIG.yaml`` runs the sections present;
``speechprobe sweep|audit|ablation|intervene|compare`` build a config with one section from flags. ``experiments/configs/`` holds one example of each, and the demo's config.

Why pydantic (already installed with wandb): its strict models reject unknown keys and wrong types
with the key's full path (``sweep.tasks.1``), which is what a user editing YAML needs to read.
Names that only the registry or the corpus can check (encoders, tasks) are checked when a run starts,
before any work is done (see :mod:`experiments.runner`).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator, ValidationError

from speechprobe.encoders.choices import POOLINGS
from speechprobe.errors import SpeechprobeError
from speechprobe.probing.choices import (ABLATION_MODES, DEFAULT_ABLATION_MODE, DEFAULT_RANKING, RANKING_METHODS,
                                         SIMILARITY_MEASURES)
from speechprobe.probing.options import ACCELERATORS, TrainingOptions
from speechprobe.tasks.catalog import PRESET_NAMES

__all__ = ["AblationSection", "AttributionSection", "AuditSection", "CompareSection", "ComputeSettings",
           "InterventionSection",
           "ProbeSettings", "RunConfig", "SweepSection", "TopomapSection", "load_config", "parse_config"]

# The single source of every choice list and default a user sets: this schema. Lists owned by a lower layer
# (rankings, ablation modes, similarity measures, pooling, corpus presets) are imported from its light
# `choices`/`catalog` module; the CLI reads its choices and defaults from here (`default_of`).
LOGGER_NAMES = ("none", "csv", "wandb", "tensorboard")
DEFAULT_LOGGERS = ("csv", "wandb")
DEFAULT_TASKS = ("speaker", "gender", "dialect", "channel")
ATTRIBUTION_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "gradient_shap", "lrp")
DEFAULT_ATTRIBUTION_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "gradient_shap")
IG_STEPS, SHAP_SAMPLES = 128, 16
__all__ += ["ABLATION_MODES", "ATTRIBUTION_METHODS", "DEFAULT_ABLATION_MODE", "DEFAULT_ATTRIBUTION_METHODS",
            "DEFAULT_LOGGERS", "DEFAULT_RANKING", "DEFAULT_TASKS", "IG_STEPS", "LOGGER_NAMES", "POOLINGS",
            "PRESET_NAMES", "RANKING_METHODS", "SHAP_SAMPLES", "SIMILARITY_MEASURES", "default_of"]


def default_of(section: type[BaseModel], key: str) -> Any:
    """The schema's default for `key` of `section` (what the CLI shows and uses when a flag is absent)."""
    return section.model_fields[key].get_default(call_default_factory=True)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ProbeSettings(_Section):
    """How every probe of the run is trained and scored (shared by the sections)."""

    grid: Optional[tuple[tuple[float, float], ...]] = Field(
        None, description="(l1, l2) settings chosen from on validation; default: probing.sweep.DEFAULT_GRID")
    max_epochs: int = Field(TrainingOptions().max_epochs, ge=1)
    folds: int = Field(5, ge=3, description="speaker-fold cross-validation for speaker-disjoint tasks")
    control: bool = Field(True, description="train control-task probes (selectivity)")
    n_resamples: int = Field(1000, ge=100, description="bootstrap resamples of every interval")
    target: float = Field(0.97, gt=0, le=1, description="minimal subset: fraction of the full accuracy kept")
    method: Literal[RANKING_METHODS] = Field(
        DEFAULT_RANKING, description="neuron ranking: path (the order in which neurons enter along the elastic-net "
                            "regularisation path), weight, neurox or probeless")

    @field_validator("grid")
    @classmethod
    def _finite_grid(cls, grid):
        # probing.sweep checks the same, but importing it (torch) just to read a config would slow every command
        if grid is not None:
            if not grid:
                raise ValueError("grid needs at least one [l1, l2] pair")
            for l1, l2 in grid:
                if not (math.isfinite(l1) and math.isfinite(l2) and l1 >= 0 and l2 >= 0):
                    raise ValueError(f"grid pair [{l1}, {l2}]: strengths must be finite and >= 0")
        return grid


class ComputeSettings(_Section):
    """Where and within how much memory the run's probes train: it changes how fast, not what (up to float
    rounding), so a run folder's results stay valid when these change."""

    accelerator: Literal[ACCELERATORS] = Field(
        "auto", description="where probes train: auto (a GPU where there is one), cpu, gpu, cuda or mps")
    device: Optional[int] = Field(None, ge=0, description="which device of the accelerator (default its first)")
    memory: Optional[str | int] = Field(
        None, description="the most memory one batched probe fit holds, e.g. 8G (default: half the available memory)")

    @field_validator("memory")
    @classmethod
    def _size(cls, memory):
        if memory is not None:
            from speechprobe.probing.budget import parse_size  # numpy: not on every --help

            parse_size(memory)  # its ValueError names the value
        return memory


class AttributionSection(_Section):
    """Input attribution of the best layer's probe, per model encoder x task (see experiments/studies/attribution/)."""

    utterances: int = Field(1, ge=1, le=50, description="utterances per encoder x task, one per class in turn")
    methods: tuple[Literal[ATTRIBUTION_METHODS], ...] = Field(DEFAULT_ATTRIBUTION_METHODS, min_length=1)
    ig_steps: int = Field(IG_STEPS, ge=2, description="integrated-gradients steps")
    shap_samples: int = Field(SHAP_SAMPLES, ge=1, description="GradientSHAP samples")


class SweepSection(_Section):
    """Layer-wise probing: every encoder x task x layer, with each encoder's random-weights twin."""

    encoders: tuple[str, ...] = Field(min_length=1)
    tasks: tuple[str, ...] = Field(DEFAULT_TASKS, min_length=1)
    baselines: Literal["auto", "none"] | dict[str, str] = Field(
        "auto", description="auto: the random-weights twin of every encoder that has one; none; or encoder: baseline")
    similarity: Optional[Literal[SIMILARITY_MEASURES]] = Field(
        None, description="also compare layers (linear_cka, rbf_cka, svcca, pwcca): within each encoder and "
                          "against its baseline")
    gradnap: bool = Field(
        False, description="also compute GradNAPs (gradient-adjusted neuron activation profiles) per model encoder x "
                           "task: one profile per label value, distances, clustering and a permutation test per "
                           "layer, reusing the sweep's probes (see `speechprobe gradnap`)")
    attribution: Optional[AttributionSection] = Field(
        None, description="input attribution of each model encoder's best-layer probe (off when absent)")


class AuditSection(_Section):
    """Bias audit: how and where `attribute` is encoded, and who the other tasks' probes disadvantage."""

    encoder: str
    attribute: str = "gender"
    tasks: tuple[str, ...] = Field(("speaker", "dialect", "channel"), description="the other tasks audited")
    layer: str = Field("best", description="a layer name, or best (the attribute's best layer on validation)")


class AblationSection(_Section):
    """Neuron ablation for one task: curves for top, random and bottom neurons, with and without retraining."""

    encoder: str
    task: str = "gender"
    layer: str = Field("all", description="a layer name, best, or all (every layer concatenated)")


INTERVENTION_MODES = ("mean", "zero", "resample")
INTERVENTION_JOBS = ("auto", "verification", "transcription", "none")


class InterventionSection(_Section):
    """Causal interventions in the forward pass (see experiments/studies/intervention/): remove `attribute` at one
    layer (its top-k / minimal-subset neurons, as many random neurons, LEACE erasure) and measure whether later
    layers still carry it, what the encoder's own job (speaker verification, transcription) and the other tasks
    pay, each against random neurons and the majority class."""

    encoder: str
    attribute: str = "gender"
    layer: str = Field("best", description="a layer name, or best (the attribute's best layer on validation)")
    ks: tuple[Literal["minimal"] | int, ...] = Field(
        ("minimal", 8, 32), min_length=1,
        description="how many top-ranked neurons to remove: numbers, or minimal (the minimal subset's k)")
    random_draws: int = Field(3, ge=1, le=50, description="seeded draws of random neurons (and directions) per k")
    modes: tuple[Literal[INTERVENTION_MODES], ...] = Field(
        ("mean",), min_length=1, description="how removed neurons are filled in the forward pass: mean (their mean "
                                             "over real frames, in distribution), zero (raw 0, out of distribution), "
                                             "resample (values of frames of other utterances)")
    erasure: Literal["leace", "none"] = Field("leace", description="also erase the attribute at the layer with LEACE")
    tasks: tuple[str, ...] = Field(("speaker", "dialect", "channel"),
                                   description="the other tasks whose last-layer accuracy is the cost to them")
    job: Literal[INTERVENTION_JOBS] = Field(
        "auto", description="the encoder's own job: verification (speaker-verification EER on the last layer), "
                            "transcription (WER), none; auto: verification for GE2E, transcription for Whisper")
    trials: int = Field(5000, ge=10, description="target (and as many non-target) verification trials at most")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks):
        for k in ks:
            if k != "minimal" and k < 1:
                raise ValueError(f"{k} is not a number of neurons (>= 1) or minimal")
        return ks


class CompareSection(_Section):
    """Two checkpoints of one architecture, layer by layer (see experiments/studies/compare/): how far the weights
    computing each layer moved, how alike the two representations of the corpus are there (linear CKA), and the
    probe accuracy of both on each task."""

    encoders: tuple[str, ...] = Field(
        description="exactly two encoder names of one architecture: A (the reference) and B, e.g. a pretrained and "
                    "a fine-tuned hf: folder, or an encoder and its random: twin")
    tasks: tuple[str, ...] = Field(DEFAULT_TASKS, min_length=1)

    @field_validator("encoders")
    @classmethod
    def _two_distinct(cls, encoders):
        if len(encoders) != 2:
            raise ValueError(f"give exactly two encoders, A (the reference) and B; got {len(encoders)}"
                             + (f" ({', '.join(encoders)})" if encoders else ""))
        if encoders[0] == encoders[1]:
            raise ValueError(f"the two encoders are both {encoders[0]!r}: name two checkpoints to compare")
        return encoders


class TopomapSection(_Section):
    """Topographic neuron maps (see experiments/studies/topomap/): per encoder x task, one layer's neurons laid out
    on a grid so that neighbours correlate over the corpus, painted with each label group's profile, the probe's
    weights and its top-ranked neurons, and whether those gather on the map (permutation tests)."""

    encoders: tuple[str, ...] = Field(min_length=1)
    tasks: tuple[str, ...] = Field(("gender", "dialect"), min_length=1)
    layer: str = Field("best", description="a layer name, best (each task's best layer in the sweep's "
                                           "cross-validation), or all")
    top_fraction: float = Field(0.05, gt=0, lt=1, description="share of the layer's neurons counted salient (the "
                                                              "top of the probe's ranking)")
    permutations: int = Field(1000, ge=99, description="permutations of every clustering and Moran's I test")


class RunConfig(_Section):
    """A whole run: data, output, logging, probe settings and the studies to run."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    corpus: str = Field(description="corpus folder, CSV table or Hugging Face dataset")
    corpus_preset: Optional[Literal[PRESET_NAMES]] = Field(
        None, description="build the synthetic corpus of this preset at `corpus` when it is not there yet")
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical column -> the source's column, e.g. {dialect: accent}")
    corpus_split: str = Field("train", description="which split of a Hugging Face dataset to read")
    stores: str = Field("data/stores", description="folder of the representation stores (one per encoder, reused)")
    out: Optional[str] = Field(None, description="run folder; default data/runs/<name>")
    seed: int = 0
    logger: tuple[Literal[LOGGER_NAMES], ...] = DEFAULT_LOGGERS
    probe: ProbeSettings = ProbeSettings()
    compute: ComputeSettings = ComputeSettings()
    sweep: Optional[SweepSection] = None
    audit: Optional[AuditSection] = None
    ablation: Optional[AblationSection] = None
    # One section or a list of them; validated as given (JSON mode, so YAML lists inside a section are taken) and
    # then always a tuple of sections.
    intervention: Optional[tuple[InterventionSection, ...] | InterventionSection] = Field(
        None, description="one intervention section, or a list of them (each its own encoder, attribute and layer)")
    compare: Optional[CompareSection] = None
    topomap: Optional[TopomapSection] = None

    @field_validator("intervention")
    @classmethod
    def _distinct_interventions(cls, sections):
        if sections is None:
            return None
        sections = (sections,) if isinstance(sections, InterventionSection) else tuple(sections)
        if not sections:
            raise ValueError("give at least one intervention section, or leave intervention out")
        seen = set()
        for section in sections:
            key = (section.encoder, section.attribute, section.layer)
            if key in seen:
                raise ValueError(f"two intervention sections remove {section.attribute} from {section.encoder} at "
                                 f"layer {section.layer}: give each (encoder, attribute, layer) once")
            seen.add(key)
        return sections

    @model_validator(mode="after")
    def _something_to_do(self):
        if (self.sweep is None and self.audit is None and self.ablation is None and self.intervention is None
                and self.compare is None and self.topomap is None):
            raise ValueError("the config has no study: give at least one of sweep, audit, ablation, intervention, "
                             "compare, topomap")
        if "none" in self.logger and len(self.logger) > 1:
            raise ValueError("logger: none cannot be combined with other loggers")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("data/runs") / self.name

    def encoders(self) -> list[str]:
        """Every encoder a section names, in order of first mention (baselines excluded)."""
        names: list[str] = []
        for name in [*(self.sweep.encoders if self.sweep else ()),
                     *([self.audit.encoder] if self.audit else []),
                     *([self.ablation.encoder] if self.ablation else []),
                     *[section.encoder for section in self.intervention or ()],
                     *(self.compare.encoders if self.compare else ()),
                     *(self.topomap.encoders if self.topomap else ())]:
            if name not in names:
                names.append(name)
        return names

    def as_plain(self) -> dict[str, Any]:
        """The config as plain YAML/JSON values (what the run folder stores and a rerun compares)."""
        return self.model_dump(mode="json")


_BRANCH = re.compile(r"(function-after|literal|tuple|dict|str)\[.*|[A-Z][A-Za-z]*Section")


def _location(error: Mapping[str, Any]) -> str:
    parts = [str(p) for p in error.get("loc", ()) if not _BRANCH.fullmatch(str(p))]
    return ".".join(parts) or "(top level)"


def _in_taken_branch(error: Mapping[str, Any], data: Any) -> bool:
    """Whether an error of a one-or-a-list field (``intervention``) belongs to the branch its value took: a
    mapping's errors are those of the section, a list's those of its items, not the other branch's "not a list"."""
    value = data
    for part in error.get("loc", ()):
        tag = str(part)
        if re.fullmatch(r"[A-Z][A-Za-z]*Section", tag):
            if not isinstance(value, Mapping):
                return False
            continue
        if tag.startswith("tuple["):
            if not isinstance(value, list):
                return False
            continue
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return True
    return True


def parse_config(data: Any, source: str = "config") -> RunConfig:
    """A validated :class:`RunConfig` from plain data; the first problem as one line naming the key."""
    if not isinstance(data, Mapping):
        raise SpeechprobeError(f"{source}: a config is a mapping of keys (name, corpus, sweep, ...), got {type(data).__name__}")
    try:
        # JSON mode: strict about scalars (no "5" for 5) yet taking YAML lists for tuples
        return RunConfig.model_validate_json(json.dumps(dict(data), default=str))
    except ValidationError as error:
        errors = [e for e in error.errors() if _in_taken_branch(e, data)] or error.errors()
        errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")  # a typo explains the rest
        first = errors[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "missing":
            message = "missing (required)"
        elif not isinstance(first.get("input"), (Mapping, list)):
            message = f"{message} (got {first.get('input')!r})"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpeechprobeError(f"{source}: {_location(first)}: {message}{more}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpeechprobeError(f"{path}: cannot read the config ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpeechprobeError(f"{path}: not valid YAML{where}") from None
    return parse_config(data, str(path))
