"""`speechprobe gradnap` on the tiny corpus with a tiny random encoder: outputs, the store reused, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.experiments.cli_runner import run_cli as _run

ENCODER = "random:wav2vec2-tiny@0"
FAST = ["--max-epochs", "5", "--folds", "3", "--permutations", "99", "--quiet"]


@pytest.fixture(scope="module")
def gradnap(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("gradnap")
    code, stdout, err = _run(["gradnap", "--corpus", str(tiny_corpus), "--encoder", ENCODER, "--task", "gender",
                              "--groups", "channel", "--layers", "0", "-1", "--stores", str(root / "stores"), "--out", str(root / "out"), *FAST])
    assert code == 0, err
    return root, stdout


def test_writes_json_profiles_and_figure(gradnap):
    root, stdout = gradnap
    out = root / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gradnap.json", "gradnap.png", "profiles.npz"]
    result = json.loads((out / "gradnap.json").read_text())
    assert result["groups_column"] == "channel" and result["task"] == "gender"
    profiles = np.load(out / "profiles.npz")
    assert list(profiles["layers"]) == [layer["layer"] for layer in result["layers"]]
    for i, layer in enumerate(result["layers"]):
        P = profiles[f"layer{i}"]
        assert P.shape == (len(layer["groups"]), layer["n_neurons"]) and np.all(np.isfinite(P))
        assert layer["n_utterances"] == result["n_utterances"]  # the folds' test parts cover every utterance
        np.testing.assert_allclose(np.asarray(layer["sizes"]) @ P, 0.0, atol=1e-8)
        assert layer["permuted"] == "blocks" and 0 < layer["p_value"] <= 1 and 0 <= layer["probe_accuracy"] <= 1
        assert sorted(layer["leaves"]) == layer["groups"] == sorted(set(layer["groups"]))
    assert "most separating layer" in stdout or "no layer separates" in stdout


def test_the_store_is_reused(gradnap, tiny_corpus: Path):
    root, _ = gradnap
    store = next((root / "stores").iterdir())
    before = (store / "manifest.json").stat().st_mtime_ns
    code, _, err = _run(["gradnap", "--corpus", str(tiny_corpus), "--encoder", ENCODER, "--task", "gender",
                         "--layers", "0", "--stores", str(root / "stores"), "--out", str(root / "again"), *FAST])
    assert code == 0, err
    assert (store / "manifest.json").stat().st_mtime_ns == before
    assert [l["groups"] for l in json.loads((root / "again" / "gradnap.json").read_text())["layers"]] == [["female", "male"]]


@pytest.mark.parametrize("change, message", [
    (["--task", "accent"], "accent"),
    (["--task", "gender", "--groups", "accent"], "no label column 'accent' for --groups"),
    (["--task", "gender", "--layers", "nope"], "no layer 'nope'"),
    (["--task", "gender", "--permutations", "10"], "--permutations 10 must be at least 99"),
])
def test_bad_input_is_one_line_exit_2(gradnap, tiny_corpus: Path, tmp_path: Path, change: list, message: str):
    root, _ = gradnap
    code, _, err = _run(["gradnap", "--corpus", str(tiny_corpus), "--encoder", ENCODER, "--stores", str(root / "stores"),
                         "--out", str(tmp_path / "bad"), *change, "--quiet"])
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()


def test_the_sweep_with_gradnap_draws_the_figure_and_writes_the_subsection(gradnap, tiny_corpus: Path):
    import yaml

    root, _ = gradnap
    config = {"name": "gradnap-sweep", "corpus": str(tiny_corpus), "stores": str(root / "stores"),
              "out": str(root / "run"), "logger": ["none"],
              "probe": {"folds": 3, "max_epochs": 5, "n_resamples": 100, "grid": [[0.001, 0.001]], "control": False},
              "sweep": {"encoders": [ENCODER], "tasks": ["gender"], "baselines": "none", "gradnap": True}}
    (root / "sweep.yaml").write_text(yaml.safe_dump(config))
    code, _, err = _run(["run", str(root / "sweep.yaml"), "--quiet"])
    assert code == 0, err
    run = root / "run"
    results = json.loads((run / "results.json").read_text())
    (unit,) = results["sweep"]["gradnap"]
    sweep_unit = results["sweep"]["results"][0]
    assert [l["layer"] for l in unit["layers"]] == [l["layer"] for l in sweep_unit["layers"]]
    assert all(l["groups"] == ["female", "male"] and (l["l1"], l["l2"]) == (0.001, 0.001) for l in unit["layers"])
    assert (run / "units" / "gradnap" / "random-wav2vec2-tiny@0" / "gender" / "profiles.npz").is_file()
    assert (run / "figures" / "gradnap_random-wav2vec2-tiny-0_gender.png").is_file()
    report = (run / "report.md").read_text()
    assert "### GradNAPs" in report and "| probe accuracy |" in report and f"**{ENCODER} / gender** (2 gender groups" in report
    assert "gradnap_random-wav2vec2-tiny-0_gender.png" in report
