from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.cli import main

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
