"""Seeded train/validation/test splits that respect each task's split policy, and control tasks.

Fold i of a k-fold partition is the test part, fold (i + 1) % k the validation part (model selection:
regularisation strength, early stopping) and the remaining k - 2 folds the training part, so `folds`
must be at least 3. Every check that a split is usable (enough speakers, every class in every part)
runs here, before any encoder or probe time is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from speechprobe.tasks.errors import CorpusError
from speechprobe.tasks.tasks import SPEAKER_DISJOINT, Task, get_task, label_strings, task_labels

PARTS = ("train", "validation", "test")
#: Redraws allowed before `control_labels` gives up on getting two classes (tiny corpora only).
_CONTROL_DRAWS = 1000


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted row indices (into the corpus metadata) of the three parts."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in PARTS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in PARTS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Split(train={len(self.train)}, validation={len(self.validation)}, test={len(self.test)} rows)"


def make_split(metadata: pd.DataFrame, task: Task | str, *, seed: int = 0, folds: int = 5) -> Split:
    """The split a single probe is trained and scored on: fold 0 of `cross_validation_splits`."""
    return cross_validation_splits(metadata, task, folds=folds, seed=seed)[0]


def cross_validation_splits(
    metadata: pd.DataFrame, task: Task | str, *, folds: int = 5, seed: int = 0
) -> list[Split]:
    """`folds` splits whose test parts partition the rows, under the task's split policy.

    speaker_disjoint: `StratifiedGroupKFold` grouped by speaker, stratified by label, so no speaker is in
    two parts; within_speaker: `StratifiedKFold` stratified by speaker, so every speaker is in every part.
    """
    task = task if isinstance(task, Task) else get_task(task, metadata)
    _check_folds(folds)
    labels = task_labels(metadata, task)
    speakers = _speakers(metadata)
    if task.split_policy == SPEAKER_DISJOINT:
        _check_speaker_disjoint(labels, speakers, task, folds)
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        tests = [test for _, test in cv.split(np.zeros(len(labels)), labels, groups=speakers)]
    else:
        tests = _within_speaker_folds(speakers, folds, seed)
    splits = _rotate(tests, folds)
    _check_classes(splits, labels, task.name, seed)
    return splits


def control_labels(metadata: pd.DataFrame, task: Task | str, *, seed: int = 0) -> np.ndarray:
    """Control-task labels (Hewitt & Liang 2019, adapted to utterances): one label per speaker, drawn
    from the task's empirical label distribution, shared by all that speaker's utterances.

    A probe that does as well on these as on the real labels is memorising speakers, not reading the
    property; selectivity is real minus control accuracy. Draws with fewer than two classes (possible
    only with very few speakers) are redrawn from the same seeded generator.
    """
    labels = task_labels(metadata, task)
    speakers = _speakers(metadata)
    classes, counts = np.unique(labels, return_counts=True)
    unique_speakers, speaker_of_row = np.unique(speakers, return_inverse=True)
    rng = np.random.default_rng(seed)
    for _ in range(_CONTROL_DRAWS):
        drawn = rng.choice(classes, size=len(unique_speakers), p=counts / counts.sum())
        if len(np.unique(drawn)) > 1:
            return drawn[speaker_of_row].astype(str)
    raise CorpusError(
        f"control task for {getattr(task, 'name', task)}: {len(unique_speakers)} speakers never drew two "
        "different labels; a control task needs more speakers"
    )


def control_split(metadata: pd.DataFrame, *, seed: int = 0, folds: int = 5) -> Split:
    """The within-speaker split control tasks are scored on (every speaker in every part).

    Why not the task's own speaker-disjoint split: a control label is a random function of the speaker,
    so on unseen speakers it is unpredictable by construction and every probe scores chance; only with
    the speakers shared between train and test does control accuracy measure what a probe can memorise.
    """
    _check_folds(folds)
    speakers = _speakers(metadata)
    splits = _rotate(_within_speaker_folds(speakers, folds, seed), folds)
    _check_classes(splits, speakers, "control (speakers)", seed)
    return splits[0]


# --------------------------------------------------------------------------------------------- helpers


def _check_folds(folds: int) -> None:
    if int(folds) != folds or folds < 3:
        raise CorpusError(f"folds must be an integer of at least 3 (train, validation, test), got {folds!r}")


def _speakers(metadata: pd.DataFrame) -> np.ndarray:
    """Speakers are needed by every policy: they are the groups, or the strata."""
    if "speaker" not in metadata.columns:
        raise CorpusError(
            f"splits need a 'speaker' column (columns: {', '.join(map(str, metadata.columns))}); "
            "map one with columns={'speaker': ...}"
        )
    return label_strings(metadata, "speaker", "splits")


def _check_speaker_disjoint(labels: np.ndarray, speakers: np.ndarray, task: Task, folds: int) -> None:
    n_speakers = len(np.unique(speakers))
    if n_speakers < folds:
        raise CorpusError(
            f"task {task.name}: only {n_speakers} speakers; "
            f"a speaker-disjoint {folds}-fold split needs at least {folds}"
        )
    per_class = pd.Series(speakers).groupby(labels).nunique()
    short = per_class[per_class < folds]
    if len(short):
        cls = short.index[0]
        raise CorpusError(
            f"task {task.name}: class {str(cls)!r} comes from {short.iloc[0]} speakers; a speaker-disjoint "
            f"{folds}-fold split needs at least {folds} per class so the class is in every part"
        )


def _within_speaker_folds(speakers: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    names, counts = np.unique(speakers, return_counts=True)
    if counts.min() < folds:
        i = int(np.argmin(counts))
        raise CorpusError(
            f"speaker {str(names[i])!r} has {counts[i]} utterances; a within-speaker {folds}-fold split "
            f"needs at least {folds} per speaker"
        )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [test for _, test in cv.split(np.zeros(len(speakers)), speakers)]


def _rotate(tests: list[np.ndarray], folds: int) -> list[Split]:
    """Fold i tests, fold i + 1 validates, the rest train."""
    splits = []
    for i in range(folds):
        train = np.concatenate([tests[j] for j in range(folds) if j not in (i, (i + 1) % folds)])
        splits.append(
            Split(
                train=np.sort(train).astype(np.int64),
                validation=np.sort(tests[(i + 1) % folds]).astype(np.int64),
                test=np.sort(tests[i]).astype(np.int64),
            )
        )
    return splits


def _check_classes(splits: list[Split], labels: np.ndarray, name: str, seed: int) -> None:
    classes = np.unique(labels)
    for fold, split in enumerate(splits):
        for part, rows in split.parts().items():
            absent = np.setdiff1d(classes, labels[rows])
            if len(absent):
                raise CorpusError(
                    f"task {name}: class {str(absent[0])!r} has no examples in the {part} part of fold {fold} "
                    f"(seed {seed}); try another seed or fewer folds"
                )
