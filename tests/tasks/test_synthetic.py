from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import stats

import speechprobe.tasks.synthetic as synthetic
from speechprobe.tasks.errors import CorpusError
from speechprobe.tasks.synthetic import PRESETS, CorpusConfig, build_corpus, config_from_args, plan_corpus

SMALL = CorpusConfig(speakers=4, utterances=1, dialects=("en-US",), channels=("clean", "telephone"))
COLUMNS = ["file_name", "utt_id", "speaker", "gender", "dialect", "channel", "text", "duration"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_corpora_whatever_the_jobs(tiny_corpus: Path, tmp_path: Path) -> None:
    again, reused = build_corpus(tmp_path / "again", PRESETS["tiny"], jobs=1, progress=False)
    assert not reused
    first, second = _files(tiny_corpus), _files(again)
    assert len(first) == 40 + 3  # wav files + metadata.csv, speakers.csv, corpus.json
    assert first == second


def test_another_seed_gives_other_audio(tmp_path: Path) -> None:
    a, _ = build_corpus(tmp_path / "a", SMALL, progress=False)
    b, _ = build_corpus(tmp_path / "b", config_from_args("default", **{**SMALL.__dict__, "seed": 1}), progress=False)
    wav_a = sorted((a / "audio").rglob("*.wav"))[0].read_bytes()
    wav_b = sorted((b / "audio").rglob("*.wav"))[0].read_bytes()
    assert wav_a != wav_b


def test_metadata_is_balanced_and_complete(tiny_corpus: Path) -> None:
    metadata = pd.read_csv(tiny_corpus / "metadata.csv")
    assert COLUMNS == list(metadata.columns[: len(COLUMNS)])
    config = PRESETS["tiny"]
    assert len(metadata) == config.speakers * config.utterances_per_speaker
    speakers = metadata.drop_duplicates("speaker")
    cells = pd.crosstab(speakers["gender"], speakers["dialect"])
    assert (cells.to_numpy() == config.speakers // (2 * len(config.dialects))).all()
    per_speaker_channel = pd.crosstab(metadata["speaker"], metadata["channel"])
    assert sorted(per_speaker_channel.columns) == sorted(config.channels)
    assert (per_speaker_channel.to_numpy() == config.utterances).all()
    assert metadata.groupby("speaker")[["gender", "dialect"]].nunique().max().max() == 1
    assert metadata["utt_id"].is_unique


def test_files_are_16khz_mono_with_the_listed_duration_and_no_digital_silence(tiny_corpus: Path) -> None:
    metadata = pd.read_csv(tiny_corpus / "metadata.csv")
    for row in metadata.itertuples():
        samples, rate = sf.read(tiny_corpus / row.file_name, dtype="int16")
        info = sf.info(tiny_corpus / row.file_name)
        assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(len(samples) / rate - row.duration) < 1e-3
        assert np.mean(samples == 0) < 0.05, row.file_name
        assert np.abs(samples[:800]).max() > 0, f"{row.file_name} starts with digital silence"
        assert 0.6 < row.duration < 12
        params = json.loads(row.channel_params)
        assert 0.1 <= params["lead_s"] <= 0.6


def test_texts_mix_shared_and_own_sentences(tiny_corpus: Path) -> None:
    metadata = pd.read_csv(tiny_corpus / "metadata.csv")
    shared = metadata[metadata["text_kind"] == "shared"]
    n_speakers = metadata["speaker"].nunique()
    assert (shared.groupby("text")["speaker"].nunique() == n_speakers).all()
    own = metadata[metadata["text_kind"] == "own"]
    assert own["text"].is_unique and len(own) > 0
    assert not set(own["text"]) & set(shared["text"])


def test_text_length_does_not_depend_on_gender_or_dialect() -> None:
    rows = [(p.voice.gender, p.voice.dialect, len(u.text.split()))
            for p in plan_corpus(PRESETS["large"]) for u in p.utterances if u.text_kind == "own"]
    frame = pd.DataFrame(rows, columns=["gender", "dialect", "words"])
    by_gender = [g["words"].to_numpy() for _, g in frame.groupby("gender")]
    by_dialect = [g["words"].to_numpy() for _, g in frame.groupby("dialect")]
    assert stats.mannwhitneyu(*by_gender).pvalue > 0.01
    assert stats.kruskal(*by_dialect).pvalue > 0.01


def test_voices_differ_by_gender_in_distribution_but_overlap() -> None:
    voices = [p.voice for p in plan_corpus(PRESETS["large"])]
    female = np.array([v.pitch_base_hz for v in voices if v.gender == "female"])
    male = np.array([v.pitch_base_hz for v in voices if v.gender == "male"])
    assert female.mean() > male.mean() + 40
    assert female.min() < male.max()  # no single pitch threshold separates them
    assert len({v.variant_text() for v in voices}) == len(voices)


def test_rebuild_reuses_the_cache_without_touching_files(tiny_corpus: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*")}
    path, reused = build_corpus(tiny_corpus, PRESETS["tiny"], progress=False)
    assert reused and path == tiny_corpus
    assert before == {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*")}


def test_a_folder_holding_another_corpus_is_refused_and_kept(tiny_corpus: Path) -> None:
    before = _files(tiny_corpus)
    other = config_from_args("tiny", seed=7)
    with pytest.raises(CorpusError, match="already holds a different corpus"):
        build_corpus(tiny_corpus, other, progress=False)
    assert _files(tiny_corpus) == before


def test_a_folder_holding_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not a speechprobe corpus"):
        build_corpus(tmp_path, SMALL, progress=False)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(speech, channel, rng):
        raise CorpusError(f"simulated failure in {channel}")

    monkeypatch.setattr(synthetic, "record", broken)
    monkeypatch.setattr(synthetic, "start_method", lambda: "fork")  # forked workers see the patch
    with pytest.raises(CorpusError, match="simulated failure"):
        build_corpus(tmp_path / "out", SMALL, progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("overrides, message", [
    ({"speakers": 10}, "multiple of 16"),
    ({"dialects": ["en-XX"]}, "unknown dialect 'en-XX'"),
    ({"channels": ["radio"]}, "unknown channel 'radio'"),
    ({"utterances": 0}, "at least 1"),
])
def test_bad_configurations_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        config_from_args("default", **overrides)


def test_unknown_preset_is_named() -> None:
    with pytest.raises(CorpusError, match="unknown preset 'huge'"):
        config_from_args("huge")


def test_workers_are_forked_only_from_a_single_threaded_process(tmp_path: Path) -> None:
    """A fork copies the locks other threads hold; with threads running, workers start from a forkserver, and the
    corpus is byte for byte the one the forked workers build."""
    import threading

    from speechprobe.tasks import synthetic

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    worker.start()
    try:
        assert synthetic.start_method() == "forkserver"
        built, _ = build_corpus(tmp_path / "threaded", SMALL, jobs=2, progress=False)
    finally:
        stop.set()
        worker.join()
    reference, _ = build_corpus(tmp_path / "reference", SMALL, jobs=1, progress=False)
    for name in ("metadata.csv", "speakers.csv"):
        assert (built / name).read_bytes() == (reference / name).read_bytes()
    first = sorted((built / "audio").rglob("*.wav"))[0]
    assert first.read_bytes() == (reference / first.relative_to(built)).read_bytes()
