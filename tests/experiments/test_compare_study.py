"""The checkpoint comparison (`speechprobe compare`, the config's ``compare`` section) on the tiny corpus: GE2E
against its random-weights twin end to end beside a sweep that shares its probe units (a rerun reuses every
unit); two saved copies of one tiny wav2vec2 model (change exactly 0, CKA 1, the same probes); two architectures
refused before any work; the CLI's flags.

Kept small (two tasks, three folds, 15 epochs, two grid points, one torch thread)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.experiments.cli_runner import run_cli as _run

FAST_PROBES = {"folds": 3, "max_epochs": 15, "n_resamples": 200, "grid": [[0.0, 0.0], [0.001, 0.001]]}
GE2E_LAYERS = ["lstm1", "lstm2", "lstm3", "embedding"]


def _config(tiny_corpus: Path, root: Path, compare: dict, **more) -> Path:
    data = {"name": "tiny-compare", "corpus": str(tiny_corpus), "stores": str(root / "stores"),
            "out": str(root / "run"), "logger": ["csv"], "probe": FAST_PROBES, "compare": compare, **more}
    path = root / "compare.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def ge2e_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory, one_thread):
    root = tmp_path_factory.mktemp("compare-ge2e")
    # a sweep of GE2E (and, by default, its random twin) on gender in the same run: compare reads its units
    config = _config(tiny_corpus, root, {"encoders": ["ge2e", "random:ge2e"], "tasks": ["gender", "channel"]},
                     sweep={"encoders": ["ge2e"], "tasks": ["gender"]})
    code, out, err = _run(["run", str(config)])
    assert code == 0, err
    return root, config, json.loads((root / "run" / "results.json").read_text())


def test_ge2e_against_its_random_twin(ge2e_run):
    root, _, results = ge2e_run
    result = results["compare"]
    assert (result["encoder_a"], result["encoder_b"]) == ("ge2e", "random:ge2e")
    assert result["n_utterances"] == results["corpus"]["utterances"] == 40
    assert [row["layer"] for row in result["layers"]] == GE2E_LAYERS
    for row in result["layers"]:
        # trained weights against their initialisation: W_B - W_A is about -W_A
        assert 0.9 < row["relative"] < 1.1, row
        assert row["n_parameters"] > 0 and row["norm_a"] > 0 and row["change"] > 0
        assert 0.0 <= row["cka"] < 0.999, row
    assert result["unassigned"] is None  # every GE2E parameter computes a layer
    assert [task["task"] for task in result["tasks"]] == ["gender", "channel"]
    for task in result["tasks"]:
        assert [row["layer"] for row in task["layers"]] == GE2E_LAYERS
        assert task["best_layer_a"] in GE2E_LAYERS and task["best_layer_b"] in GE2E_LAYERS
        for row in task["layers"]:
            for side in ("a", "b"):
                acc = row[side]
                assert 0.0 <= acc["low"] <= acc["value"] <= acc["high"] <= 1.0
            assert row["difference"] == pytest.approx(row["b"]["value"] - row["a"]["value"])
            assert row["overlap"] == (row["a"]["low"] <= row["b"]["high"] and row["b"]["low"] <= row["a"]["high"])
            assert 0.0 < row["majority_a"] == row["majority_b"] < 1.0
    # the accuracies are the sweep's own units, computed once for both studies
    sweep = {(r["encoder"], r["task"]): r for r in results["sweep"]["results"]}
    gender = result["tasks"][0]
    for side, encoder in (("a", "ge2e"), ("b", "random:ge2e")):
        assert [row[side]["value"] for row in gender["layers"]] == \
            [s["accuracy"]["value"] for s in sweep[(encoder, "gender")]["layers"]]
    computed = results["units_computed"]
    assert sorted(computed) == sorted(["sweep/ge2e/gender", "sweep/random-ge2e/gender", "sweep/ge2e/channel",
                                       "sweep/random-ge2e/channel", "compare/ge2e--random-ge2e"])


def test_the_figure_and_the_report_section(ge2e_run):
    root, _, results = ge2e_run
    figure = root / "run" / "figures" / "compare_ge2e_vs_random-ge2e.png"
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (root / "run" / "report.md").read_text()
    assert "## Checkpoint comparison: ge2e (A) vs random:ge2e (B)" in report
    assert "figures/compare_ge2e_vs_random-ge2e.png" in report
    section = report.split("## Checkpoint comparison")[1]
    top = max(results["compare"]["layers"], key=lambda row: row["relative"])
    low = min(results["compare"]["layers"], key=lambda row: row["cka"])
    assert f"they moved most at {top['layer']} ({top['relative']:.2f}" in section  # about 1: two decimals
    assert f"they diverge most at {low['layer']} ({low['cka']:.3f}" in section
    assert "identical checkpoints: 0" in section and "identical representations: 1" in section
    assert "**gender**" in section and "**channel**" in section and "majority baseline" in section
    assert (root / "run" / "logs" / "csv" / "tables" / "compare_layers.csv").is_file()


def test_a_rerun_reuses_every_unit(ge2e_run):
    root, config, results = ge2e_run
    code, _, err = _run(["run", str(config), "--quiet"])
    assert code == 0, err
    again = json.loads((root / "run" / "results.json").read_text())
    assert again["units_computed"] == []
    assert again["compare"]["layers"] == results["compare"]["layers"]


def _tiny_wav2vec2(folder: Path, hidden: int = 32) -> str:
    """A tiny random wav2vec2 saved as a folder (20 ms frames from a three-layer conv stack): its hf: name."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(3)
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return f"hf:{folder}"


def test_identical_checkpoints(tiny_corpus: Path, tmp_path: Path, one_thread):
    import shutil

    a = _tiny_wav2vec2(tmp_path / "model-a")
    shutil.copytree(tmp_path / "model-a", tmp_path / "model-b")
    b = f"hf:{tmp_path / 'model-b'}"
    config = _config(tiny_corpus, tmp_path, {"encoders": [a, b], "tasks": ["gender"]})
    code, _, err = _run(["run", str(config), "--quiet"])
    assert code == 0, err
    result = json.loads((tmp_path / "run" / "results.json").read_text())["compare"]
    assert [row["layer"] for row in result["layers"]] == ["features", "block1", "block2"]
    for row in result["layers"]:
        assert row["relative"] == 0.0 and row["change"] == 0.0 and row["norm_a"] > 0
        assert abs(row["cka"] - 1.0) <= 1e-6
    # the same vectors give the same probes
    for row in result["tasks"][0]["layers"]:
        assert row["a"] == row["b"] and row["difference"] == 0.0 and row["overlap"] is True
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Every layer's weights are bit-identical." in report
    assert "overlap at every layer" in report


def test_two_architectures_are_refused_before_any_work(tiny_corpus: Path, tmp_path: Path):
    narrow = _tiny_wav2vec2(tmp_path / "narrow", hidden=32)
    wide = _tiny_wav2vec2(tmp_path / "wide", hidden=48)
    code, _, err = _run(["compare", "--corpus", str(tiny_corpus), "--encoder", narrow, "--encoder", wide,
                         "--tasks", "gender", "--folds", "3", "--stores", str(tmp_path / "stores"),
                         "--out", str(tmp_path / "run"), "--logger", "none"])
    lines = [line for line in err.splitlines() if line.startswith("speechprobe:")]  # not transformers' loading bars
    assert code == 2 and len(lines) == 1, err
    assert "are not one architecture" in lines[0] and "has shape" in lines[0] and "32" in lines[0] and "48" in lines[0]
    assert not (tmp_path / "stores").exists() and not (tmp_path / "run").exists()
    config = _config(tiny_corpus, tmp_path, {"encoders": ["ge2e", "whisper-tiny.en-fast"]})
    code, _, err = _run(["run", str(config)])
    assert code == 2 and err.strip().splitlines() == [
        "speechprobe: error: weight changes: ge2e (A) and whisper-tiny.en-fast (B) are not one architecture: "
        "layer 1 is 'lstm1' in A, 'conv' in B"], err
    assert not (tmp_path / "stores").exists() and not (tmp_path / "run").exists()


def test_cli_builds_the_compare_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from speechprobe.experiments import execute as execute_module

    seen = {}
    monkeypatch.setattr(execute_module, "execute", lambda config, quiet=False: seen.update(config=config))
    code, _, err = _run(["compare", "--corpus", str(tmp_path / "c"), "--encoder", "ge2e", "--encoder", "random:ge2e",
                         "--tasks", "gender", "dialect", "--out", str(tmp_path / "run"), "--max-epochs", "5",
                         "--folds", "4", "--logger", "none"])
    assert code == 0, err
    config = seen["config"]
    assert config.compare.encoders == ("ge2e", "random:ge2e") and config.compare.tasks == ("gender", "dialect")
    assert config.probe.max_epochs == 5 and config.probe.folds == 4 and config.name == "compare-ge2e-vs-random-ge2e"
    assert config.encoders() == ["ge2e", "random:ge2e"] and config.sweep is None
    code, _, err = _run(["compare", "--corpus", "c", "--encoder", "ge2e", "--encoder", "random:ge2e", "--quiet"])
    assert code == 0, err
    assert seen["config"].compare.tasks == ("speaker", "gender", "dialect", "channel")  # the default tasks
    for flags, message in ((["--encoder", "ge2e"], "exactly twice, A (the reference) then B; got 1 (ge2e)"),
                           (["--encoder", "ge2e", "--encoder", "ge2e"], "A and B are both 'ge2e'"),
                           ([], "got 0")):
        code, _, err = _run(["compare", "--corpus", "c", *flags])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("encoders, message", [
    (["ge2e"], "compare.encoders: give exactly two encoders, A (the reference) and B; got 1 (ge2e)"),
    (["ge2e", "random:ge2e", "mfcc"], "got 3"),
    (["ge2e", "ge2e"], "compare.encoders: the two encoders are both 'ge2e'"),
])
def test_the_config_section_takes_two_distinct_encoders(encoders, message):
    from speechprobe.errors import SpeechprobeError
    from speechprobe.experiments.config import parse_config

    with pytest.raises(SpeechprobeError) as raised:
        parse_config({"name": "t", "corpus": "c", "compare": {"encoders": encoders}})
    assert message in str(raised.value) and "\n" not in str(raised.value)
    config = parse_config({"name": "t", "corpus": "c", "compare": {"encoders": ["ge2e", "random:ge2e"]}})
    assert config.compare.tasks == ("speaker", "gender", "dialect", "channel")
