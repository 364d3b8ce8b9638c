"""speechprobe: neuron probing for frozen speech encoders.

The folders of the repository install as subpackages of this one name: `speechprobe.tasks` (corpora and
labelled tasks), `speechprobe.encoders` (encoders, extraction, the representation store),
`speechprobe.probing` (probes, rankings, subsets, ablation on plain arrays) and `speechprobe.experiments`
(the studies, their figures and reports, the CLI). The names below are the API a notebook needs;
they are imported on first use, so `import speechprobe` (and the CLI's `--help`) stays fast.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (one line each, so the API reads as a table)
_API: dict[str, str] = {
    # corpora and tasks
    "load_corpus": "speechprobe.tasks.corpus",
    "Corpus": "speechprobe.tasks.corpus",
    "build_corpus": "speechprobe.tasks.synthetic",
    "CorpusConfig": "speechprobe.tasks.synthetic",
    "get_task": "speechprobe.tasks.tasks",
    "task_labels": "speechprobe.tasks.tasks",
    "make_split": "speechprobe.tasks.splits",
    "cross_validation_splits": "speechprobe.tasks.splits",
    "control_labels": "speechprobe.tasks.splits",
    # encoders, extraction and the store
    "create_encoder": "speechprobe.encoders.registry",
    "list_encoders": "speechprobe.encoders.registry",
    "extract": "speechprobe.encoders.extraction",
    "RepresentationStore": "speechprobe.encoders.store",
    "Intervention": "speechprobe.encoders.interventions",
    "intervene": "speechprobe.encoders.interventions",
    "transcribe": "speechprobe.encoders.transcription",
    # probes, rankings, subsets, ablation
    "ElasticNetProbe": "speechprobe.probing.probe",
    "TrainingOptions": "speechprobe.probing.options",
    "RegularisationPath": "speechprobe.probing.path",
    "rank_neurons": "speechprobe.probing.ranking",
    "check_ranking": "speechprobe.probing.ranking_check",
    "probe_layers": "speechprobe.probing.sweep",
    "cross_validate_layers": "speechprobe.probing.crossval",
    "minimal_subset": "speechprobe.probing.subset",
    "minimal_versus_random": "speechprobe.probing.ranking_check",
    "ablate": "speechprobe.probing.ablation",
    "ablation_curve": "speechprobe.probing.ablation",
    "similarity_matrix": "speechprobe.probing.similarity",
    "linear_cka": "speechprobe.probing.similarity",
    # the encoder's own job, and concept erasure
    "LeaceEraser": "speechprobe.probing.erasure",
    "verification_eer": "speechprobe.probing.verification",
    "equal_error_rate": "speechprobe.probing.verification",
    "word_error_rate": "speechprobe.probing.transcripts",
}
__all__ = sorted(_API)

if TYPE_CHECKING:  # static tools see the real names
    from speechprobe.encoders.extraction import extract
    from speechprobe.encoders.interventions import Intervention, intervene
    from speechprobe.encoders.transcription import transcribe
    from speechprobe.encoders.registry import create_encoder, list_encoders
    from speechprobe.encoders.store import RepresentationStore
    from speechprobe.probing.ablation import ablate, ablation_curve
    from speechprobe.probing.crossval import cross_validate_layers
    from speechprobe.probing.erasure import LeaceEraser
    from speechprobe.probing.options import TrainingOptions
    from speechprobe.probing.path import RegularisationPath
    from speechprobe.probing.probe import ElasticNetProbe
    from speechprobe.probing.ranking import rank_neurons
    from speechprobe.probing.ranking_check import check_ranking, minimal_versus_random
    from speechprobe.probing.similarity import linear_cka, similarity_matrix
    from speechprobe.probing.subset import minimal_subset
    from speechprobe.probing.sweep import probe_layers
    from speechprobe.probing.transcripts import word_error_rate
    from speechprobe.probing.verification import equal_error_rate, verification_eer
    from speechprobe.tasks.corpus import Corpus, load_corpus
    from speechprobe.tasks.splits import control_labels, cross_validation_splits, make_split
    from speechprobe.tasks.synthetic import CorpusConfig, build_corpus
    from speechprobe.tasks.tasks import get_task, task_labels


def __getattr__(name: str) -> Any:
    # PEP 562: torch, Lightning and transformers load only when a name that needs them is used.
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'speechprobe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
