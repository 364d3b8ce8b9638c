from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import speechprobe.encoders.extraction as extraction
from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.extraction import extract
from speechprobe.encoders.store import RepresentationStore
from speechprobe.tasks.corpus import load_corpus
from speechprobe.tasks.errors import CorpusError
from tests.encoders.toy import ToyEncoder


@pytest.fixture()
def corpus(tiny_corpus: Path):
    return load_corpus(tiny_corpus)


def test_store_holds_every_layer_and_the_labels(corpus, tmp_path: Path) -> None:
    result = extract(corpus, ToyEncoder(), tmp_path / "store", batch_size=8, progress=False)
    assert not result.reused and result.is_main_process
    store = RepresentationStore(tmp_path / "store")
    assert store.layer_names == ["frames", "hidden"] and store.layer_dims == [8, 5]
    assert len(store) == len(corpus) == 40
    assert list(store.index["utt_id"]) == list(corpus.metadata["utt_id"])
    assert {"speaker", "gender", "dialect", "channel"} <= set(store.index.columns)
    hidden = store.layer("hidden")
    assert isinstance(hidden, np.memmap) and hidden.shape == (40, 5) and np.isfinite(hidden).all()
    assert np.array_equal(store.layer(-1), hidden) and np.array_equal(store.layer("0"), store.layer("frames"))
    assert not (tmp_path / "store" / "shards").exists() and not (tmp_path / "store" / "extraction.json").exists()
    assert "hidden" in store.describe() and "toy" in store.describe()


def test_loading_one_layer_never_reads_the_others(corpus, tmp_path: Path) -> None:
    extract(corpus, ToyEncoder(), tmp_path / "store", progress=False)
    store = RepresentationStore(tmp_path / "store")  # opening checks every layer's header, reads no values
    (tmp_path / "store" / "layers" / "frames.npy").unlink()
    assert store.layer("hidden").shape == (40, 5)


def test_vectors_do_not_depend_on_the_batch(corpus, tmp_path: Path) -> None:
    one = extract(corpus, ToyEncoder(), tmp_path / "b1", batch_size=1, progress=False)
    many = extract(corpus, ToyEncoder(), tmp_path / "b16", batch_size=16, progress=False)
    for layer in ("frames", "hidden"):
        a, b = RepresentationStore(one.path).layer(layer), RepresentationStore(many.path).layer(layer)
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_meanstd_and_float16(corpus, tmp_path: Path) -> None:
    extract(corpus, ToyEncoder(), tmp_path / "s", pooling="meanstd", dtype="float16", layers=["hidden"], progress=False)
    store = RepresentationStore(tmp_path / "s")
    assert store.layer_names == ["hidden"] and store.layer("hidden").dtype == np.float16
    assert store.layer("hidden").shape == (40, 10) and (np.asarray(store.layer("hidden"))[:, 5:] >= 0).all()


def test_same_settings_hit_the_cache_without_a_forward_pass(corpus, tmp_path: Path) -> None:
    extract(corpus, ToyEncoder(), tmp_path / "store", progress=False)
    encoder = ToyEncoder()
    result = extract(corpus, encoder, tmp_path / "store", progress=False)
    assert result.reused and encoder.calls == 0


@pytest.mark.parametrize("change", ["pooling", "weights"])
def test_changed_settings_never_reuse_a_stale_store(corpus, tmp_path: Path, change: str) -> None:
    extract(corpus, ToyEncoder(), tmp_path / "store", progress=False)
    before = (tmp_path / "store" / "manifest.json").read_bytes()
    kwargs = {"pooling": "max"} if change == "pooling" else {}
    encoder = ToyEncoder(seed=1 if change == "weights" else 0)
    with pytest.raises(EncoderError, match="already holds a different store"):
        extract(corpus, encoder, tmp_path / "store", progress=False, **kwargs)
    assert (tmp_path / "store" / "manifest.json").read_bytes() == before


def test_a_killed_extraction_resumes_without_redoing_committed_shards(corpus, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    reference = extract(corpus, ToyEncoder(), tmp_path / "reference", batch_size=8, progress=False)
    commit = extraction.StoreWriter.commit_shard
    committed = []

    def dying_commit(self, indices, arrays):
        if len(committed) == 2:
            raise RuntimeError("simulated kill")  # killed between two shards
        committed.append(len(indices))
        return commit(self, indices, arrays)

    monkeypatch.setattr(extraction.StoreWriter, "commit_shard", dying_commit)
    with pytest.raises(RuntimeError, match="simulated kill"):
        extract(corpus, ToyEncoder(), tmp_path / "store", batch_size=8, progress=False)
    monkeypatch.setattr(extraction.StoreWriter, "commit_shard", commit)
    assert not (tmp_path / "store" / "manifest.json").exists()
    with pytest.raises(EncoderError, match="unfinished"):
        RepresentationStore(tmp_path / "store")
    (tmp_path / "store" / "shards" / ".tmp-half-written.npz").write_bytes(b"garbage")  # a kill mid-write

    encoder = ToyEncoder()
    result = extract(corpus, encoder, tmp_path / "store", batch_size=8, progress=False)
    assert not result.reused
    assert encoder.rows_seen == len(corpus) - sum(committed)
    for layer in ("frames", "hidden"):
        assert np.array_equal(RepresentationStore(result.path).layer(layer),
                              RepresentationStore(reference.path).layer(layer))


def test_a_corrupt_shard_is_redone(corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer_finalize = extraction.StoreWriter.finalize
    monkeypatch.setattr(extraction.StoreWriter, "finalize", lambda *a, **k: None)  # stop before assembly
    extract(corpus, ToyEncoder(), tmp_path / "store", batch_size=8, progress=False)
    monkeypatch.setattr(extraction.StoreWriter, "finalize", writer_finalize)
    shard = sorted((tmp_path / "store" / "shards").glob("*.npz"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    encoder = ToyEncoder()
    extract(corpus, encoder, tmp_path / "store", batch_size=8, progress=False)
    assert encoder.rows_seen == 8
    assert RepresentationStore(tmp_path / "store").layer("hidden").shape == (40, 5)


def test_audio_shorter_than_the_receptive_field_fails_before_any_compute(corpus, tmp_path: Path) -> None:
    encoder = ToyEncoder()
    encoder.min_samples = 16000 * 60
    with pytest.raises(EncoderError, match=r"spk\d+-\d+: .* shorter than toy's receptive field"):
        extract(corpus, encoder, tmp_path / "store", progress=False)
    assert encoder.calls == 0


def test_a_bad_audio_file_is_named(tiny_corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, copy)
    victim = sorted((copy / "audio").rglob("*.wav"))[5]
    sf.write(victim, np.zeros(int(16000 * 3), dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(CorpusError, match=f"{victim.name}: silent audio"):
        extract(load_corpus(copy), ToyEncoder(), tmp_path / "store", progress=False)


def test_unknown_layer_pooling_and_folder_are_refused(corpus, tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="no layer 'block9'; layers: frames, hidden"):
        extract(corpus, ToyEncoder(), tmp_path / "a", layers=["block9"], progress=False)
    with pytest.raises(EncoderError, match="unknown pooling"):
        extract(corpus, ToyEncoder(), tmp_path / "a", pooling="median", progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EncoderError, match="not a representation store"):
        extract(corpus, ToyEncoder(), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_out_of_memory_suggests_a_smaller_batch(corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    encoder = ToyEncoder()

    def exhausted(waves, lengths):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(encoder, "forward", exhausted)
    with pytest.raises(EncoderError, match="out of memory on a batch of 16 .* try a smaller --batch-size"):
        extract(corpus, encoder, tmp_path / "store", batch_size=16, progress=False)
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_an_8khz_corpus_is_resampled_on_the_device(tiny_corpus: Path, tmp_path: Path) -> None:
    """The same band-limited audio stored at 8 kHz and at 16 kHz gives the same vectors."""
    import pandas as pd
    from scipy import signal

    metadata = pd.read_csv(tiny_corpus / "metadata.csv").head(12)
    for rate in (8000, 16000):
        folder = tmp_path / f"c{rate}"
        for name in metadata["file_name"]:
            wave, _ = sf.read(tiny_corpus / name, dtype="float32")
            narrow = signal.resample_poly(wave, 1, 2)
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / name, narrow if rate == 8000 else signal.resample_poly(narrow, 2, 1), rate,
                     subtype="FLOAT")
        metadata.drop(columns="duration").to_csv(folder / "metadata.csv", index=False)
    stores = [extract(load_corpus(tmp_path / f"c{rate}"), ToyEncoder(), tmp_path / f"s{rate}", batch_size=4,
                      progress=False) for rate in (8000, 16000)]
    for layer in ("frames", "hidden"):
        a, b = (np.asarray(RepresentationStore(s.path).layer(layer)) for s in stores)
        assert np.abs(a - b).max() < 0.02 * np.abs(b).max(), np.abs(a - b).max() / np.abs(b).max()


def test_a_run_killed_after_its_last_shard_only_assembles(corpus, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    finalize = extraction.StoreWriter.finalize
    monkeypatch.setattr(extraction.StoreWriter, "finalize", lambda *a, **k: None)
    extract(corpus, ToyEncoder(), tmp_path / "store", progress=False)
    monkeypatch.setattr(extraction.StoreWriter, "finalize", finalize)
    encoder = ToyEncoder()
    result = extract(corpus, encoder, tmp_path / "store", progress=False)
    assert encoder.calls == 0 and not result.reused
    assert RepresentationStore(tmp_path / "store").layer("hidden").shape == (40, 5)
