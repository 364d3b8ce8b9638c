"""`speechprobe run` end to end on the tiny corpus with real GE2E weights and its random twin: sweep, audit,
ablation, report, dashboards; reruns reuse the finished units; bad input stops before anything is written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tests.experiments.cli_runner import run_cli as _run

FAST_PROBES = {"folds": 3, "max_epochs": 15, "n_resamples": 200, "grid": [[0.0, 0.0], [0.001, 0.001]]}


def _config(tiny_corpus: Path, root: Path, **overrides) -> dict:
    config = {
        "name": "tiny-study", "corpus": str(tiny_corpus), "stores": str(root / "stores"), "out": str(root / "run"),
        "logger": ["csv", "wandb"], "probe": FAST_PROBES,
        "sweep": {"encoders": ["ge2e"], "tasks": ["gender", "channel", "speaker"], "baselines": {"ge2e": "random:ge2e"},
                  "similarity": "linear_cka"},
        "audit": {"encoder": "ge2e", "attribute": "gender", "tasks": ["speaker", "channel"]},
        "ablation": {"encoder": "ge2e", "task": "channel", "layer": "all"},
    }
    config.update(overrides)
    return config


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """wandb keeps caches under HOME even offline: keep them in the test's folder."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            patch.setenv(name, str(home / name.lower()))
        patch.delenv("WANDB_MODE", raising=False)
        yield home


@pytest.fixture(scope="module")
def study(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory, isolated_home: Path):
    root = tmp_path_factory.mktemp("study")
    config = _write(root / "study.yaml", _config(tiny_corpus, root))
    code, out, err = _run(["run", str(config)])
    assert code == 0, err
    return root, config, out, err


def test_run_writes_results_report_figures_and_logs(study):
    root, _, out, err = study
    run = root / "run"
    results = json.loads((run / "results.json").read_text())
    units = {(u["encoder"], u["task"]): u for u in results["sweep"]["results"]}
    assert set(units) == {(e, t) for e in ("ge2e", "random:ge2e") for t in ("gender", "channel", "speaker")}
    assert units[("random:ge2e", "gender")]["role"] == "baseline"
    for unit in units.values():
        names = [layer["layer"] for layer in unit["layers"]]
        assert names == ["lstm1", "lstm2", "lstm3", "embedding"] and unit["best_layer"] in names
        for layer in unit["layers"]:
            acc = layer["accuracy"]
            assert 0.0 <= acc["low"] <= acc["value"] <= acc["high"] <= 1.0
    assert units[("ge2e", "gender")]["n_folds"] == 3 and units[("ge2e", "speaker")]["n_folds"] == 1
    assert {"peak_layer", "gain_over_random"} <= set(results["sweep"]["findings"][0])
    assert results["audit"]["layer"] in ["lstm1", "lstm2", "lstm3", "embedding"]
    assert set(results["audit"]["groups"]) == {"speaker", "channel"}
    assert results["ablation"]["layer"] == "all" and sum(results["ablation"]["top_counts"].values()) == results["ablation"]["top_k"]
    assert (run / "report.md").is_file() and (run / "report.html").is_file()
    pngs = list((run / "figures").glob("*.png"))
    assert len(pngs) >= 5 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "report:" in out and str(run / "report.html") in out
    assert "sweep ge2e / gender" in err  # progress on stderr


def test_speaker_selectivity_is_na_and_ablation_is_mean(study):
    """The speaker task trains no control probes (its control task is speaker identity again): null control and
    selectivity with the reason in the unit, results, report and dashboard; the ablation study removes by the
    training mean and says so."""
    from speechprobe.tasks.tasks import SPEAKER_CONTROL_NOTE

    root, *_ = study
    run = root / "run"
    results = json.loads((run / "results.json").read_text())
    units = {(u["encoder"], u["task"]): u for u in results["sweep"]["results"]}
    for encoder in ("ge2e", "random:ge2e"):
        speaker, gender = units[(encoder, "speaker")], units[(encoder, "gender")]
        assert speaker["selectivity_note"] == SPEAKER_CONTROL_NOTE and "selectivity_note" not in gender
        assert all(s["selectivity"] is None and s["control_accuracy"] is None for s in speaker["layers"])
        assert all(isinstance(s["selectivity"], float) for s in gender["layers"])
    folder = run / "units" / "sweep" / "ge2e"
    assert not (folder / "speaker" / "control_probes").exists() and (folder / "gender" / "control_probes").is_dir()
    unit = json.loads((folder / "speaker" / "unit.json").read_text())
    assert unit["selectivity_note"] == SPEAKER_CONTROL_NOTE and unit["layers"][0]["selectivity"] is None
    finding = next(f for f in results["sweep"]["findings"] if f["task"] == "speaker")
    assert finding["selectivity"] is None and finding["selectivity_note"] == SPEAKER_CONTROL_NOTE
    report = (run / "report.md").read_text()
    assert report.count(SPEAKER_CONTROL_NOTE) == 1 and "| speaker | lstm1" in report
    table = pd.read_csv(run / "logs" / "csv" / "tables" / "sweep.csv")
    speaker_rows = table[table["task"] == "speaker"]
    assert len(speaker_rows) == 8 and speaker_rows["selectivity"].isna().all()
    assert table[table["task"] == "gender"]["selectivity"].notna().all()
    assert results["ablation"]["ablation"]["mode"] == "mean"
    assert "removing them without retraining, by mean ablation (in distribution)" in report


def test_every_ranking_is_checked_against_random_in_its_own_output(study):
    """The ablation study and the audit rank by the elastic-net path (the default) and carry, for each ranking,
    its top k kept alone against k random neurons from k = 1 up, and the minimal subset beside random's k."""
    from speechprobe.probing.ranking_check import WELL_BELOW

    root, *_ = study
    run = root / "run"
    results = json.loads((run / "results.json").read_text())
    ablation, audit = results["ablation"], results["audit"]
    assert ablation["method"] == "path" and audit["method"] == "path"
    for check in (ablation["check"], *audit["checks"].values()):
        assert check["ks"][0] == 1 and len(check["verdicts"]) == len(check["ks"]) == len(check["top_test"])
        assert np.asarray(check["random_test"]).shape == (5, len(check["ks"]))
        small = [v for k, v in zip(check["ks"], check["verdicts"]) if k <= 10]
        assert check["beats_random"] == ("better" in small and "worse" not in small)
    assert set(audit["checks"]) == {"gender", "speaker", "channel"}
    for m in (ablation["minimal_subset"], *audit["salient"].values()):
        assert len(m["random_k"]) == 3 and m["random_k_median"] == float(np.median(m["random_k"]))
        assert m["is_minimal"] == (m["k"] <= WELL_BELOW * m["random_k_median"])
    report = (run / "report.md").read_text()
    assert f"**Ranking check** (path ranking, top k kept alone and retrained vs k random neurons): " \
           f"{ablation['check']['summary']}." in report
    assert "**Ranking checks** (path ranking;" in report and "random neurons need" in report
    assert (run / "figures" / "ranking_check.png").is_file() and (run / "figures" / "audit_checks.png").is_file()


def test_a_speaker_unit_cached_with_selectivity_numbers_reads_as_na():
    """Units written before the speaker task skipped its control task are read with the numbers nulled."""
    from speechprobe.experiments.studies.sweep.compute import without_meaningless_control
    from speechprobe.tasks.tasks import SPEAKER_CONTROL_NOTE

    layers = [{"layer": "lstm1", "selectivity": 0.08, "control_accuracy": 0.73}]
    old = without_meaningless_control({"task": "speaker", "layers": layers})
    assert old["selectivity_note"] == SPEAKER_CONTROL_NOTE
    assert old["layers"] == [{"layer": "lstm1", "selectivity": None, "control_accuracy": None}]
    assert layers[0]["selectivity"] == 0.08  # the input is not changed
    gender = {"task": "gender", "layers": layers}
    assert without_meaningless_control(gender) is gender


def test_similarity_section_compares_layers_within_and_against_the_twin(study):
    from speechprobe.encoders.store import RepresentationStore
    from speechprobe.probing.similarity import linear_cka

    root, *_ = study
    run = root / "run"
    within, twin = json.loads((run / "results.json").read_text())["sweep"]["similarity"]
    assert (within["within"], twin["within"]) == (True, False)
    assert (twin["encoder_a"], twin["encoder_b"]) == ("ge2e", "random:ge2e")
    store = RepresentationStore(root / "stores" / "ge2e")
    matrix = np.array(within["matrix"])
    assert np.allclose(np.diag(matrix), 1.0) and np.allclose(matrix, matrix.T)
    assert matrix[0, 3] == pytest.approx(linear_cka(np.asarray(store.layer("lstm1")), np.asarray(store.layer("embedding"))))
    assert within["layers_a"] == ["lstm1", "lstm2", "lstm3", "embedding"]
    for name in ("similarity_ge2e", "similarity_ge2e_vs_random-ge2e"):
        assert (run / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "report.md").read_text()
    section = report[report.index("### Layer similarity"):]
    assert "Within ge2e (linear CKA" in section and "ge2e against random:ge2e, layer by layer" in section
    lowest = min(range(4), key=lambda i: twin["matrix"][i][i])
    assert f"least at {twin['layers_a'][lowest]} ({twin['matrix'][lowest][lowest]:.2f})" in section


def test_pooled_accuracy_is_what_the_saved_predictions_say(study):
    """Every utterance of a speaker-disjoint task is tested once; results.json agrees with predictions.csv."""
    root, *_ = study
    unit_dir = root / "run" / "units" / "sweep" / "ge2e" / "gender"
    unit = json.loads((unit_dir / "unit.json").read_text())
    table = pd.read_csv(unit_dir / "predictions.csv", dtype=str, keep_default_na=False)
    assert len(table) == unit["n_utterances"] and sorted(table["row"].astype(int)) == list(range(unit["n_utterances"]))
    for layer in unit["layers"]:
        assert layer["accuracy"]["value"] == pytest.approx(np.mean(table["label"] == table[f"predicted:{layer['layer']}"]))


def test_dashboards_hold_the_metrics(study):
    root, *_ = study
    logs = root / "run" / "logs"
    metrics = pd.read_csv(logs / "csv" / "metrics.csv")
    column = "sweep/ge2e/gender/accuracy"
    results = json.loads((root / "run" / "results.json").read_text())
    unit = next(u for u in results["sweep"]["results"] if (u["encoder"], u["task"]) == ("ge2e", "gender"))
    logged = metrics[column].dropna().to_numpy()
    assert np.allclose(logged, [layer["accuracy"]["value"] for layer in unit["layers"]])
    assert (logs / "csv" / "tables" / "sweep.csv").is_file()
    runs = list((logs / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_rerun_reuses_every_unit_and_a_deleted_unit_is_redone(study):
    root, config, *_ = study
    before = json.loads((root / "run" / "results.json").read_text())
    code, out, err = _run(["run", str(config), "--quiet"])
    assert code == 0, err
    again = json.loads((root / "run" / "results.json").read_text())
    assert again["units_computed"] == []
    assert again["sweep"] == before["sweep"] and again["audit"] == before["audit"]
    shutil.rmtree(root / "run" / "units" / "sweep" / "random-ge2e" / "channel")
    code, _, err = _run(["run", str(config), "--quiet"])
    assert code == 0, err
    redone = json.loads((root / "run" / "results.json").read_text())
    assert redone["units_computed"] == ["sweep/random-ge2e/channel"]
    assert redone["sweep"] == before["sweep"]  # same seed, same numbers
    # where and within how much memory probes train is not what they compute: every unit is reused
    code, _, err = _run(["run", str(config), "--quiet", "--accelerator", "cpu", "--memory", "64M"])
    assert code == 0, err
    assert json.loads((root / "run" / "results.json").read_text())["units_computed"] == []


def test_a_different_config_in_the_same_folder_is_refused(study, tiny_corpus: Path):
    root, *_ = study
    changed = _config(tiny_corpus, root, seed=1)
    code, out, err = _run(["run", str(_write(root / "changed.yaml", changed))])
    assert code == 2
    assert "holds a different run" in err and "seed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("change, message", [
    ({"sweep": {"encoders": ["ge2e-typo"]}}, "unknown encoder 'ge2e-typo'; known: ge2e"),
    ({"sweep": {"encoders": ["ge2e"], "tasks": ["accent"]}}, "unknown task 'accent'"),
    ({"corpus": "/nonexistent/corpus"}, "/nonexistent/corpus"),
    ({"probe": {"folds": 2}}, "probe.folds"),
    ({"sweep": {"encoders": ["ge2e"], "baselines": {"whisper-tiny.en": "random:whisper-tiny.en"}}}, "sweep.baselines"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_corpus: Path, tmp_path: Path, change: dict, message: str):
    config = _config(tiny_corpus, tmp_path, audit=None, ablation=None, **change)
    config = {k: v for k, v in config.items() if v is not None}
    code, out, err = _run(["run", str(_write(tmp_path / "bad.yaml", config))])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "stores").exists()


def test_flag_commands_build_the_same_checks(tiny_corpus: Path, tmp_path: Path):
    code, _, err = _run(["sweep", "--corpus", str(tiny_corpus), "--encoders", "nope", "--out", str(tmp_path / "r")])
    assert code == 2 and "unknown encoder 'nope'" in err
    code, _, err = _run(["audit", "--corpus", str(tiny_corpus), "--encoder", "ge2e", "--logger", "csv,mlflow",
                         "--out", str(tmp_path / "r")])
    assert code == 2 and "logger" in err and "mlflow" in err
    assert not (tmp_path / "r").exists()


def test_a_config_maps_the_source_columns(tiny_corpus: Path, tmp_path: Path):
    """A corpus whose label columns have other names (VCTK's `accent`, here `sex`) is read through `columns`."""
    from speechprobe.experiments.config import parse_config
    from speechprobe.experiments.runner import prepare_corpus

    table = pd.read_csv(tiny_corpus / "metadata.csv").rename(columns={"gender": "sex"})
    table["file_name"] = [str(tiny_corpus / name) for name in table["file_name"]]
    renamed = tmp_path / "renamed.csv"
    table.to_csv(renamed, index=False)
    base = _config(tiny_corpus, tmp_path, corpus=str(renamed))
    config = parse_config({**base, "columns": {"gender": "sex"}})
    corpus = prepare_corpus(config, lambda message: None)
    assert list(corpus.metadata["gender"]) == list(table["sex"])
    code, _, err = _run(["sweep", "--corpus", str(renamed), "--encoders", "ge2e", "--tasks", "gender",
                         "--logger", "none", "--out", str(tmp_path / "unmapped")])
    assert code == 2 and "gender" in err and not (tmp_path / "unmapped").exists()
    code, _, err = _run(["sweep", "--corpus", str(renamed), "--column", "gender", "--encoders", "ge2e",
                         "--logger", "none", "--out", str(tmp_path / "unmapped")])
    assert code == 2 and "--column 'gender'" in err and not (tmp_path / "unmapped").exists()


def test_ablation_by_flags_on_one_layer_reuses_the_stores(study, tiny_corpus: Path):
    """The flag command is the same study as a config: one layer here, the study's stores reused."""
    root = study[0]
    out = root / "ablation-lstm3"
    code, stdout, err = _run(["ablation", "--corpus", str(tiny_corpus), "--stores", str(root / "stores"),
                              "--encoder", "ge2e", "--task", "gender", "--layer", "lstm3", "--folds", "3",
                              "--max-epochs", "15", "--logger", "none", "--out", str(out)])
    assert code == 0, err
    assert "extracting" not in err  # the store the study extracted is read, not rebuilt
    ablation = json.loads((out / "results.json").read_text())["ablation"]
    assert ablation["layer"] == "lstm3" and ablation["n_neurons"] == 256
    assert sorted(ablation["ranking"]) == list(range(256))
    assert 1 <= ablation["minimal_subset"]["k"] <= 256
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["ablation"] == {"encoder": "ge2e", "task": "gender", "layer": "lstm3"} and run["probe"]["folds"] == 3
    assert not (out / "logs").exists() and "ablation: gender in ge2e (layer lstm3)" in stdout


def test_sweep_with_input_attribution(study, tiny_corpus: Path):
    """The sweep's optional attribution section: one cached unit per encoder x task, a figure and a report part."""
    root = study[0]  # its stores are reused
    config = _config(tiny_corpus, root, out=str(root / "attribution-run"), logger=["none"], audit=None, ablation=None,
                     probe={**FAST_PROBES, "control": False, "max_epochs": 5, "n_resamples": 100},
                     sweep={"encoders": ["ge2e"], "tasks": ["gender"], "baselines": "none",
                            "attribution": {"utterances": 2, "methods": ["saliency", "integrated_gradients", "lrp"],
                                            "ig_steps": 4}})
    code, _, err = _run(["run", str(_write(root / "attribution.yaml", config))])
    assert code == 0, err
    out = root / "attribution-run"
    results = json.loads((out / "results.json").read_text())
    (entry,) = results["sweep"]["attribution"]
    unit = results["sweep"]["results"][0]
    assert entry["layer"] == unit["best_layer"] and len(entry["utterances"]) == 2
    assert {r["target"] for r in entry["utterances"]} == {"female", "male"}  # one utterance per class in turn
    assert "no rule for LSTM" in entry["mean"]["lrp"]["error"]  # GE2E: LRP is named as impossible, not fatal
    for record in entry["utterances"]:
        # positive: both maps are the same encoder's input gradients, only the probe's direction differs; below
        # 1: the re-drawn probe changes the map (a twin that kept the trained weights gives exactly 1)
        assert 0 < record["methods"]["saliency"]["randomisation_spearman"] < 1
        with np.load(Path(entry["folder"]) / record["maps_file"]) as maps:
            assert maps["map_saliency"].shape == maps["features"].shape and "map_lrp" not in maps
    assert (out / "figures" / "attribution_ge2e_gender.png").is_file()
    report = (out / "report.md").read_text()
    assert "### Input attribution" in report and "attribution_ge2e_gender.png" in report
    assert "rank correlation of |attribution| between the trained probe" in report
