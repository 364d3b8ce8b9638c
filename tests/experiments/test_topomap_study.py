"""Topographic neuron maps (`speechprobe topomap`, the config's ``topomap`` section) on the tiny corpus: GE2E on
gender and dialect at each task's best layer end to end (held-out layout quality against random placement,
stability, permutation p-values, one figure per task, the report section; a rerun reuses every unit); one layout
shared by two tasks at a named layer (computed once); the CLI's --store and its one-line errors.

Kept small (three folds, 15 epochs, two grid points, 199 permutations, one torch thread)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from tests.experiments.cli_runner import run_cli as _run

FAST_PROBES = {"folds": 3, "max_epochs": 15, "n_resamples": 200, "grid": [[0.0, 0.0], [0.001, 0.001]]}
GE2E_LAYERS = ["lstm1", "lstm2", "lstm3", "embedding"]
SECTION = {"encoders": ["ge2e"], "tasks": ["gender", "dialect"], "layer": "best", "permutations": 199}
GROUPS = {"gender": {"female", "male"}, "dialect": {"en-US", "en-GB-scotland"}}


def _data(tiny_corpus: Path, root: Path, topomap: dict, out: str = "run") -> dict:
    return {"name": "tiny-topomap", "corpus": str(tiny_corpus), "stores": str(root / "stores"),
            "out": str(root / out), "logger": ["csv"], "probe": FAST_PROBES, "topomap": topomap}


def _write(data: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _p_value(p) -> bool:
    return p is not None and 0.0 < p <= 1.0


@pytest.fixture(scope="module")
def topomap_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory, one_thread):
    root = tmp_path_factory.mktemp("topomap")
    config = _write(_data(tiny_corpus, root, SECTION), root / "topomap.yaml")
    code, out, err = _run(["run", str(config)])
    assert code == 0, err
    return root, config, json.loads((root / "run" / "results.json").read_text())


def test_maps_at_the_best_layers(topomap_run):
    root, _, results = topomap_run
    result = results["topomap"]
    assert (result["layer"], result["permutations"], result["top_fraction"]) == ("best", 199, 0.05)
    maps = result["maps"]
    assert [(m["encoder"], m["task"]) for m in maps] == [("ge2e", "gender"), ("ge2e", "dialect")]
    for m in maps:
        assert m["chosen"] == "best" and m["layer"] == m["best_layer"] and m["layer"] in GE2E_LAYERS
        assert m["n_neurons"] == 256 and m["n_utterances"] == 40
        summary = m["layout_summary"]
        rows, cols = summary["shape"]
        assert rows * cols >= 256 and len(m["layout"]["positions"]) == 256
        assert summary["split_task"] == "gender" and summary["n_train"] + summary["n_test"] < 40
        quality = summary["quality"]   # held-out utterances: the layout beats random placement there
        assert quality["gain"] > quality["random_gain"] and quality["random_gain_std"] > 0
        assert abs(quality["random_gain"]) < 0.05
        assert summary["quality_in_sample"]["n_pairs"] == quality["n_pairs"] > 0
        stability = summary["stability"]
        assert len(stability["pairs"]) == 3 and -1.0 <= stability["min"] <= stability["mean"] <= 1.0
        assert m["k"] == 13 and len(m["salient_neurons"]) == 13 == m["salient"]["n_salient"]
        assert _p_value(m["salient"]["nn_p_value"]) and m["salient"]["nn_ratio"] > 0
        assert _p_value(m["weight_moran"]["moran_p_value"])
        assert len(m["weights"]) == 256 and min(m["weights"]) >= 0
        assert m["profile_kind"] == "activation"
        assert {g["group"] for g in m["groups"]} == GROUPS[m["task"]]
        assert sum(g["size"] for g in m["groups"]) == 40
        for g in m["groups"]:
            assert len(g["profile"]) == 256 and _p_value(g["moran_p_value"]) and -1.0 <= g["moran_i"] <= 1.0
        if len(m["groups"]) == 2:   # two groups: their profiles weigh each other by size around the overall mean
            a, b = m["groups"]
            assert all(abs(a["size"] * x + b["size"] * y) < 1e-6 for x, y in zip(a["profile"], b["profile"]))
    # one layout per layer, shared by the tasks that chose it
    layers = {m["layer"] for m in maps}
    computed = results["units_computed"]
    assert sorted(u for u in computed if "/layout@" in u) == sorted(f"topomap/ge2e/layout@{layer}" for layer in layers)
    assert sorted(computed) == sorted(["sweep/ge2e/gender", "sweep/ge2e/dialect",
                                       *(f"topomap/ge2e/layout@{layer}" for layer in layers),
                                       *(f"topomap/ge2e/{m['task']}/{m['layer']}" for m in maps)])


def test_the_figures_and_the_report_section(topomap_run):
    from speechprobe.experiments.studies.topomap.report import p_words

    root, _, results = topomap_run
    report = (root / "run" / "report.md").read_text()
    assert "## Topographic neuron maps" in report
    section = report.split("## Topographic neuron maps")[1]
    for m in results["topomap"]["maps"]:
        name = f"topomap_ge2e_{m['task']}_{m['layer']}.png"
        figure = root / "run" / "figures" / name
        assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}" in section
        assert f"**ge2e / {m['task']} at {m['layer']}** (the sweep's best layer for the task" in section
        quality = m["layout_summary"]["quality"]
        assert f"grid neighbours correlate {quality['gain']:.3f} more than the average pair" in section
        assert f"(ratio {m['salient']['nn_ratio']:.2f}, {p_words(m['salient']['nn_p_value'])})" in section
        for g in m["groups"]:
            assert f"{g['group']} (I {g['moran_i']:.2f}, {p_words(g['moran_p_value'])})" in section
    assert "held-out gain" in section and "Moran's I" in section
    assert sorted(p.name for p in (root / "run" / "figures").glob("topomap_*.png")) == \
        sorted(f"topomap_ge2e_{m['task']}_{m['layer']}.png" for m in results["topomap"]["maps"])
    assert (root / "run" / "logs" / "csv" / "tables" / "topomap.csv").is_file()


def test_a_rerun_reuses_every_unit(topomap_run):
    root, config, results = topomap_run
    code, _, err = _run(["run", str(config), "--quiet"])
    assert code == 0, err
    again = json.loads((root / "run" / "results.json").read_text())
    assert again["units_computed"] == []
    assert again["topomap"] == results["topomap"]


def test_two_tasks_share_one_layout(topomap_run, tiny_corpus: Path):
    """At a named layer both tasks are painted on one layout, computed once. The run folder is prepared as a resumed
    run holding the first run's sweep units (same seed, probe settings and stores: reused, not recomputed)."""
    from speechprobe.experiments.config import parse_config

    root, _, first = topomap_run
    data = _data(tiny_corpus, root, {**SECTION, "layer": "lstm2"}, out="shared")
    (root / "shared" / "units").mkdir(parents=True)
    shutil.copytree(root / "run" / "units" / "sweep", root / "shared" / "units" / "sweep")
    (root / "shared" / "run.yaml").write_text(yaml.safe_dump(parse_config(data).as_plain(), sort_keys=False))
    code, _, err = _run(["run", str(_write(data, root / "shared.yaml")), "--quiet"])
    assert code == 0, err
    results = json.loads((root / "shared" / "results.json").read_text())
    assert sorted(results["units_computed"]) == sorted(["topomap/ge2e/layout@lstm2", "topomap/ge2e/gender/lstm2",
                                                        "topomap/ge2e/dialect/lstm2"])
    gender, dialect = results["topomap"]["maps"]
    assert gender["layer"] == dialect["layer"] == "lstm2" and gender["chosen"] == "named"
    assert gender["layout"] == dialect["layout"] and gender["layout_summary"] == dialect["layout_summary"]
    assert gender["weights"] != dialect["weights"]   # each task's own probe
    # a layout is the same whichever run built it
    before = next((m for m in first["topomap"]["maps"] if m["layer"] == "lstm2"), None)
    if before is not None:
        assert before["layout"] == gender["layout"]


def test_cli_builds_the_section_from_a_store(monkeypatch: pytest.MonkeyPatch, topomap_run, tiny_corpus: Path,
                                             tmp_path: Path):
    from speechprobe.experiments import execute as execute_module
    from speechprobe.experiments.config import load_config

    root, config_path, _ = topomap_run
    store = root / "stores" / "ge2e"
    seen = {}
    monkeypatch.setattr(execute_module, "execute", lambda config, quiet=False: seen.update(config=config))
    code, _, err = _run(["topomap", "--store", str(store), "--task", "gender", "dialect", "--permutations", "199",
                         "--out", str(tmp_path / "run"), "--folds", "3", "--logger", "none"])
    assert code == 0, err
    config, expected = seen["config"], load_config(config_path)
    assert config.topomap == expected.topomap
    assert (config.corpus, config.stores) == (str(tiny_corpus), str(root / "stores"))
    assert config.name == "topomap-ge2e-gender-dialect" and config.encoders() == ["ge2e"] and config.sweep is None
    code, _, err = _run(["topomap", "--corpus", "c", "--encoder", "whisper-tiny.en-fast", "--task", "dialect",
                         "--layer", "block3", "--top-fraction", "0.1", "--quiet"])
    assert code == 0, err
    section = seen["config"].topomap
    assert (section.encoders, section.tasks, section.layer, section.top_fraction, section.permutations) == \
        (("whisper-tiny.en-fast",), ("dialect",), "block3", 0.1, 1000)
    for flags, message in (
            (["--task", "gender"], "give --store STORE, or --corpus SOURCE and --encoder NAME"),
            (["--store", str(tmp_path / "none"), "--task", "gender"], "no such store folder"),
            (["--store", str(tmp_path), "--task", "gender"], "not a complete representation store"),
            (["--store", str(store), "--task", "gender", "--layer", "lstm9"],
             "--layer 'lstm9' is not a layer of"),
            (["--store", str(store), "--task", "gender", "--encoder", "whisper-tiny.en-fast"], "holds ge2e"),
            (["--store", str(store), "--task", "gender", "--top-fraction", "1.5"], "topomap.top_fraction")):
        code, _, err = _run(["topomap", *flags])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (flags, err)


def test_a_bad_task_or_layer_is_one_line(topomap_run, tmp_path: Path):
    root, _, _ = topomap_run
    store = root / "stores" / "ge2e"
    code, _, err = _run(["topomap", "--store", str(store), "--task", "gender", "nosuch", "--folds", "3",
                         "--out", str(tmp_path / "bad-task"), "--logger", "none"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nosuch" in err, err
    assert not (tmp_path / "bad-task").exists()   # refused before any work
    code, _, err = _run(["topomap", "--corpus", json.loads((store / "manifest.json").read_text())["corpus_source"],
                         "--encoder", "ge2e", "--stores", str(root / "stores"), "--task", "gender",
                         "--layer", "lstm9", "--folds", "3", "--out", str(tmp_path / "bad-layer"), "--logger", "none",
                         "--quiet"])
    assert code == 2 and err.strip().splitlines() == [
        "speechprobe: error: topomap.layer: ge2e has no layer 'lstm9'; its layers: lstm1, lstm2, lstm3, embedding "
        "(or best, all)"], err
    assert not (tmp_path / "bad-layer" / "units").exists()   # no unit computed


def test_a_sweep_with_gradnaps_paints_their_profiles(tiny_corpus: Path, tmp_path: Path, one_thread):
    """With ``sweep.gradnap: true`` the map shows the run's GradNAP profiles of that layer (the gradnap unit's
    own arrays, matched by layer), not activation profiles."""
    import numpy as np

    data = _data(tiny_corpus, tmp_path, {**SECTION, "tasks": ["gender"], "layer": "lstm2", "permutations": 99})
    data["sweep"] = {"encoders": ["ge2e"], "tasks": ["gender"], "gradnap": True, "baselines": "none"}
    code, _, err = _run(["run", str(_write(data, tmp_path / "gradnap.yaml")), "--quiet"])
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    (m,) = results["topomap"]["maps"]
    assert m["profile_kind"] == "gradnap" and m["layer"] == "lstm2"
    unit = json.loads((tmp_path / "run" / "units" / "gradnap" / "ge2e" / "gender" / "unit.json").read_text())
    position = [entry["layer"] for entry in unit["layers"]].index("lstm2")
    with np.load(tmp_path / "run" / "units" / "gradnap" / "ge2e" / "gender" / "profiles.npz") as stored:
        profiles = stored[f"layer{position}"]
        assert str(stored["layers"][position]) == "lstm2"
    groups = unit["layers"][position]["groups"]
    assert [g["group"] for g in m["groups"]] == groups and set(groups) == GROUPS["gender"]
    assert [g["size"] for g in m["groups"]] == unit["layers"][position]["sizes"] and sum(unit["layers"][position]["sizes"]) == 40
    for g, profile in zip(m["groups"], profiles):
        np.testing.assert_allclose(g["profile"], profile, rtol=1e-6, atol=1e-9)
    report = (tmp_path / "run" / "report.md").read_text().split("## Topographic neuron maps")[1]
    assert "On GradNAP maps" in report and "activation maps" not in report
    assert "its GradNAP profile: red where the neuron matters more" in report  # the figure's caption
