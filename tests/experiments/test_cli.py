from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from speechprobe.experiments.cli import main

TINY = ["--speakers", "4", "--utterances", "1", "--dialects", "en-US", "--channels", "clean", "gsm", "telephone",
        "--quiet"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("speechprobe: error: ")
    return err[0]


@pytest.mark.parametrize("command", [[], ["corpus"], ["split"]])
def test_console_script_has_help_for_every_subcommand(command: list[str]) -> None:
    script = shutil.which("speechprobe", path=str(Path(sys.executable).parent))
    assert script, "the speechprobe console script is not installed"
    result = subprocess.run([script, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "usage: speechprobe" in result.stdout


def test_corpus_build_then_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert main(["corpus", "--out", str(out), *TINY]) == 0
    assert "built corpus" in capsys.readouterr().out
    assert main(["corpus", "--out", str(out), *TINY]) == 0
    assert "reused cached corpus" in capsys.readouterr().out
    assert main(["corpus", "--summary", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "12 utterances, 4 speakers" in summary
    assert "gender    female 6 | male 6" in summary
    assert "channel   clean 4 | gsm 4 | telephone 4" in summary
    assert main(["corpus", "--check", str(out), "--quiet"]) == 0
    assert "all 12 audio files decode" in capsys.readouterr().out


def test_check_reports_a_silent_file(tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_corpus, copy)
    victim = sorted((copy / "audio").rglob("*.wav"))[3]
    import soundfile as sf
    import numpy as np

    sf.write(victim, np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    assert main(["corpus", "--check", str(copy), "--quiet"]) == 2
    captured = capsys.readouterr().err.strip().splitlines()
    assert any(victim.name in line and "silent" in line for line in captured[:-1])
    assert "1 of 40 audio files cannot be used" in captured[-1]


def test_split_writes_a_table_atomically(tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gender.csv"
    assert main(["split", "--corpus", str(tiny_corpus), "--task", "gender", "--folds", "4", "--out", str(out)]) == 0
    assert "speaker-disjoint" in capsys.readouterr().out
    table = pd.read_csv(out)
    assert len(table) == 40 and {"fold0", "fold3", "control_label", "control_part"} <= set(table.columns)
    assert (table.groupby("speaker")["fold0"].nunique() == 1).all()  # no speaker in two parts
    assert (table.groupby("speaker")["control_part"].nunique() > 1).any()  # control split shares speakers
    assert [p.name for p in tmp_path.iterdir()] == ["gender.csv"]


@pytest.mark.parametrize("argv, message", [
    (["corpus", "--out", "{tmp}/x", "--speakers", "10"], "multiple of 16"),
    (["corpus", "--out", "{tmp}/x", "--dialects", "en-XX"], "unknown dialect 'en-XX'"),
    (["corpus", "--summary", "{tmp}/missing"], "missing"),
    (["corpus"], "give --out DIR"),
    (["split", "--corpus", "{corpus}", "--task", "accent"], "unknown task 'accent'"),
    (["split", "--corpus", "{corpus}", "--task", "gender", "--folds", "9"], "gender"),
    (["split", "--corpus", "{corpus}", "--task", "gender", "--column", "oops"], "--column 'oops'"),
    (["split", "--corpus", "{corpus}", "--task", "dialect", "--column", "dialect=accent"], "accent"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv: list[str], message: str, tiny_corpus: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tmp=tmp_path, corpus=tiny_corpus) for a in argv]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_a_different_corpus_in_the_target_is_refused(tiny_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["corpus", "--out", str(tiny_corpus), *TINY]) == 2
    assert "already holds a different corpus" in _error_line(capsys)


def test_extract_then_info(tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    argv = ["extract", "--corpus", str(tiny_corpus), "--encoder", "random:wav2vec2-tiny", "--out", str(store),
            "--layers", "features", "-1", "--quiet"]
    assert main(argv) == 0
    assert "wrote store" in capsys.readouterr().out
    assert main(argv) == 0
    assert "reused cached store" in capsys.readouterr().out
    assert main(["info", str(store)]) == 0
    info = capsys.readouterr().out
    assert "random:wav2vec2-tiny" in info and "40 utterances" in info and "block2" in info and "block1 " not in info


def test_encoders_lists_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    for name in ("ge2e", "whisper-tiny.en", "crepe-tiny", "random:wav2vec2", "random:ge2e", "hf:<model id"):
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["extract", "--corpus", "{corpus}", "--encoder", "wav2vec9", "--out", "{tmp}/s"], "unknown encoder 'wav2vec9'"),
    (["extract", "--corpus", "{corpus}", "--encoder", "random:wav2vec2-tiny", "--out", "{tmp}/s",
      "--batch-size", "0"], "--batch-size and --devices must be at least 1"),
    (["extract", "--corpus", "{corpus}", "--encoder", "random:wav2vec2-tiny", "--out", "{tmp}/s",
      "--precision", "8-bit"], "unknown precision '8-bit'"),
    (["extract", "--corpus", "{tmp}/nothing", "--encoder", "ge2e", "--out", "{tmp}/s"], "no such corpus"),
    (["info", "{tmp}"], "not a representation store"),
])
def test_extract_bad_input_is_one_line(argv: list[str], message: str, tiny_corpus: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main([a.format(tmp=tmp_path, corpus=tiny_corpus) for a in argv]) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_two_cpu_processes_write_the_same_store_as_one(tiny_corpus: Path, tmp_path: Path) -> None:
    import numpy as np

    from speechprobe.encoders.store import RepresentationStore

    script = shutil.which("speechprobe", path=str(Path(sys.executable).parent))
    stores = {}
    for devices in (1, 2):
        stores[devices] = tmp_path / f"d{devices}"
        result = subprocess.run([script, "extract", "--corpus", str(tiny_corpus), "--encoder", "random:wav2vec2-tiny",
                                 "--out", str(stores[devices]), "--accelerator", "cpu", "--devices", str(devices),
                                 "--batch-size", "4", "--quiet"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    one, two = RepresentationStore(stores[1]), RepresentationStore(stores[2])
    assert one.layer_names == two.layer_names
    for layer in one.layer_names:
        assert np.allclose(one.layer(layer), two.layer(layer), rtol=1e-5, atol=1e-6)
    assert list(one.index["utt_id"]) == list(two.index["utt_id"])
