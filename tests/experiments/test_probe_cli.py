"""`speechprobe probe` and `speechprobe neurons` end to end on a tiny store (random:wav2vec2-tiny, 3 x 32 dims).

One store is extracted per module; a copy of it gets a planted layer whose channel label sits in five
known neurons (one per channel: +3 over N(0, 0.5) noise) and whose other neurons are constant, so that
there is something a probe must find and a ranking must put first.

Why constant and not noise: with 20 training rows (one Adam step per epoch at the probe's default
batch size 64 and lr 3e-3) every weight moves by about the same amount before early stopping, so 27
unit-noise neurons drown 5 informative ones; on such data the random-encoder layers themselves give no
reliable signal either.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.experiments.cli_runner import run_cli as _run

TASK = "channel"  # the tiny corpus has 8 speakers in all 5 channels: speaker-disjoint 5 folds work
PLANTED_LAYER = "block2"
PLANTED = [3, 7, 11, 19, 27]  # neuron j carries channel class j (sorted class order)
FAST = ["--max-epochs", "25"]  # neurons trains ~60 probes in 3 batched runs: cap them to keep the file fast


@pytest.fixture(scope="module")
def store(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe_cli") / "store"
    code, _, err = _run(["extract", "--corpus", str(tiny_corpus), "--encoder", "random:wav2vec2-tiny",
                         "--out", str(path), "--quiet"])
    assert code == 0, err
    return path


@pytest.fixture(scope="module")
def planted_store(store: Path) -> Path:
    from speechprobe.encoders.store import RepresentationStore

    path = store.parent / "planted"
    shutil.copytree(store, path)
    planted = RepresentationStore(path)
    original = planted.layer(PLANTED_LAYER)
    labels = planted.index[TASK].to_numpy(dtype=str)
    classes = np.unique(labels)
    assert len(classes) == len(PLANTED)
    X = np.zeros(original.shape)
    noise = np.random.default_rng(0).normal(scale=0.5, size=(len(labels), len(PLANTED)))
    for j, (neuron, cls) in enumerate(zip(PLANTED, classes)):
        X[:, neuron] = 3.0 * (labels == cls) + noise[:, j]
    file = path / planted.manifest["layer_files"][planted.layer_names.index(PLANTED_LAYER)]
    np.save(file, X.astype(original.dtype))
    return path


@pytest.fixture(scope="module")
def probe_run(planted_store: Path) -> tuple[Path, dict, str]:
    out = planted_store.parent / "probe-all"
    code, stdout, err = _run(["probe", "--store", str(planted_store), "--task", TASK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text()), stdout


def _store(path: Path):
    from speechprobe.encoders.store import RepresentationStore

    return RepresentationStore(path)


def _split(path: Path):
    from speechprobe.tasks.splits import make_split

    return make_split(_store(path).index, TASK, seed=0)


def _check_interval(interval: dict) -> None:
    assert 0.0 <= interval["low"] <= interval["value"] <= interval["high"] <= 1.0


# ------------------------------------------------------------------------------------------------ probe


def test_probe_scores_every_layer(probe_run: tuple[Path, dict, str], planted_store: Path) -> None:
    from speechprobe.probing.probe import ElasticNetProbe
    from speechprobe.probing.sweep import DEFAULT_GRID

    out, results, stdout = probe_run
    store = _store(planted_store)
    assert results["store"] == str(planted_store) and results["encoder"] == "random:wav2vec2-tiny"
    assert results["task"] == TASK and results["seed"] == 0 and results["n_utterances"] == len(store) == 40
    assert sum(results["split"].values()) == 40
    assert [s["layer"] for s in results["layers"]] == store.layer_names
    assert results["best_layer"] in store.layer_names
    best = max(s["validation_accuracy"] for s in results["layers"])
    assert next(s for s in results["layers"] if s["layer"] == results["best_layer"])["validation_accuracy"] == best
    split = _split(planted_store)
    labels = store.index[TASK].to_numpy(dtype=str)
    for score in results["layers"]:
        _check_interval(score["accuracy"])
        _check_interval(score["macro_f1"])
        assert (score["l1"], score["l2"]) in DEFAULT_GRID
        assert score["selectivity"] == pytest.approx(score["accuracy"]["value"] - score["control_accuracy"])
        probe = ElasticNetProbe.load(out / "probes" / score["layer"])
        assert (probe.l1, probe.l2) == (score["l1"], score["l2"])
        X = store.layer(score["layer"])
        assert probe.score(X[split.test], labels[split.test]) == pytest.approx(score["accuracy"]["value"])
        control = ElasticNetProbe.load(out / "control_probes" / score["layer"])  # control labels: a draw of classes
        assert control.coef_.shape[1] == probe.coef_.shape[1] and set(control.classes_) <= set(probe.classes_)
        assert score["layer"] in stdout
    assert f"best layer (chosen on validation accuracy {best:.3f}): {results['best_layer']}" in stdout
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_the_memory_budget_and_accelerator_reach_the_sweep(
        probe_run: tuple[Path, dict, str], planted_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import speechprobe.probing.sweep as sweep_module

    budgets = []
    real = sweep_module.layer_banks
    monkeypatch.setattr(sweep_module, "layer_banks", lambda names, size, budget: budgets.append(budget) or real(names, size, budget))
    _, results, _ = probe_run
    out = tmp_path / "small"
    code, _, err = _run(["probe", "--store", str(planted_store), "--task", TASK, "--out", str(out), "--memory", "3M",
                         "--accelerator", "cpu"])
    assert code == 0, err
    assert budgets and set(budgets) == {3 * 2**20}
    banked = json.loads((out / "results.json").read_text())
    assert banked["training_options"]["accelerator"] == "cpu"
    for a, b in zip(results["layers"], banked["layers"]):
        assert a["accuracy"] == b["accuracy"] and a["grid_validation_accuracy"] == b["grid_validation_accuracy"]


def test_the_planted_layer_is_read(probe_run: tuple[Path, dict, str]) -> None:
    """Five neurons hold the label 6 noise s.d. apart: a linear probe must beat the majority baseline there."""
    _, results, _ = probe_run
    planted = next(s for s in results["layers"] if s["layer"] == PLANTED_LAYER)
    assert planted["accuracy"]["value"] >= 0.9 > planted["majority_accuracy"]
    assert planted["validation_accuracy"] >= 0.9


def test_one_setting_for_chosen_layers(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "one"
    code, stdout, err = _run(["probe", "--store", str(store), "--task", TASK, "--out", str(out), "--layers", "block1",
                              "features", "--l1", "0.001", "--l2", "0.0001", "--no-control", "--quiet"])
    assert code == 0, err
    assert err == ""
    results = json.loads((out / "results.json").read_text())
    assert [s["layer"] for s in results["layers"]] == ["block1", "features"]
    assert results["grid"] == [[0.001, 0.0001]]
    for score in results["layers"]:
        assert (score["l1"], score["l2"]) == (0.001, 0.0001)
        assert score["control_accuracy"] is None and score["selectivity"] is None
    assert sorted(p.name for p in (out / "probes").iterdir()) == ["block1", "features"]
    assert not (out / "control_probes").exists()


def test_speaker_task_has_no_control_and_says_why(store: Path, tmp_path: Path) -> None:
    """The speaker task's control task (a random label per speaker) is speaker identity again: not trained,
    selectivity null with the reason, n/a in the printed table."""
    from speechprobe.tasks.tasks import SPEAKER_CONTROL_NOTE

    out = tmp_path / "speaker"
    code, stdout, err = _run(["probe", "--store", str(store), "--task", "speaker", "--out", str(out), "--layers",
                              "block1", "--l1", "0", "--l2", "0.0001", "--quiet", *FAST])
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["control"] is False and results["selectivity_note"] == SPEAKER_CONTROL_NOTE
    (score,) = results["layers"]
    assert score["control_accuracy"] is None and score["selectivity"] is None
    assert not (out / "control_probes").exists() and "control_probe_dirs" not in results
    row = next(line for line in stdout.splitlines() if line.startswith("block1"))
    assert row.split()[-3:-1] == ["n/a", "n/a"]
    assert f"control and selectivity n/a for speaker: {SPEAKER_CONTROL_NOTE}" in stdout


def test_grid_choice_is_from_the_grid(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    out.mkdir()  # an existing empty folder is fine
    code, _, err = _run(["probe", "--store", str(store), "--task", TASK, "--out", str(out), "--layers", "-1",
                         "--grid", "0:0, 0.01:0.001", "--no-control"])
    assert code == 0, err
    assert "probing 1 layer(s) x 2 settings" in err  # progress on stderr
    results = json.loads((out / "results.json").read_text())
    assert results["grid"] == [[0.0, 0.0], [0.01, 0.001]]
    (score,) = results["layers"]
    assert score["layer"] == "block2" and [score["l1"], score["l2"]] in results["grid"]
    assert len(score["grid_validation_accuracy"]) == 2
    assert score["validation_accuracy"] == max(score["grid_validation_accuracy"])


# ---------------------------------------------------------------------------------------------- neurons


def test_neurons_of_one_layer(planted_store: Path, tmp_path: Path) -> None:
    from speechprobe.probing.probe import ElasticNetProbe

    out = tmp_path / "neurons"
    code, stdout, err = _run(["neurons", "--store", str(planted_store), "--task", TASK, "--layer", PLANTED_LAYER,
                              "--out", str(out), "--quiet", *FAST])
    assert code == 0, err
    result = json.loads((out / "neurons.json").read_text())
    d = result["n_neurons"]
    assert d == 32 and result["layer"] == PLANTED_LAYER and result["method"] == "path"
    assert sorted(result["ranking"]) == list(range(d))
    # only the planted neurons vary, and they carry the label: the default (path) ranking must put them first
    assert set(result["ranking"][:len(PLANTED)]) == set(PLANTED)
    classes = sorted(set(_store(planted_store).index[TASK]))
    assert sorted(result["per_class"]) == classes
    assert all(sorted(order) == list(range(d)) for order in result["per_class"].values())
    m = result["minimal_subset"]
    assert 1 <= m["k"] <= d and m["neurons"] == result["ranking"][:m["k"]]
    assert m["fraction"] == pytest.approx(m["k"] / d) and m["target"] == 0.97
    assert m["reached"] and m["accuracy"] >= m["threshold"] - 1e-12
    assert m["threshold"] == pytest.approx(0.97 * m["full_accuracy"])
    ablation = result["ablation"]
    assert ablation["mode"] == result["ablation_mode"] == "mean"  # in distribution unless asked otherwise
    assert "removed by mean ablation (in distribution)" in stdout
    n_k = len(ablation["fractions"])
    for key in ("ks", "removed_top", "removed_bottom", "removed_random_mean", "kept_top", "kept_bottom",
                "kept_random_mean"):
        assert len(ablation[key]) == n_k, key
    assert all(len(row) == n_k for row in ablation["removed_random"])
    probe = ElasticNetProbe.load(out / "probe")
    assert (probe.l1, probe.l2, probe.max_epochs) == (result["l1"], result["l2"], 25)
    assert result["probe_params"]["max_epochs"] == 25
    split = _split(planted_store)
    X, y = _store(planted_store).layer(PLANTED_LAYER), _store(planted_store).index[TASK].to_numpy(dtype=str)
    assert probe.score(X[split.test], y[split.test]) == pytest.approx(result["test_accuracy"])
    assert ablation["full_accuracy"] == pytest.approx(result["test_accuracy"])
    assert f"k={m['k']} " in stdout and "top " in stdout and "random " in stdout and "bottom " in stdout


def test_neurons_of_all_layers(planted_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "all"
    code, stdout, err = _run(["neurons", "--store", str(planted_store), "--task", TASK, "--layer", "all",
                              "--method", "probeless", "--l1", "0.001", "--l2", "0", "--out", str(out), "--quiet", *FAST])
    assert code == 0, err
    result = json.loads((out / "neurons.json").read_text())
    store = _store(planted_store)
    total = sum(store.layer_dims)
    assert result["n_neurons"] == total and (result["l1"], result["l2"]) == (0.001, 0.0)
    assert sorted(result["ranking"]) == list(range(total))
    starts = {layer["name"]: layer["start"] for layer in result["layers"]}
    assert [layer["name"] for layer in result["layers"]] == store.layer_names
    for i, (layer, index) in zip(result["ranking"], result["layer_of_neuron"]):
        assert starts[layer] + index == i and 0 <= index < store.layer_dims[store.layer_names.index(layer)]
    top_k = max(1, round(0.05 * total))
    assert result["top_k"] == top_k and sum(result["top_counts"].values()) == top_k
    assert list(result["top_counts"]) == store.layer_names
    top = [tuple(pair) for pair in result["layer_of_neuron"][:top_k]]
    assert all(result["top_counts"][name] == sum(layer == name for layer, _ in top) for name in store.layer_names)
    assert "top 5 neurons by layer" in stdout


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv, message", [
    (["probe", "--store", "{store}", "--task", "accent", "--out", "{out}"], "unknown task 'accent'"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--layers", "block1", "block9"],
     "no layer 'block9'; its layers: features, block1, block2"),
    (["neurons", "--store", "{store}", "--task", TASK, "--out", "{out}", "--layer", "every"], "no layer 'every'"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--l1", "0.1"], "--l1 needs --l2"),
    (["neurons", "--store", "{store}", "--task", TASK, "--out", "{out}", "--layer", "all", "--l2", "0"],
     "--l2 needs --l1"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--l1", "0", "--l2", "0", "--grid", "0:0"],
     "not both"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--grid", "0:0,0.1"], "--grid '0.1'"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--grid", "0:-1"], "--grid '0:-1'"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--grid", "a:b"], "--grid 'a:b'"),
    (["neurons", "--store", "{store}", "--task", TASK, "--out", "{out}", "--layer", "all", "--l1", "-1", "--l2", "0"],
     "--l1 '-1'"),
    (["neurons", "--store", "{store}", "--task", TASK, "--out", "{out}", "--layer", "all", "--target", "1.5"],
     "--target '1.5'"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--max-epochs", "0"], "--max-epochs '0'"),
    (["probe", "--store", "{store}", "--task", TASK, "--out", "{out}", "--memory", "8X"], "--memory: memory budget '8X'"),
    (["neurons", "--store", "{store}", "--task", TASK, "--out", "{out}", "--layer", "all", "--memory", "1K"],
     "below 1 MiB"),
    (["probe", "--store", "{tmp}/nowhere", "--task", TASK, "--out", "{out}"], "nowhere: not a representation store"),
    (["neurons", "--store", "{tmp}/nowhere", "--task", TASK, "--out", "{out}", "--layer", "all"], "nowhere"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv: list[str], message: str, store: Path, tmp_path: Path) -> None:
    argv = [a.format(store=store, out=tmp_path / "out", tmp=tmp_path) for a in argv]
    code, stdout, err = _run(argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("speechprobe: error: ") and message in lines[0], lines[0]
    assert stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["probe", "neurons"])
def test_a_non_empty_out_is_refused(command: str, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = [command, "--store", str(store), "--task", TASK, "--out", str(out)]
    code, _, err = _run(argv + (["--layer", "all"] if command == "neurons" else []))
    assert code == 2
    assert err.strip() == f"speechprobe: error: --out {out} exists and is not empty; choose another --out or remove it"
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom speechprobe.experiments.cli import main\n"
            "for cmd in ('probe', 'neurons', 'similarity', 'gradnap', 'sweep', 'run', 'attribute'):\n"
            "    try:\n        main([cmd, '--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import on --help'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert "--store STORE" in result.stdout and "--layer LAYER" in result.stdout
    assert "--utterance ID" in result.stdout
