"""Extraction faults (issue 14): each ends in one exception naming the file or value, nothing half-written,
nothing stale reused, and a rerun that resumes or starts over as it should."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.extraction import extract
from speechprobe.encoders.store import RepresentationStore
from speechprobe.tasks.corpus import load_corpus
from speechprobe.tasks.errors import CorpusError
from tests.encoders.toy import ToyEncoder


def _temporaries(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def _broken_copy(tiny_corpus: Path, folder: Path) -> tuple[Path, Path]:
    """The tiny corpus with one file replaced by digital silence (a CorpusError when it is read)."""
    shutil.copytree(tiny_corpus, folder)
    victim = sorted((folder / "audio").rglob("*.wav"))[5]
    sf.write(victim, np.zeros(16000 * 3, dtype=np.int16), 16000, subtype="PCM_16")
    return folder, victim


def test_a_48khz_file_among_16khz_files_shares_a_batch(tiny_corpus: Path, tmp_path: Path) -> None:
    """Rows already at the encoder's rate used to keep the batch's padded width (set by the 48 kHz row)."""
    from scipy import signal as scipy_signal

    metadata = pd.read_csv(tiny_corpus / "metadata.csv").head(8)
    longest = metadata["duration"].idxmax()
    folder = tmp_path / "mixed"
    for row, name in enumerate(metadata["file_name"]):
        wave, rate = sf.read(tiny_corpus / name, dtype="float32")
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if row == longest:  # its padded width at 48 kHz is 3x any 16 kHz row's
            wave, rate = scipy_signal.resample_poly(wave, 3, 1).astype(np.float32), 48000
        sf.write(folder / name, wave, rate, subtype="FLOAT")
    metadata.drop(columns="duration").to_csv(folder / "metadata.csv", index=False)
    corpus = load_corpus(folder)
    together = extract(corpus, ToyEncoder(), tmp_path / "together", batch_size=8, progress=False)
    alone = extract(corpus, ToyEncoder(), tmp_path / "alone", batch_size=1, progress=False)
    for layer in ("frames", "hidden"):
        a, b = (np.asarray(RepresentationStore(r.path).layer(layer)) for r in (together, alone))
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_pickled_hf_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    from speechprobe.encoders.hf import HFEncoder, random_config

    folder, marker = tmp_path / "model", tmp_path / "payload-ran"
    model = AutoModel.from_config(random_config("wav2vec2", "tiny"))
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return os.makedirs, (str(marker),)

    torch.save({**model.state_dict(), "payload": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(EncoderError, match=f"{folder / 'pytorch_model.bin'}: refusing to load a pickled "
                                           "checkpoint; convert it to safetensors"):
        HFEncoder.from_pretrained(str(folder))
    assert not marker.exists()


def test_a_second_extraction_into_a_locked_store_fails_naming_the_holder(tiny_corpus: Path, tmp_path: Path) -> None:
    from speechprobe.encoders.store import store_lock

    corpus, store = load_corpus(tiny_corpus), tmp_path / "store"
    encoder = ToyEncoder()
    with store_lock(store):  # as a running `speechprobe extract` holds it
        with pytest.raises(EncoderError, match=rf"{store} is being written by another extraction "
                                               rf"\(pid {os.getpid()} on "):
            extract(corpus, encoder, store, batch_size=8, progress=False)
        assert encoder.calls == 0
        assert not (store / "extraction.json").exists() and not (store / "shards").exists()
    result = extract(corpus, encoder, store, batch_size=8, progress=False)  # released: it runs
    assert not result.reused and len(RepresentationStore(store)) == len(corpus)
    assert not (store / ".lock.owner").exists()


class _CtrlC(ToyEncoder):
    """Ctrl-C arriving during the third batch."""

    def forward(self, waves, lengths):
        if self.calls == 2:
            raise KeyboardInterrupt
        return super().forward(waves, lengths)


def test_ctrl_c_raises_keyboard_interrupt_and_the_shards_stay_resumable(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus, store = load_corpus(tiny_corpus), tmp_path / "store"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # Lightning turned it into a silent sys.exit(1)
        extract(corpus, _CtrlC(), store, batch_size=8, progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning leaves SIGINT ignored otherwise
    assert not (store / "manifest.json").exists() and _temporaries(store) == []
    assert len(list((store / "shards").glob("*.npz"))) == 2
    encoder = ToyEncoder()
    extract(corpus, encoder, store, batch_size=8, progress=False)
    assert encoder.rows_seen == len(corpus) - 16
    assert RepresentationStore(store).layer("hidden").shape == (len(corpus), 5)


def test_fixing_a_bad_file_starts_the_extraction_over(tiny_corpus: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    folder, victim = _broken_copy(tiny_corpus, tmp_path / "corpus")
    store = tmp_path / "store"
    with pytest.raises(CorpusError, match="silent audio"):
        extract(load_corpus(folder), ToyEncoder(), store, batch_size=8, progress=False)
    assert (store / "extraction.json").exists()
    with pytest.raises(EncoderError, match=r"unfinished extraction with other settings"):
        extract(load_corpus(folder), ToyEncoder(), store, pooling="max", progress=False)  # settings still count
    shutil.copy(tiny_corpus / victim.relative_to(folder), victim)  # fixed: the corpus changed
    capsys.readouterr()
    encoder = ToyEncoder()
    extract(load_corpus(folder), encoder, store, batch_size=8, progress=False)
    assert "the corpus changed since the unfinished extraction started; starting over" in capsys.readouterr().err
    assert encoder.rows_seen == 40  # no shard of the old corpus was kept
    reference = extract(load_corpus(tiny_corpus), ToyEncoder(), tmp_path / "reference", batch_size=8, progress=False)
    assert np.array_equal(RepresentationStore(store).layer("hidden"), RepresentationStore(reference.path).layer("hidden"))


def test_an_extraction_error_starts_a_line_of_its_own(tiny_corpus: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    folder, _ = _broken_copy(tiny_corpus, tmp_path / "corpus")
    capsys.readouterr()
    with pytest.raises(CorpusError):
        extract(load_corpus(folder), ToyEncoder(), tmp_path / "store", batch_size=8, progress=True)
    err = capsys.readouterr().err
    assert "extracting" in err and err.endswith("\n")  # the bar was closed before the error propagated
