"""Issue 14: nothing stale served, nothing half-written left, one line and exit 2 instead of a traceback.

A small copy of the tiny corpus (16 one-second utterances) keeps the runs short: a sweep of GE2E on two tasks.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from tests.experiments.cli_runner import run_cli

PROBE = {"folds": 3, "max_epochs": 5, "n_resamples": 100, "grid": [[0.0, 0.0]], "control": False}
UNITS = ["sweep/ge2e/gender", "sweep/ge2e/dialect"]


@pytest.fixture(scope="module")
def small_corpus(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two utterances per speaker of the tiny corpus, cut to one second."""
    out = tmp_path_factory.mktemp("small") / "corpus"
    meta = pd.read_csv(tiny_corpus / "metadata.csv")
    meta = meta.groupby("speaker", sort=False).head(2).reset_index(drop=True)
    for i, row in meta.iterrows():
        wave, rate = sf.read(tiny_corpus / row.file_name, dtype="int16")
        target = out / row.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, wave[:rate], rate, subtype="PCM_16")
        meta.at[i, "duration"] = min(len(wave), rate) / rate
    meta.to_csv(out / "metadata.csv", index=False)
    return out


def _config(corpus: Path, root: Path) -> Path:
    config = {"name": "faults", "corpus": str(corpus), "stores": str(root / "stores"), "out": str(root / "run"),
              "logger": ["none"], "probe": PROBE,
              "sweep": {"encoders": ["ge2e"], "tasks": ["gender", "dialect"], "baselines": "none"}}
    path = root / "faults.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _results(root: Path) -> dict:
    return json.loads((root / "run" / "results.json").read_text())


@pytest.fixture(scope="module")
def study(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("faults")
    corpus = root / "corpus"
    shutil.copytree(small_corpus, corpus)  # its audio is changed below
    config = _config(corpus, root)
    code, _, err = run_cli(["run", str(config)])
    assert code == 0, err
    assert _results(root)["units_computed"] == UNITS
    return root, corpus, config


def test_changed_audio_re_extracts_the_store_and_recomputes_its_units(study):
    """One WAV's samples changed in place (same size): the store is extracted again and every unit that read it
    is recomputed, each saying why; then an unchanged rerun recomputes nothing and stays cheap."""
    root, corpus, config = study
    store = root / "stores" / "ge2e"
    manifest = json.loads((store / "manifest.json").read_text())
    before = np.load(store / "layers" / "embedding.npy")
    first, other = corpus / "audio" / "spk000" / "spk000-000.wav", corpus / "audio" / "spk001" / "spk001-000.wav"
    size = first.stat().st_size
    info = sf.info(first)
    wave, rate = sf.read(first, dtype="int16")
    replacement, _ = sf.read(other, dtype="int16")
    with sf.SoundFile(first, "r+") as handle:  # in place: same header, same length, other samples
        handle.seek(0)
        handle.write(np.resize(replacement, len(wave)))
    assert first.stat().st_size == size and sf.info(first).frames == info.frames

    code, _, err = run_cli(["run", str(config)])
    assert code == 0, err
    assert f"store ge2e ({store}): the corpus changed since it was extracted; extracting it again" in err
    for unit in UNITS:
        assert f"units/{unit}: recomputing (the corpus and the store ge2e changed)" in err
    assert _results(root)["units_computed"] == UNITS
    again = json.loads((store / "manifest.json").read_text())
    assert again["corpus_fingerprint"] != manifest["corpus_fingerprint"] and again["key"] != manifest["key"]
    after = np.load(store / "layers" / "embedding.npy")
    assert not np.allclose(after[0], before[0]) and np.allclose(after[1:], before[1:], atol=1e-5)
    for unit in UNITS:
        inputs = json.loads((root / "run" / "units" / unit / "inputs.json").read_text())
        assert inputs["corpus"] == again["corpus_fingerprint"] and inputs["stores"] == {"ge2e": again["key"]}

    started = time.perf_counter()
    code, _, err = run_cli(["run", str(config)])
    seconds = time.perf_counter() - started
    assert code == 0, err
    assert _results(root)["units_computed"] == [] and "recomputing" not in err and "extracting" not in err
    print(f"unchanged rerun: {seconds:.1f} s")
    assert seconds < 30


def test_only_the_units_whose_inputs_changed_are_recomputed(study):
    """A unit recorded against another store key, or with no record of its inputs, is recomputed alone."""
    root, _, config = study
    units = root / "run" / "units"
    record = units / "sweep" / "ge2e" / "dialect" / "inputs.json"
    inputs = json.loads(record.read_text())
    inputs["stores"]["ge2e"] = "0123456789abcdef"
    record.write_text(json.dumps(inputs))
    gender = json.loads((units / "sweep" / "ge2e" / "gender" / "unit.json").read_text())
    code, _, err = run_cli(["run", str(config)])
    assert code == 0, err
    assert "units/sweep/ge2e/dialect: recomputing (the store ge2e changed)" in err
    assert "gender: recomputing" not in err and _results(root)["units_computed"] == ["sweep/ge2e/dialect"]
    assert json.loads((units / "sweep" / "ge2e" / "gender" / "unit.json").read_text()) == gender
    assert json.loads(record.read_text())["stores"]["ge2e"] != "0123456789abcdef"

    (units / "sweep" / "ge2e" / "gender" / "inputs.json").unlink()  # a unit written before units were keyed
    code, _, err = run_cli(["run", str(config)])
    assert code == 0, err
    assert "units/sweep/ge2e/gender: recomputing (it has no readable inputs.json" in err
    assert _results(root)["units_computed"] == ["sweep/ge2e/gender"]
    assert not [p for p in units.rglob(".*") if p.name.startswith(".")]  # no temporary or stale folder left


@pytest.fixture
def read_only(tmp_path: Path):
    """A read-only folder: a read-only tmpfs when running as root (which ignores permissions), else chmod."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
        yield folder, "Read-only file system"
        subprocess.run(["umount", str(folder)], check=False)
    else:
        folder.chmod(0o555)
        yield folder, "Permission denied"
        folder.chmod(0o755)


@pytest.mark.parametrize("command", ["probe", "run", "extract", "corpus"])
def test_a_read_only_output_fails_in_one_line_before_any_work(study, read_only, command: str):
    root, corpus, _ = study
    folder, reason = read_only
    config = yaml.safe_load((root / "faults.yaml").read_text())
    argv = {
        "probe": ["probe", "--store", str(root / "stores" / "ge2e"), "--task", "gender", "--out", str(folder / "probe")],
        "run": ["run", str(root / "faults.yaml"), "--out", str(folder / "run")],
        "extract": ["extract", "--corpus", str(corpus), "--encoder", "ge2e", "--out", str(folder / "store")],
        "corpus": ["corpus", "--preset", "tiny", "--out", str(folder / "corpus"), "--quiet"],
    }[command]
    assert config["out"] != str(folder / "run")
    started = time.perf_counter()
    code, out, err = run_cli(argv)
    assert code == 2, err
    assert err.strip() == f"speechprobe: error: cannot write to {folder}: {reason}"
    assert time.perf_counter() - started < 5  # nothing trained, extracted or synthesised first
    assert not list(folder.iterdir())


def test_an_os_error_inside_a_command_is_one_line_naming_the_file(tiny_corpus: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """A full disk while writing (an OSError that names no file) says which file, exit 2, nothing half-written;
    --traceback shows the trace; Ctrl-C is exit 130."""
    out = tmp_path / "split.csv"

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    argv = ["split", "--corpus", str(tiny_corpus), "--task", "gender", "--folds", "3", "--out", str(out)]
    code, _, err = run_cli(argv)
    assert code == 2
    assert err.strip().splitlines()[-1] == f"speechprobe: error: {out}: No space left on device"
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
    with pytest.raises(OSError):
        run_cli(["--traceback", *argv])

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", denied)
    code, _, err = run_cli(argv)
    assert (code, err.strip()) == (2, f"speechprobe: error: {tmp_path}: Permission denied")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    code, _, err = run_cli(argv)
    assert code == 130 and "interrupted" in err and list(tmp_path.iterdir()) == []


def test_a_damaged_probe_read_by_a_command_is_one_line_exit_2(study, tiny_corpus: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    """A run's probe whose safetensors file was replaced by random bytes: the command that reads it ends in one
    line naming the file (exit 2), never a SafetensorError trace; a plain ValueError (a bug) still raises."""
    from speechprobe.probing.probe import ElasticNetProbe

    root, *_ = study
    probe = tmp_path / "probe"
    shutil.copytree(root / "run" / "units" / "sweep" / "ge2e" / "gender" / "probes" / "lstm1", probe)
    (probe / "probe.safetensors").write_bytes(os.urandom(64))
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, *args, **kwargs: ElasticNetProbe.load(probe))
    argv = ["split", "--corpus", str(tiny_corpus), "--task", "gender", "--folds", "3", "--out", str(tmp_path / "s.csv")]
    code, _, err = run_cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"speechprobe: error: {probe / 'probe.safetensors'}: not a readable safetensors file")

    def bug(self, *args, **kwargs):
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(pd.DataFrame, "to_csv", bug)
    with pytest.raises(ValueError, match="a bug"):
        run_cli(argv)


def test_a_study_revision_recomputes_that_studys_units_alone(study, monkeypatch):
    """Bumping one study's revision (its units' computation changed) recomputes its units, saying why; the
    units of other studies and an unchanged rerun are untouched."""
    from speechprobe.experiments import runner

    root, _, config = study
    monkeypatch.setitem(runner.STUDY_REVISIONS, "sweep", 7)
    code, _, err = run_cli(["run", str(config)])
    assert code == 0, err
    assert ("units/sweep/ge2e/gender: recomputing (it was written by revision 0 of the sweep study, this "
            "speechprobe writes revision 7)") in err
    assert sorted(_results(root)["units_computed"]) == sorted(UNITS)
    assert json.loads((root / "run" / "units" / UNITS[0] / "inputs.json").read_text())["revision"] == 7
    code, _, err = run_cli(["run", str(config)])
    assert code == 0 and _results(root)["units_computed"] == [] and "recomputing" not in err
    monkeypatch.setitem(runner.STUDY_REVISIONS, "audit", 3)  # another study's revision: nothing here
    code, _, err = run_cli(["run", str(config)])
    assert code == 0 and _results(root)["units_computed"] == [] and "recomputing" not in err
