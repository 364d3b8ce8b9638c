"""Probing tasks: which metadata column is the label, and how utterances may be split for it.

The split policy is part of the task because it decides what a probe's accuracy means: an attribute
probe (gender, dialect, channel) tested on speakers it was trained on can score by recognising the
speakers, so attribute tasks are speaker-disjoint; speaker identification is closed-set, so every
speaker must be in every part.

A task also says whether its control task (:func:`tasks.splits.control_labels`: one random label per
speaker) means anything: for a task whose labels *are* the speaker ids it does not, since a probe learns
the control labels by recognising speakers, which is the task itself (:attr:`Task.control_note`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import pandas as pd

from speechprobe.tasks.errors import CorpusError

SplitPolicy = Literal["speaker_disjoint", "within_speaker"]
SPEAKER_DISJOINT: SplitPolicy = "speaker_disjoint"
WITHIN_SPEAKER: SplitPolicy = "within_speaker"

#: Why selectivity is not reported for a task whose labels are the speakers.
SPEAKER_CONTROL_NOTE = (
    "the control task (a random label per speaker) is itself learnt by recognising speakers, so it cannot "
    "separate memorisation from speaker information"
)


@dataclass(frozen=True)
class Task:
    """A label column and the split policy its probes are evaluated under."""

    name: str
    label_column: str
    split_policy: SplitPolicy = SPEAKER_DISJOINT

    def __post_init__(self) -> None:
        if self.split_policy not in (SPEAKER_DISJOINT, WITHIN_SPEAKER):
            raise ValueError(
                f"task {self.name}: split_policy must be {SPEAKER_DISJOINT!r} or {WITHIN_SPEAKER!r}, "
                f"got {self.split_policy!r}"
            )

    @property
    def labels_are_speakers(self) -> bool:
        """The labels are the speaker ids (speaker identification)."""
        return self.label_column == "speaker"

    @property
    def control_note(self) -> Optional[str]:
        """Why this task's control task (and so its selectivity) means nothing; None when it does."""
        return SPEAKER_CONTROL_NOTE if self.labels_are_speakers else None


BUILTIN_TASKS: dict[str, Task] = {
    "speaker": Task("speaker", "speaker", WITHIN_SPEAKER),
    "gender": Task("gender", "gender", SPEAKER_DISJOINT),
    "dialect": Task("dialect", "dialect", SPEAKER_DISJOINT),
    "channel": Task("channel", "channel", SPEAKER_DISJOINT),
}

#: Columns that identify rows rather than label them: a probe on them is meaningless.
_NOT_LABELS = ("utt_id", "file_name")


def get_task(name: str, metadata: pd.DataFrame | None = None) -> Task:
    """A built-in task, or any other label column of `metadata` as a speaker-disjoint attribute task."""
    if name in _NOT_LABELS:
        raise CorpusError(f"{name} identifies utterances; it is not a label to probe for")
    columns = [] if metadata is None else [str(c) for c in metadata.columns]
    if name in BUILTIN_TASKS:
        task = BUILTIN_TASKS[name]
        if metadata is not None:
            _require_column(metadata, task)
        return task
    if name in columns:
        return Task(name, name, SPEAKER_DISJOINT)
    where = f"corpus columns are {', '.join(columns)}" if metadata is not None else "no corpus given"
    raise CorpusError(f"unknown task {name!r}: built-in tasks are {', '.join(BUILTIN_TASKS)}; {where}")


def _require_column(metadata: pd.DataFrame, task: Task) -> None:
    if task.label_column not in metadata.columns:
        raise CorpusError(
            f"task {task.name} needs column {task.label_column!r}, which this corpus lacks "
            f"(columns: {', '.join(map(str, metadata.columns))})"
        )


def task_labels(metadata: pd.DataFrame, task: Task | str) -> np.ndarray:
    """The task's labels as strings, one per row, refusing what no probe can learn from."""
    task = task if isinstance(task, Task) else get_task(task, metadata)
    _require_column(metadata, task)
    labels = label_strings(metadata, task.label_column, f"task {task.name}")
    classes = np.unique(labels)
    if len(classes) < 2:
        found = f"one class ({str(classes[0])!r})" if len(classes) else "no classes"
        raise CorpusError(f"task {task.name} has {found} in this corpus; a probe needs at least two")
    return labels


def label_strings(metadata: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """`column` as a str array; missing or blank cells are an error naming how many and the first."""
    values = metadata[column]
    missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        who = f"utt_id {str(metadata['utt_id'].iloc[first])!r}" if "utt_id" in metadata.columns else f"row {first}"
        raise CorpusError(
            f"{what}: {int(missing.sum())} of {len(values)} utterances have no {column} label (first: {who})"
        )
    return values.astype(str).to_numpy(dtype=object).astype(str)
