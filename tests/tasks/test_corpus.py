"""Loading corpora from every kind of source, and every kind of bad input failing with one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speechprobe.tasks.audio import read_audio, resample
from speechprobe.tasks.corpus import Corpus, load_corpus
from speechprobe.tasks.errors import CorpusError

SR = 16000


def tone(freq: float = 440.0, seconds: float = 0.25, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_corpus(
    root: Path,
    *,
    speakers: int = 4,
    per_speaker: int = 3,
    sr: int = SR,
    table: str = "metadata.csv",
    drop: tuple[str, ...] = (),
) -> pd.DataFrame:
    """An audiofolder like the synthetic corpus writes: audio/<spk>/<utt>.wav plus metadata.csv."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(speakers):
        speaker = f"{s:03d}"  # leading zeros must survive loading
        (root / "audio" / speaker).mkdir(parents=True, exist_ok=True)
        for u in range(per_speaker):
            wave = tone(200 + 50 * s + 10 * u, sr=sr) + 0.01 * rng.standard_normal(int(0.25 * sr)).astype(np.float32)
            name = f"audio/{speaker}/{speaker}_{u:02d}.wav"
            sf.write(root / name, wave, sr, subtype="PCM_16")
            rows.append(
                dict(
                    file_name=name,
                    utt_id=f"{speaker}_{u:02d}",
                    speaker=speaker,
                    gender="fm"[s % 2],
                    dialect=["en-GB", "NA"][s // 2 % 2],  # "NA" is a dialect code, not a missing value
                    channel="clean",
                    text="hello there",
                    duration=0.25,
                    snr=20 + u,
                )
            )
    frame = pd.DataFrame(rows).drop(columns=list(drop))
    if table.endswith(".jsonl"):
        frame.to_json(root / table, orient="records", lines=True)
    else:
        frame.to_csv(root / table, index=False)
    return frame


# ------------------------------------------------------------------------------------------ sources


def test_audiofolder_loads_metadata_and_audio(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    corpus = load_corpus(tmp_path)
    meta = corpus.metadata
    assert isinstance(corpus, Corpus) and len(corpus) == 12 and corpus.source == str(tmp_path)
    assert isinstance(meta.index, pd.RangeIndex)
    assert {"utt_id", "speaker", "gender", "dialect", "channel", "text", "duration", "snr"} <= set(meta.columns)
    assert meta["speaker"].iloc[0] == "000" and meta["utt_id"].iloc[4] == "001_01"
    assert meta["dialect"].isna().sum() == 0 and "NA" in set(meta["dialect"])
    assert meta["duration"].dtype.kind == "f"
    wave = corpus.load_audio(5, SR)
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == SR // 4
    assert len(list(corpus.iter_audio(SR, indices=[3, 1]))) == 2
    with pytest.raises(IndexError):
        corpus.load_audio(12, SR)
    assert corpus.check(SR) == []


def test_jsonl_metadata_and_split_subfolder(tmp_path: Path) -> None:
    write_corpus(tmp_path / "train", table="metadata.jsonl")
    corpus = load_corpus(tmp_path)  # DIR/train/metadata.jsonl, like HF audiofolder splits
    assert len(corpus) == 12
    assert corpus.metadata["speaker"].iloc[0] == "000" and corpus.metadata["utt_id"].iloc[1] == "000_01"
    assert corpus.load_audio(0, SR).shape == (SR // 4,)


def test_csv_corpus_elsewhere_with_path_column_and_derived_ids(tmp_path: Path) -> None:
    data = tmp_path / "data"
    frame = write_corpus(data, drop=("utt_id",))
    frame = frame.rename(columns={"file_name": "path"})
    frame["path"] = [
        str(data / p) if i % 2 else os.path.join("..", "data", p) for i, p in enumerate(frame["path"])
    ]
    (tmp_path / "lists").mkdir()
    frame.to_csv(tmp_path / "lists" / "all.csv", index=False)
    corpus = load_corpus(tmp_path / "lists" / "all.csv")
    assert len(corpus) == 12
    assert list(corpus.metadata["utt_id"][:2]) == ["000_00", "000_01"]  # file stems
    assert np.abs(corpus.load_audio(0, SR)).max() > 0.1 and np.abs(corpus.load_audio(1, SR)).max() > 0.1


def test_derived_ids_fall_back_to_relative_paths_when_stems_collide(tmp_path: Path) -> None:
    for spk in ("a", "b"):
        (tmp_path / spk).mkdir()
        sf.write(tmp_path / spk / "001.wav", tone(), SR)
    pd.DataFrame({"file_name": ["a/001.wav", "b/001.wav"], "speaker": ["a", "b"]}).to_csv(
        tmp_path / "metadata.csv", index=False
    )
    assert list(load_corpus(tmp_path).metadata["utt_id"]) == ["a/001", "b/001"]


def test_column_mapping_renames_to_canonical_names(tmp_path: Path) -> None:
    frame = write_corpus(tmp_path)
    frame.rename(columns={"speaker": "speaker_id", "dialect": "accent"}).to_csv(tmp_path / "metadata.csv", index=False)
    corpus = load_corpus(tmp_path, columns={"speaker": "speaker_id", "dialect": "accent"})
    meta = corpus.metadata
    assert "speaker_id" not in meta.columns and "accent" not in meta.columns
    assert list(meta["speaker"]) == list(frame["speaker"]) and list(meta["dialect"]) == list(frame["dialect"])


def test_8khz_corpus_is_resampled_on_load(tmp_path: Path) -> None:
    write_corpus(tmp_path, speakers=2, per_speaker=1, sr=8000)
    sf.write(tmp_path / "audio" / "000" / "000_00.wav", tone(440.0, seconds=0.5, sr=8000), 8000)
    wave = load_corpus(tmp_path).load_audio(0, SR)
    assert len(wave) == 2 * 4000
    spectrum = np.abs(np.fft.rfft(wave))
    peak_hz = np.argmax(spectrum) * SR / len(wave)
    assert abs(peak_hz - 440.0) <= 2.0
    assert spectrum[np.fft.rfftfreq(len(wave), 1 / SR) > 4000].max() < 1e-2 * spectrum.max()


def test_read_audio_averages_channels_and_reads_bytes(tmp_path: Path) -> None:
    left = tone(300.0)
    sf.write(tmp_path / "st.wav", np.stack([left, 0.5 * left], axis=1), SR, subtype="FLOAT")
    mono = read_audio(tmp_path / "st.wav", SR)
    np.testing.assert_allclose(mono, 0.75 * left, atol=1e-6)
    from_bytes = read_audio((tmp_path / "st.wav").read_bytes(), SR)
    with open(tmp_path / "st.wav", "rb") as f:
        from_file = read_audio(f, 22050)
    np.testing.assert_array_equal(from_bytes, mono)
    assert len(from_file) == int(np.ceil(len(left) * 22050 / SR))
    assert resample(left, SR, SR) is not None and len(resample(left, SR, 8000)) == len(left) // 2


# ------------------------------------------------------------------------------- Hugging Face datasets


def _hf_dataset(tmp_path: Path, *, embed: bool):
    import datasets

    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    frame = write_corpus(wav_dir, speakers=3, per_speaker=2)
    paths = [str(wav_dir / f) for f in frame["file_name"]]
    audio = [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in paths] if embed else paths
    ds = datasets.Dataset.from_dict(
        {"audio": audio, "speaker_id": list(frame["speaker"]), "gender": list(frame["gender"])}
    ).cast_column("audio", datasets.Audio())
    return ds, frame, paths


def test_hf_save_to_disk_dataset(tmp_path: Path) -> None:
    import shutil

    ds, frame, paths = _hf_dataset(tmp_path, embed=False)
    expected = sf.read(paths[3], dtype="float32")[0]
    ds.save_to_disk(tmp_path / "saved")
    shutil.rmtree(tmp_path / "wavs")  # save_to_disk embedded the bytes: the originals are not needed
    corpus = load_corpus(tmp_path / "saved", columns={"speaker": "speaker_id"})
    assert list(corpus.metadata.columns) == ["utt_id", "gender", "speaker"]
    assert list(corpus.metadata["speaker"]) == list(frame["speaker"])
    assert corpus.metadata["utt_id"].iloc[3] == "001_01"  # from the embedded file name
    np.testing.assert_allclose(corpus.load_audio(3, SR), expected, atol=1e-6)
    assert corpus.check(SR) == []
    assert corpus.fingerprint() == load_corpus(tmp_path / "saved", columns={"speaker": "speaker_id"}).fingerprint()


def test_hf_parquet_folder_via_load_dataset(tmp_path: Path) -> None:
    ds, frame, paths = _hf_dataset(tmp_path, embed=True)
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "train.parquet"))
    corpus = load_corpus(tmp_path / "pq", columns={"speaker": "speaker_id"})
    assert list(corpus.metadata["gender"]) == list(frame["gender"])
    assert len(corpus) == 6 and corpus.metadata["speaker"].iloc[5] == "002"
    np.testing.assert_allclose(corpus.load_audio(5, SR), sf.read(paths[5], dtype="float32")[0], atol=1e-6)
    with pytest.raises(CorpusError, match=r"pq: cannot load as a corpus .*split"):
        load_corpus(tmp_path / "pq", split="test")


def test_hf_string_path_column_resolved_against_dataset_folder(tmp_path: Path) -> None:
    import datasets

    saved = tmp_path / "saved"
    write_corpus(saved, speakers=2, per_speaker=2)
    frame = pd.read_csv(saved / "metadata.csv", dtype=str)
    (saved / "metadata.csv").unlink()
    ds = datasets.Dataset.from_dict({"wav": list(frame["file_name"]), "speaker": list(frame["speaker"])})
    ds.save_to_disk(saved)
    corpus = load_corpus(saved, audio_column="wav")
    assert corpus.load_audio(2, SR).shape == (SR // 4,)
    with pytest.raises(CorpusError, match="no datasets.Audio column; pass audio_column="):
        load_corpus(saved)
    (saved / frame["file_name"].iloc[1]).unlink()
    with pytest.raises(CorpusError, match=r"000_01.wav is missing \(1 of 4 audio files missing\)"):
        load_corpus(saved, audio_column="wav")


# -------------------------------------------------------------------------------------- bad input


def test_missing_audio_file_is_found_at_load_time(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    for name in ("001_02", "003_00"):
        (tmp_path / "audio" / name[:3] / f"{name}.wav").unlink()
    with pytest.raises(CorpusError, match=r"audio/001/001_02\.wav is missing \(2 of 12 audio files missing\)"):
        load_corpus(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not audio at all" * 10, "cannot decode audio"),
        (b"", "empty file"),
        ("zero-frames", "empty audio"),
        ("silent", "silent audio"),
        ("nan", "NaN or Inf"),
    ],
)
def test_bad_audio_is_reported_with_the_file_name(tmp_path: Path, content, message: str) -> None:
    write_corpus(tmp_path)
    bad = tmp_path / "audio" / "002" / "002_01.wav"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    elif content == "zero-frames":
        sf.write(bad, np.zeros(0, np.float32), SR)
    elif content == "silent":
        sf.write(bad, np.zeros(SR // 4, np.float32), SR)
    else:
        wave = tone()
        wave[10] = np.nan
        sf.write(bad, wave, SR, subtype="FLOAT")
    corpus = load_corpus(tmp_path)  # existence is all load time checks
    problems = corpus.check(SR)
    assert len(problems) == 1 and str(bad) in problems[0] and message in problems[0]
    assert "\n" not in problems[0]
    with pytest.raises(CorpusError, match=message):
        corpus.load_audio(7, SR)
    corpus.load_audio(6, SR)  # the neighbours are fine


def test_read_audio_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nowhere\.wav: no such audio file$"):
        read_audio(tmp_path / "nowhere.wav", SR)
    with pytest.raises(CorpusError, match=r"^clip 7: cannot decode"):
        read_audio(b"garbage bytes", SR, name="clip 7")


def test_mapped_column_that_does_not_exist(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    with pytest.raises(CorpusError, match=r"no column 'accent' to map to 'dialect' \(columns: file_name, utt_id"):
        load_corpus(tmp_path, columns={"dialect": "accent"})


def test_duplicate_utt_id(tmp_path: Path) -> None:
    frame = write_corpus(tmp_path)
    frame.loc[5, "utt_id"] = frame.loc[2, "utt_id"]
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(CorpusError, match=r"utt_id '000_02' appears 2 times"):
        load_corpus(tmp_path)


def test_empty_corpus(tmp_path: Path) -> None:
    write_corpus(tmp_path).iloc[:0].to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(CorpusError, match="empty corpus"):
        load_corpus(tmp_path)


def test_sources_that_are_not_corpora(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nope: no such corpus"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(CorpusError, match=r"no such corpus"):
        load_corpus(str(tmp_path / "missing.csv"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CorpusError, match=r"notes\.txt: not a corpus"):
        load_corpus(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty: cannot load as a corpus") as err:
        load_corpus(tmp_path / "empty")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_content_not_mtime(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    first = load_corpus(tmp_path).fingerprint()
    assert len(first) == 16 and first == load_corpus(tmp_path).fingerprint()
    target = tmp_path / "audio" / "001" / "001_00.wav"
    data = target.read_bytes()
    target.write_bytes(data)  # byte-identical rebuild
    os.utime(target, (1, 1))
    assert load_corpus(tmp_path).fingerprint() == first
    wave, _ = sf.read(target, dtype="float32")
    sf.write(target, 0.5 * wave, SR, subtype="PCM_16")
    assert load_corpus(tmp_path).fingerprint() != first
    relabelled = load_corpus(tmp_path)
    relabelled.metadata.loc[0, "gender"] = "x"
    assert relabelled.fingerprint() != load_corpus(tmp_path).fingerprint()
