"""`speechprobe attribute` end to end on the tiny corpus: random-weights GE2E, a probe on lstm1, two methods."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechprobe.experiments.studies.attribution.attribute import spearman
from tests.experiments.cli_runner import run_cli as _run
from tests.experiments.test_attribution import attribution_figure_panels


@pytest.fixture(scope="module")
def probe_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attribute_cli")
    code, _, err = _run(["extract", "--corpus", str(tiny_corpus), "--encoder", "random:ge2e",
                         "--out", str(root / "store"), "--layers", "lstm1", "--quiet"])
    assert code == 0, err
    code, _, err = _run(["probe", "--store", str(root / "store"), "--task", "channel", "--out", str(root / "probe"),
                         "--no-control", "--l1", "0", "--l2", "0", "--max-epochs", "10", "--quiet"])
    assert code == 0, err
    return root / "probe" / "probes" / "lstm1"


@pytest.fixture(scope="module")
def utterance(tiny_corpus: Path) -> str:
    import pandas as pd

    return str(pd.read_csv(tiny_corpus / "metadata.csv")["utt_id"].iloc[0])


BASE = ["--encoder", "random:ge2e", "--methods", "saliency", "integrated_gradients", "--ig-steps", "4", "--quiet"]


def test_attribute_writes_maps_numbers_and_figure(probe_dir: Path, utterance: str, tmp_path: Path) -> None:
    out = tmp_path / "attr"
    code, stdout, err = _run(["attribute", *BASE, "--probe", str(probe_dir), "--utterance", utterance,
                              "--target", "telephone", "--out", str(out)])
    assert code == 0, err
    result = json.loads((out / "attribution.json").read_text())
    # the layer, store (pooling) and corpus were read from the probe's results.json and the store manifest
    assert result["layer"] == "lstm1" and result["pooling"] == "mean" and result["target"] == "telephone"
    assert result["store_probability_gap"] < 1e-4  # the model's probabilities are the probe's on the store vector
    assert set(result["methods"]) == {"saliency", "integrated_gradients"}
    assert "completeness_delta" in result["methods"]["integrated_gradients"]
    with np.load(out / "attribution.npz") as maps:
        assert maps["map_saliency"].shape == maps["features"].shape == tuple(result["feature_shape"])
        assert maps["features"].shape[1] == 40
        for method, summary in result["methods"].items():
            rho = summary["randomisation_spearman"]
            # the reported number is the rank correlation of the saved trained and randomised maps; positive,
            # as both are the same encoder's input gradients (only the probe's direction differs), and below 1:
            # the re-drawn probe changes the map (a twin that kept the trained weights gives exactly 1)
            assert rho == pytest.approx(spearman(np.abs(maps[f"map_{method}"]), np.abs(maps[f"random_{method}"])))
            assert 0 < rho < 1 and summary["real_fraction"] > 0.99
    for coloured in attribution_figure_panels(out / "attribution.png", 2):
        assert coloured.any(axis=0).sum() > 10 and coloured.any(axis=1).sum() > 10  # each method's map is overlaid
    assert "randomisation Spearman" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--utterance", "nobody-000"], "--utterance 'nobody-000' is not in"),
    (["--target", "robot"], "--target 'robot' is not a class of the probe (clean, compressed, farfield, gsm, telephone)"),
    (["--pooling", "meanstd"], "the probe takes 256 features, but layer lstm1 of random:ge2e@0 gives 512"),
    (["--methods", "lrp"], "captum's LRP has no rule for LSTM"),
    (["--layer", "block9"], "layer 'block9' is not a layer of random:ge2e@0"),
])
def test_bad_input_is_one_line_and_exit_2(probe_dir: Path, utterance: str, tmp_path: Path, extra, message) -> None:
    args = ["attribute", *BASE, "--probe", str(probe_dir), "--utterance", utterance, "--out", str(tmp_path / "x")]
    for flag in ("--utterance", "--methods"):
        if flag in extra:  # replace the flag's value(s) given above
            i = args.index(flag)
            del args[i:i + (3 if flag == "--methods" else 2)]
    code, _, err = _run([*args, *extra])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_a_probe_without_provenance_needs_layer(probe_dir: Path, utterance: str, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(probe_dir, bare)
    code, _, err = _run(["attribute", *BASE, "--probe", str(bare), "--utterance", utterance, "--out", str(tmp_path / "o")])
    assert code == 2 and "give --layer" in err, err
