"""Tasks, split policies, cross-validation folds and control tasks, on metadata tables (no audio needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import speechprobe.tasks.splits as splits_module
from speechprobe.tasks.errors import CorpusError
from speechprobe.tasks.splits import (
    Split,
    control_labels,
    control_split,
    cross_validation_splits,
    make_split,
)
from speechprobe.tasks.tasks import SPEAKER_DISJOINT, WITHIN_SPEAKER, Task, get_task, task_labels


def corpus_table(
    speakers: int = 20, per_speaker: int = 6, *, female_share: float = 0.5, seed: int = 0
) -> pd.DataFrame:
    """Gender and dialect are speaker traits; channel varies within a speaker, as in the synthetic corpus."""
    rng = np.random.default_rng(seed)
    n_female = int(round(female_share * speakers))
    rows = []
    for s in range(speakers):
        for u in range(per_speaker):
            rows.append(
                dict(
                    utt_id=f"s{s:03d}_{u}",
                    speaker=f"s{s:03d}",
                    gender="female" if s < n_female else "male",
                    dialect=("scottish", "rp", "us")[s % 3],
                    channel=("clean", "gsm", "mp3")[(s + u) % 3],
                    snr=str(rng.integers(2)),
                )
            )
    return pd.DataFrame(rows)


def speakers_of(meta: pd.DataFrame, rows: np.ndarray) -> set[str]:
    return set(meta["speaker"].to_numpy()[rows])


# --------------------------------------------------------------------------------------------- tasks


def test_builtin_and_column_tasks() -> None:
    meta = corpus_table()
    assert get_task("speaker") == Task("speaker", "speaker", WITHIN_SPEAKER)
    assert get_task("gender", meta).split_policy == SPEAKER_DISJOINT
    assert get_task("snr", meta) == Task("snr", "snr", SPEAKER_DISJOINT)
    with pytest.raises(
        CorpusError,
        match=r"unknown task 'age': built-in tasks are speaker, gender, dialect, channel; corpus columns are utt_id",
    ):
        get_task("age", meta)
    with pytest.raises(CorpusError, match=r"task dialect needs column 'dialect', which this corpus lacks"):
        get_task("dialect", meta.drop(columns="dialect"))
    with pytest.raises(ValueError, match="split_policy"):
        Task("x", "x", "random")  # type: ignore[arg-type]


def test_task_labels_are_strings_and_refuse_unusable_columns() -> None:
    meta = corpus_table()
    labels = task_labels(meta, "gender")
    assert labels.dtype.kind == "U" and set(labels) == {"female", "male"} and len(labels) == len(meta)
    with pytest.raises(
        CorpusError,
        match=r"task gender has one class \('female'\) in this corpus; a probe needs at least two",
    ):
        task_labels(corpus_table(female_share=1.0), "gender")
    gappy = meta.copy()
    gappy.loc[[4, 9], "dialect"] = None
    with pytest.raises(
        CorpusError,
        match=r"task dialect: 2 of 120 utterances have no dialect label \(first: utt_id 's000_4'\)",
    ):
        task_labels(gappy, "dialect")
    with pytest.raises(CorpusError, match="needs column 'channel'"):
        task_labels(meta.drop(columns="channel"), get_task("channel"))


# --------------------------------------------------------------------------------------------- splits


def assert_partition(meta: pd.DataFrame, split: Split) -> None:
    rows = np.concatenate([split.train, split.validation, split.test])
    assert sorted(rows) == list(range(len(meta)))
    for part in split.parts().values():
        assert part.dtype.kind == "i" and np.all(np.diff(part) > 0)


@pytest.mark.parametrize("task", ["gender", "dialect", "channel"])
def test_attribute_splits_are_speaker_disjoint_and_stratified(task: str) -> None:
    meta = corpus_table()
    labels = task_labels(meta, task)
    for split in cross_validation_splits(meta, task, folds=5, seed=3):
        assert_partition(meta, split)
        train, val, test = (speakers_of(meta, p) for p in (split.train, split.validation, split.test))
        assert not (train & val) and not (train & test) and not (val & test)
        for part in split.parts().values():
            assert set(labels[part]) == set(labels)


def test_speaker_split_puts_every_speaker_in_every_part() -> None:
    meta = corpus_table(speakers=8, per_speaker=5)
    everyone = set(meta["speaker"])
    split = make_split(meta, "speaker", seed=1)
    assert_partition(meta, split)
    for part in split.parts().values():
        assert speakers_of(meta, part) == everyone


def test_splits_are_seeded() -> None:
    meta = corpus_table()
    assert make_split(meta, "dialect", seed=7) == make_split(meta, "dialect", seed=7)
    assert make_split(meta, "dialect", seed=7) != make_split(meta, "dialect", seed=8)
    assert make_split(meta, "speaker", seed=7) == make_split(meta, "speaker", seed=7)
    assert make_split(meta, "speaker", seed=7) != make_split(meta, "speaker", seed=8)


@pytest.mark.parametrize("task", ["gender", "speaker"])
def test_cross_validation_test_folds_cover_each_row_once(task: str) -> None:
    meta = corpus_table()
    folds = cross_validation_splits(meta, task, folds=4, seed=0)
    assert len(folds) == 4 and folds[0] == make_split(meta, task, seed=0, folds=4)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests) == list(range(len(meta)))
    for i, fold in enumerate(folds):
        np.testing.assert_array_equal(fold.validation, folds[(i + 1) % 4].test)


def test_too_few_speakers_for_the_folds() -> None:
    with pytest.raises(
        CorpusError,
        match=r"task gender: only 4 speakers; a speaker-disjoint 5-fold split needs at least 5",
    ):
        make_split(corpus_table(speakers=4), "gender")


def test_class_from_too_few_speakers() -> None:
    meta = corpus_table(speakers=12)  # each dialect has 4 speakers
    with pytest.raises(
        CorpusError,
        match=r"class '(rp|scottish|us)' comes from 4 speakers; a speaker-disjoint 5-fold split",
    ):
        make_split(meta, "dialect")
    assert len(make_split(meta, "dialect", folds=4).test) > 0


def test_class_absent_from_a_part_after_splitting(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clumping:
        """Puts all of one class's speakers in fold 0: what an unlucky grouping can do."""

        def __init__(self, **_: object) -> None:
            pass

        def split(self, X, y, groups):
            fold = np.where(y == "male", 0, pd.Series(groups).str[1:].astype(int).to_numpy() % 5)
            for i in range(5):
                yield None, np.flatnonzero(fold == i)

    monkeypatch.setattr(splits_module, "StratifiedGroupKFold", Clumping)
    with pytest.raises(
        CorpusError,
        match=r"task gender: class 'male' has no examples in the train part of fold 0 \(seed 0\)",
    ):
        make_split(corpus_table(), "gender")


def test_speaker_with_too_few_utterances_for_within_speaker_split() -> None:
    meta = corpus_table(speakers=6, per_speaker=5)
    meta = meta[~meta["utt_id"].isin(["s004_0", "s004_1"])].reset_index(drop=True)
    with pytest.raises(
        CorpusError,
        match=r"speaker 's004' has 3 utterances; a within-speaker 5-fold split needs at least 5 per speaker",
    ):
        make_split(meta, "speaker")
    with pytest.raises(CorpusError, match="speaker 's004' has 3 utterances"):
        control_split(meta)


def test_bad_folds_and_missing_speakers() -> None:
    meta = corpus_table()
    with pytest.raises(CorpusError, match="folds must be an integer of at least 3"):
        make_split(meta, "gender", folds=2)
    with pytest.raises(CorpusError, match=r"splits need a 'speaker' column"):
        make_split(meta.drop(columns="speaker"), "gender")


# --------------------------------------------------------------------------------------- control tasks


def test_control_labels_are_constant_within_speaker_and_seeded() -> None:
    meta = corpus_table(speakers=60, per_speaker=3)
    control = control_labels(meta, "dialect", seed=0)
    assert control.dtype.kind == "U" and len(control) == len(meta)
    assert pd.Series(control).groupby(meta["speaker"]).nunique().max() == 1
    assert set(control) <= set(meta["dialect"]) and len(set(control)) > 1
    np.testing.assert_array_equal(control, control_labels(meta, "dialect", seed=0))
    assert not np.array_equal(control, control_labels(meta, "dialect", seed=1))
    # it is not the real labelling: a probe could only learn it by memorising speakers
    assert np.mean(control == task_labels(meta, "dialect")) < 0.7


def test_control_label_distribution_follows_the_real_one() -> None:
    meta = corpus_table(speakers=2000, per_speaker=1, female_share=0.7)
    share = np.mean(control_labels(meta, "gender", seed=5) == "female")
    assert abs(share - 0.7) < 0.05


def test_control_labels_always_have_two_classes() -> None:
    meta = corpus_table(speakers=2, per_speaker=5)
    for seed in range(30):
        assert len(set(control_labels(meta, "gender", seed=seed))) == 2


def test_control_split_shares_speakers_between_parts() -> None:
    meta = corpus_table(speakers=10, per_speaker=5)
    split = control_split(meta, seed=2)
    assert_partition(meta, split)
    for part in split.parts().values():
        assert speakers_of(meta, part) == set(meta["speaker"])
    assert split == control_split(meta, seed=2) and split != control_split(meta, seed=3)
