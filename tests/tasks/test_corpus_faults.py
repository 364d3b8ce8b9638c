"""Issue 14 for corpora: nothing stale (fingerprints hash every byte, remembered digests are keyed by
path, inode, size, mtime and ctime), nothing lost (a truncated file is an error, not a short clip), and
no file outside an audiofolder read (path traversal, absolute paths, symlinks)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import speechprobe.tasks.corpus as corpus_module
from speechprobe.tasks.corpus import _cache_memo, load_corpus
from speechprobe.tasks.errors import CorpusError

SR = 16000


def voice(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.02 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def make_corpus(root: Path, *, speakers: int = 3, seconds: float = 1.0, duration: bool = True) -> list[Path]:
    """audio/spkNNN/x.wav plus metadata.csv; 1 s PCM_16 files (32 KB: more than the 2 x 4 KiB the old
    fingerprint read of each file)."""
    rows, paths = [], []
    for s in range(speakers):
        name = f"audio/spk{s:03d}/x.wav"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, voice(s, seconds), SR, subtype="PCM_16")
        rows.append({"file_name": name, "utt_id": f"spk{s:03d}-x", "speaker": f"spk{s:03d}"}
                    | ({"duration": seconds} if duration else {}))
        paths.append(root / name)
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return paths


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every file `Corpus.fingerprint` hashes, in order; files just written count as settled (no racy
    window), and the user's cache dir is a private one."""
    calls: list[Path] = []
    real = corpus_module._hash_file

    def counting(path: Path) -> bytes:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(corpus_module, "_hash_file", counting)
    monkeypatch.setattr(corpus_module, "RACY_WINDOW_NS", -10**12)
    monkeypatch.setenv("SPEECHPROBE_CACHE", str(tmp_path_factory.mktemp("user-cache")))
    return calls


# ------------------------------------------------------------------------------------- fingerprints


def test_same_size_overwrite_in_the_middle_changes_the_fingerprint(tmp_path: Path, hashes: list[Path]) -> None:
    paths = make_corpus(tmp_path)
    before = load_corpus(tmp_path).fingerprint()
    target, other = paths[1].read_bytes(), paths[2].read_bytes()
    assert len(target) == len(other) > 4 * 4096
    middle = slice(len(target) // 2 - 4096, len(target) // 2 + 4096)
    spliced = target[: middle.start] + other[middle] + target[middle.stop:]
    st = paths[1].stat()
    with open(paths[1], "r+b") as f:  # in place: same inode, same size
        f.write(spliced)
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))  # even the mtime put back
    assert paths[1].stat().st_size == st.st_size and paths[1].stat().st_ino == st.st_ino
    assert load_corpus(tmp_path).fingerprint() != before
    paths[1].write_bytes(target)
    assert load_corpus(tmp_path).fingerprint() == before  # content, not mtime


def test_a_rerun_hashes_no_unchanged_file(tmp_path: Path, hashes: list[Path]) -> None:
    paths = make_corpus(tmp_path)
    first = load_corpus(tmp_path).fingerprint()
    assert sorted(hashes) == sorted(paths) and _cache_memo(tmp_path).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "metadata.csv"]  # the corpus is not written to
    hashes.clear()
    assert load_corpus(tmp_path).fingerprint() == first
    assert hashes == []
    paths[0].write_bytes(paths[0].read_bytes())  # rewritten: hashed again, the others not
    assert load_corpus(tmp_path).fingerprint() == first
    assert hashes == [paths[0]]


def test_files_changed_just_before_hashing_are_not_remembered(tmp_path: Path, hashes: list[Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module, "RACY_WINDOW_NS", 2_000_000_000)
    paths = make_corpus(tmp_path)
    load_corpus(tmp_path).fingerprint()
    load_corpus(tmp_path).fingerprint()  # a same-size rewrite in the same clock tick could hide otherwise
    assert len(hashes) == 2 * len(paths)


@pytest.mark.parametrize("field", ["inode", "size", "mtime_ns", "ctime_ns"])
def test_a_memo_entry_counts_only_while_the_file_stat_matches(tmp_path: Path, hashes: list[Path],
                                                               field: str) -> None:
    paths = make_corpus(tmp_path)
    true = load_corpus(tmp_path).fingerprint()
    memo_file = _cache_memo(tmp_path)
    memo = json.loads(memo_file.read_text())
    key = os.path.abspath(paths[2])
    memo["files"][key][4] = "00" * 32  # a digest no file has: the memo is believed while the stat matches
    memo_file.write_text(json.dumps(memo))
    assert load_corpus(tmp_path).fingerprint() != true
    memo["files"][key][["inode", "size", "mtime_ns", "ctime_ns"].index(field)] += 1
    memo_file.write_text(json.dumps(memo))
    hashes.clear()
    assert load_corpus(tmp_path).fingerprint() == true
    assert hashes == [paths[2]]


def test_a_replaced_file_with_the_same_size_and_mtime_is_hashed_again(tmp_path: Path, hashes: list[Path]) -> None:
    paths = make_corpus(tmp_path)
    before = load_corpus(tmp_path).fingerprint()
    st = paths[0].stat()
    swapped = tmp_path / "swap.wav"
    sf.write(swapped, voice(7), SR, subtype="PCM_16")  # another speaker, same length
    os.utime(swapped, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(swapped, paths[0])  # new inode, same size, same mtime
    assert paths[0].stat().st_size == st.st_size and paths[0].stat().st_mtime_ns == st.st_mtime_ns
    hashes.clear()
    assert load_corpus(tmp_path).fingerprint() != before
    assert hashes == [paths[0]]


def test_a_read_only_corpus_folder_still_fingerprints(tmp_path: Path, hashes: list[Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    corpus_dir = tmp_path / "corpus"
    make_corpus(corpus_dir)
    expected = load_corpus(corpus_dir).fingerprint()
    os.chmod(corpus_dir, 0o555)
    try:
        monkeypatch.setenv("SPEECHPROBE_CACHE", str(tmp_path / "cache"))
        hashes.clear()
        assert load_corpus(corpus_dir).fingerprint() == expected
        assert len(hashes) == 3 and list((tmp_path / "cache" / "digests").glob("*.json"))
        hashes.clear()
        assert load_corpus(corpus_dir).fingerprint() == expected and hashes == []  # remembered in the cache
        (tmp_path / "not-a-folder").write_text("")
        monkeypatch.setenv("SPEECHPROBE_CACHE", str(tmp_path / "not-a-folder" / "cache"))
        assert load_corpus(corpus_dir).fingerprint() == expected  # nowhere to remember: still works
        assert sorted(p.name for p in corpus_dir.iterdir()) == ["audio", "metadata.csv"]
    finally:
        os.chmod(corpus_dir, 0o755)


def test_fingerprint_full_is_accepted_and_moot(tmp_path: Path, hashes: list[Path]) -> None:
    make_corpus(tmp_path)
    corpus = load_corpus(tmp_path)
    assert corpus.fingerprint(full=False) == corpus.fingerprint(full=True) == corpus.fingerprint()


# ---------------------------------------------------------------------------------------- truncation


def test_a_truncated_wav_is_an_error_on_load_and_in_the_check(tmp_path: Path, capsys) -> None:
    from speechprobe.experiments.cli import main

    paths = make_corpus(tmp_path, duration=False)
    sf.write(paths[1], voice(1, 4.7), SR, subtype="PCM_16")
    paths[1].write_bytes(paths[1].read_bytes()[:1024])  # the header still says 4.7 s
    corpus = load_corpus(tmp_path)
    message = f"{paths[1]}: truncated: header says 4.70 s, file holds 0.03 s"
    with pytest.raises(CorpusError) as err:
        corpus.load_audio(1, SR)
    assert str(err.value) == message
    corpus.load_audio(0, SR)  # its neighbours are fine
    assert corpus.check(SR) == [message]
    assert main(["corpus", "--check", str(tmp_path), "--quiet"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines[0] == message and "1 of 3 audio files cannot be used" in err_lines[-1]
    assert len(err_lines) == 2


def test_a_file_shorter_than_its_metadata_duration_is_truncated(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path, seconds=1.0)
    frame = pd.read_csv(tmp_path / "metadata.csv")
    frame.loc[2, "duration"] = 4.7  # the file was cut and re-saved with a consistent header
    frame.loc[0, "duration"] = 1.05  # a rounded duration is not truncation
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    corpus = load_corpus(tmp_path)
    with pytest.raises(CorpusError, match="^" + str(paths[2]) + r": truncated: metadata duration says 4\.70 s, "
                                          r"file holds 1\.00 s$"):
        corpus.load_native(2)
    assert corpus.check(SR) == [f"{paths[2]}: truncated: metadata duration says 4.70 s, file holds 1.00 s"]


# ------------------------------------------------------------------------------------ path traversal


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "home"])
def test_audio_paths_leading_out_of_the_corpus_folder_are_refused(tmp_path: Path, kind: str) -> None:
    corpus_dir = tmp_path / "corpus"
    make_corpus(corpus_dir)
    secret = tmp_path / "secret.wav"
    sf.write(secret, voice(9), SR)
    value = {"dotdot": "audio/../../secret.wav", "absolute": str(secret), "home": "~/secret.wav"}[kind]
    frame = pd.read_csv(corpus_dir / "metadata.csv")
    frame.loc[1, "file_name"] = value
    frame.to_csv(corpus_dir / "metadata.csv", index=False)
    with pytest.raises(CorpusError) as err:
        load_corpus(corpus_dir)
    message = str(err.value)
    assert f"row 1 file_name {value!r} leads outside the corpus folder" in message
    assert message.startswith(str(corpus_dir)) and "\n" not in message


def test_the_message_names_the_source_path_column(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    frame = pd.read_csv(tmp_path / "metadata.csv").rename(columns={"file_name": "path"})
    frame.loc[0, "path"] = "/etc/passwd"
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(CorpusError, match=r"row 0 path '/etc/passwd' leads outside the corpus folder \(a path "
                                          r"outside it; 1 of 3 rows\)"):
        load_corpus(tmp_path)


def test_symlinks_resolving_outside_the_corpus_folder_are_refused(tmp_path: Path) -> None:
    corpus_dir = tmp_path / "corpus"
    make_corpus(corpus_dir)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sf.write(outside / "secret.wav", voice(9), SR)
    (corpus_dir / "audio" / "inner.wav").symlink_to(corpus_dir / "audio" / "spk000" / "x.wav")  # inside: fine
    (corpus_dir / "audio" / "evil.wav").symlink_to(outside / "secret.wav")
    (corpus_dir / "audio" / "evil-dir").symlink_to(outside, target_is_directory=True)
    frame = pd.read_csv(corpus_dir / "metadata.csv")
    extra = pd.DataFrame({"file_name": ["audio/inner.wav"], "utt_id": ["inner"], "speaker": ["spk000"],
                          "duration": [1.0]})
    pd.concat([frame, extra]).to_csv(corpus_dir / "metadata.csv", index=False)
    assert len(load_corpus(corpus_dir)) == 4
    for value in ("audio/evil.wav", "audio/evil-dir/secret.wav"):
        frame.loc[2, "file_name"] = value
        frame.to_csv(corpus_dir / "metadata.csv", index=False)
        with pytest.raises(CorpusError, match=rf"row 2 file_name '{value}' leads outside the corpus folder "
                                              rf"\(a symlink resolving to {outside / 'secret.wav'}; 1 of 3 rows\)"):
            load_corpus(corpus_dir)
