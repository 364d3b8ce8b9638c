"""speechprobe.threads: torch takes only the cores other processes leave free (a thread beyond them stalls
every op: 2.6x slower extraction with one busy neighbour on 2 cores)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.extraction import ExtractionModule, extract
from speechprobe.tasks.corpus import load_corpus
from speechprobe.threads import ENV, available_cores, cgroup_cores, cpu_threads, others_running
from tests.encoders.toy import ToyEncoder

HAS_PROC = Path("/proc/loadavg").is_file() and Path("/proc/self/task").is_dir()
SPIN = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"


@contextmanager
def busy_neighbours(count: int) -> Iterator[None]:
    """`count` other processes each keeping one core busy (for at most a minute, whatever happens here)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        time.sleep(0.5)  # started and spinning
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_a_containers_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    """cgroup v2 and v1 quotas in cores, rounded up; no quota, or unreadable files, is None."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cores(v2) == 2
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cores(v2) is None
    (v2 / "cpu.max").write_text("garbage\n")
    assert cgroup_cores(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cores(v1) == 4
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cores(v1) is None and cgroup_cores(tmp_path / "none") is None
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


def test_the_variable_fixes_the_count_and_a_bad_value_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "3")
    assert cpu_threads() == (3, f"{ENV}=3")
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=ENV):
            cpu_threads()


@pytest.mark.skipif(not HAS_PROC or available_cores() < 2, reason="needs /proc and at least 2 cores")
def test_busy_cores_are_left_to_their_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a spinning process on every core, one thread; the share never exceeds cores // processes."""
    monkeypatch.delenv(ENV, raising=False)
    cores = available_cores()
    assert cpu_threads(processes=cores)[0] == 1
    assert 1 <= cpu_threads()[0] <= cores
    with busy_neighbours(cores):
        assert others_running() >= cores
        threads, why = cpu_threads()
    assert threads == 1 and "other processes keep" in why


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_this_processs_own_running_threads_are_not_others() -> None:
    """A matrix product on torch's threads keeps this process's threads runnable; they are not counted."""
    import threading

    stop = threading.Event()

    def work() -> None:
        a = torch.randn(512, 512)
        while not stop.is_set():
            a @ a

    with busy_neighbours(1):
        baseline = min(others_running() for _ in range(3))
        worker = threading.Thread(target=work)
        worker.start()
        try:
            time.sleep(0.2)
            during = min(others_running() for _ in range(3))
        finally:
            stop.set()
            worker.join()
    assert baseline >= 1 and during <= baseline + 1  # (+1: a neighbour of the machine's may wake meanwhile)


def _small_corpus(tiny_corpus: Path, folder: Path) -> Path:
    metadata = pd.read_csv(tiny_corpus / "metadata.csv").head(4)
    metadata = metadata.assign(file_name=[str((tiny_corpus / name).resolve()) for name in metadata["file_name"]])
    folder.mkdir()
    metadata.to_csv(folder / "subset.csv", index=False)  # a CSV corpus may point at files anywhere
    return folder / "subset.csv"


@pytest.mark.skipif(not HAS_PROC or available_cores() < 2, reason="needs /proc and at least 2 cores")
def test_extraction_says_when_it_takes_fewer_threads_and_gives_the_same_store(
        tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv(ENV, raising=False)
    corpus = load_corpus(_small_corpus(tiny_corpus, tmp_path / "corpus"))
    used: list[int] = []
    start = ExtractionModule.on_predict_start
    monkeypatch.setattr(ExtractionModule, "on_predict_start",
                        lambda self: (start(self), used.append(torch.get_num_threads())))
    threads = torch.get_num_threads()
    try:
        with busy_neighbours(available_cores()):
            busy = extract(corpus, ToyEncoder(), tmp_path / "busy", batch_size=2, progress=True)
        err = capsys.readouterr().err
        assert used == [1] and "extracting on 1 thread per process: other processes keep" in err and ENV in err
        monkeypatch.setenv(ENV, "2")
        fixed = extract(corpus, ToyEncoder(), tmp_path / "fixed", batch_size=2, progress=True)
        assert used == [1, 2] and "extracting on" not in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    from speechprobe.encoders.store import RepresentationStore

    a, b = RepresentationStore(busy.path), RepresentationStore(fixed.path)
    for layer in a.layer_names:
        np.testing.assert_allclose(a.layer(layer)[:], b.layer(layer)[:], rtol=1e-5, atol=1e-6)


def test_a_bad_thread_count_fails_the_extraction_in_one_line(tiny_corpus: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = load_corpus(_small_corpus(tiny_corpus, tmp_path / "corpus"))
    monkeypatch.setenv(ENV, "many")
    with pytest.raises(EncoderError, match=f"{ENV}='many'"):
        extract(corpus, ToyEncoder(), tmp_path / "store", batch_size=2, progress=False, accelerator="cpu")
    assert not (tmp_path / "store" / "manifest.json").exists()
