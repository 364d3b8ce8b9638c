"""Store faults (issue 14): a full disk, a damaged store and layer files outside the store each end in one
EncoderError naming the file and what is wrong; nothing half-written is left and nothing damaged is read."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.extraction import extract
from speechprobe.encoders.store import RepresentationStore, StoreWriter
from speechprobe.tasks.corpus import load_corpus
from tests.encoders.toy import ToyEncoder


@pytest.fixture(scope="module")
def healthy(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("healthy") / "store"
    extract(load_corpus(tiny_corpus), ToyEncoder(), path, batch_size=8, progress=False)
    return path


@pytest.fixture()
def store(healthy: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(healthy, copy)
    return copy


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A tmpfs of 512 KiB (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Fill the disk, then give back `leave` bytes."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\1" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def _temporaries(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def test_a_full_disk_fails_cleanly_and_the_extraction_resumes(tiny_corpus: Path, healthy: Path, small_disk: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, store = load_corpus(tiny_corpus), small_disk / "store"
    prepare, finalize = StoreWriter.prepare, StoreWriter.finalize
    leave = {"bytes": 0}

    def prepare_then_fill(self):
        cached = prepare(self)
        _fill(small_disk, leave["bytes"])
        return cached

    # the disk fills before the first shard: ENOSPC used to leave an empty .tmp-*.npz and a traceback
    monkeypatch.setattr(StoreWriter, "prepare", prepare_then_fill)
    with pytest.raises(EncoderError, match=f"{store}: no space left on device while writing a shard"):
        extract(corpus, ToyEncoder(), store, batch_size=8, progress=False)
    assert _temporaries(store) == [] and list((store / "shards").iterdir()) == []
    (small_disk / "filler").unlink()

    # every shard is committed, then the disk fills with one page left: the layers no longer fit (the
    # memory-mapped assembly used to die of SIGBUS here, leaving .npy.tmp files)
    monkeypatch.setattr(StoreWriter, "prepare", prepare)
    monkeypatch.setattr(StoreWriter, "finalize", lambda *a, **k: None)
    extract(corpus, ToyEncoder(), store, batch_size=8, progress=False)
    shards = sorted((store / "shards").iterdir())
    assert len(shards) == 5
    monkeypatch.setattr(StoreWriter, "finalize", finalize)
    monkeypatch.setattr(StoreWriter, "prepare", prepare_then_fill)
    leave["bytes"] = 4096
    encoder = ToyEncoder()
    with pytest.raises(EncoderError, match=f"{store}: no space left on device while writing the layer arrays"):
        extract(corpus, encoder, store, batch_size=8, progress=False)
    assert _temporaries(store) == [] and not (store / "manifest.json").exists()
    assert list((store / "layers").glob("*.npy")) == [] and not (store / "index.csv").exists()
    assert sorted((store / "shards").iterdir()) == shards and encoder.calls == 0

    # space freed: the next run only assembles
    monkeypatch.setattr(StoreWriter, "prepare", prepare)
    (small_disk / "filler").unlink()
    encoder = ToyEncoder()
    assert not extract(corpus, encoder, store, batch_size=8, progress=False).reused and encoder.calls == 0
    for layer in ("frames", "hidden"):
        assert np.array_equal(RepresentationStore(store).layer(layer), RepresentationStore(healthy).layer(layer))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def _edit_manifest(store: Path, **changes) -> None:
    manifest = json.loads((store / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    (store / "manifest.json").write_text(json.dumps(manifest))


def _damage(store: Path, kind: str) -> None:
    hidden = store / "layers" / "hidden.npy"
    if kind == "truncated":
        hidden.write_bytes(hidden.read_bytes()[:-100])
    elif kind == "no layer_files":
        _edit_manifest(store, layer_files=None)
    elif kind == "invalid json":
        (store / "manifest.json").write_text('{"format": "speechprobe-representation-store", ')
    elif kind == "dims disagree":
        _edit_manifest(store, layer_dims=[8, 6])
    elif kind == "no index":
        (store / "index.csv").unlink()
    elif kind == "short index":
        lines = (store / "index.csv").read_text().splitlines(keepends=True)
        (store / "index.csv").write_text("".join(lines[:-1]))
    elif kind == "pickled":
        payload = np.empty((40, 5), dtype=object)
        payload[0, 0] = _Payload(store.parent / "payload-ran")
        np.save(hidden, payload, allow_pickle=True)


DAMAGE = {  # kind -> what the one line says (after the file's name)
    "truncated": r"layers/hidden.npy: truncated \(\d+ bytes, its header needs \d+\)",
    "no layer_files": r"manifest.json: no 'layer_files' entry",
    "invalid json": r"manifest.json: not valid JSON",
    "dims disagree": r"layers/hidden.npy: shape \(40, 5\), the manifest says \(40, 6\)",
    "no index": r"index.csv: missing",
    "short index": r"index.csv: 39 rows, the manifest says 40 utterances",
    "pickled": r"layers/hidden.npy: holds object values, not numbers",
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_store_is_refused_on_open_naming_the_file(store: Path, kind: str,
                                                            capsys: pytest.CaptureFixture) -> None:
    from speechprobe.experiments.cli import main

    _damage(store, kind)
    with pytest.raises(EncoderError, match=f"^{store}/{DAMAGE[kind]}"):
        RepresentationStore(store)
    from speechprobe.encoders.store import check_store

    assert any(re.match(f"{store}/{DAMAGE[kind]}", line) for line in check_store(store))
    capsys.readouterr()
    assert main(["info", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("speechprobe: error: ") and "Traceback" not in err
    assert not (store.parent / "payload-ran").exists()


def test_info_check_reads_every_value(store: Path, capsys: pytest.CaptureFixture) -> None:
    from speechprobe.encoders.store import check_store
    from speechprobe.experiments.cli import main

    assert check_store(store) == []
    assert main(["info", "--check", str(store)]) == 0
    assert "healthy" in capsys.readouterr().out
    hidden = np.load(store / "layers" / "hidden.npy", mmap_mode="r+")
    hidden[[3, 7], 1] = np.nan
    hidden.flush()
    del hidden
    RepresentationStore(store)  # opening reads no values
    problems = check_store(store)
    assert problems == [f"{store}/layers/hidden.npy: 2 rows hold NaN or infinite values (first: row 3)"]
    _damage(store, "truncated")
    (store / "index.csv").unlink()
    assert len(check_store(store)) == 2  # every problem, not the first
    assert main(["info", "--check", str(store)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{store}/layers/hidden.npy: truncated") and err[1].startswith(f"{store}/index.csv")
    assert err[-1] == f"speechprobe: error: {store}: 2 problem(s) found (listed above)"


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_layer_files_outside_the_store_are_refused(store: Path, tmp_path: Path, where: str) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(store / "layers" / "frames.npy", outside / "frames.npy")
    pointer = "../elsewhere/frames.npy" if where == "relative" else str(outside / "frames.npy")
    _edit_manifest(store, layer_files=[pointer, "layers/hidden.npy"])
    with pytest.raises(EncoderError, match="lies outside the store folder; refusing it"):
        RepresentationStore(store)
