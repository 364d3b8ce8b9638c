"""The intervention study end to end on the tiny corpus with real GE2E weights: gender removed at lstm2 (its minimal
subset by mean ablation, as many random neurons, LEACE, random directions), the intervened stores cached in the
run's units, the attribute re-probed at every later layer, speaker-verification EER as GE2E's own job, the other
tasks' cost, agreement with stored-vector ablation at the layer, the figures and report; a rerun reuses every unit.

Kept small (two ks, one random draw, 15 epochs, two grid points, one other task, one torch thread): seven
intervened extractions of the 40 utterances, about 45 s on two loaded cores."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.experiments.cli_runner import run_cli as _run

LAYER = "lstm2"
WHISPER, WHISPER_LAYER = "whisper-tiny.en-fast", "block4.final_layer_norm"
FAST_PROBES = {"folds": 3, "max_epochs": 15, "n_resamples": 200, "grid": [[0.0, 0.0], [0.001, 0.001]]}


def _config(tiny_corpus: Path, root: Path) -> dict:
    return {"name": "tiny-intervention", "corpus": str(tiny_corpus), "stores": str(root / "stores"),
            "out": str(root / "run"), "logger": ["csv"], "probe": FAST_PROBES,
            "intervention": [
                {"encoder": "ge2e", "attribute": "gender", "layer": LAYER, "ks": ["minimal", 8],
                 "random_draws": 1, "modes": ["mean"], "erasure": "leace", "tasks": ["channel"]},
                # Whisper's own job, transcription, end to end: two neurons of its last layer against two random ones
                {"encoder": WHISPER, "attribute": "dialect", "layer": WHISPER_LAYER, "ks": [2], "random_draws": 1,
                 "erasure": "none", "tasks": ["gender"]}]}


@pytest.fixture(scope="module")
def study(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory, one_thread):
    root = tmp_path_factory.mktemp("intervention")
    config = root / "intervention.yaml"
    config.write_text(yaml.safe_dump(_config(tiny_corpus, root)))
    started = time.perf_counter()
    code, out, err = _run(["run", str(config)])
    assert code == 0, err
    results = json.loads((root / "run" / "results.json").read_text())
    return root, config, results, time.perf_counter() - started


def _units(root: Path) -> Path:
    return root / "run" / "units" / "intervention" / "ge2e" / "gender" / LAYER


def _layers(store: Path) -> dict[str, np.ndarray]:
    from speechprobe.encoders.store import RepresentationStore

    opened = RepresentationStore(store)
    return {name: np.asarray(opened.layer(name)) for name in opened.layer_names}


def test_results_hold_every_condition_and_measure(study):
    root, _, results, _ = study
    assert [r["encoder"] for r in results["intervention"]] == ["ge2e", WHISPER]
    result = results["intervention"][0]
    assert result["layer"] == LAYER and result["layers"] == ["lstm2", "lstm3", "embedding"]
    assert result["job"] == "verification" and result["tasks"] == ["channel"]
    k = result["minimal_subset"]["k"]
    ks = sorted({k, 8})
    names = [c["name"] for c in result["conditions"]]
    rank = result["eraser"]["rank"]
    assert names == ["none", *[n for j in ks for n in (f"top{j}-mean", f"random{j}-mean-0")], "leace",
                     f"random-directions{rank}-0"]
    assert rank == 1  # two genders: one direction erased
    top = {c["k"]: c for c in result["conditions"] if c["kind"] == "top"}
    assert top[k]["minimal"] and top[k]["neurons"] == result["minimal_subset"]["neurons"]
    short, long = sorted((top[k]["neurons"], top[8]["neurons"]), key=len)
    assert long[:len(short)] == short  # both are top-ks of the same ranking
    for c in result["conditions"]:
        # (a) the attribute at every layer from L on, retrained, against the majority class
        assert [row["layer"] for row in c["attribute"]] == result["layers"]
        for row in c["attribute"]:
            acc = row["accuracy"]
            assert 0.0 <= acc["low"] <= acc["value"] <= acc["high"] <= 1.0
            assert 0.0 <= row["majority_accuracy"] <= 1.0 and 0.0 <= row["fixed_probe_accuracy"] <= 1.0
        # (b) GE2E's own job: EER on the embedding layer, among the test speakers, per gender where possible
        job = c["job"]
        assert job["kind"] == "verification" and job["layer"] == "embedding" and job["speaker_disjoint"]
        assert job["available"] and 0.0 <= job["value"] <= 1.0
        assert job["group_column"] == "gender" and set(job["by_group"]) <= {"female", "male"}
        for group in job["by_group"].values():
            assert (group["eer"] is None and group["note"]) or 0.0 <= group["eer"] <= 1.0
        # (c) the cost to the other tasks at the last layer
        assert c["tasks"]["channel"]["layer"] == "embedding"
        assert 0.0 <= c["tasks"]["channel"]["accuracy"]["value"] <= 1.0
        # (d) agreement with stored-vector editing at L
        assert c["at_layer"]["layer"] == LAYER and c["at_layer"]["difference"] is not None
    # each removal is set against its null
    comparisons = {(comp["what"], comp["k"]): comp for comp in result["comparisons"]}
    assert set(comparisons) == {*(("neurons", j) for j in ks), ("erasure", rank)}
    assert comparisons[("neurons", k)]["null"] == [f"random{k}-mean-0"] and comparisons[("neurons", k)]["minimal"]
    assert comparisons[("erasure", rank)]["null"] == [f"random-directions{rank}-0"]
    points = {p["kind"] for p in result["tradeoff"]["points"]}
    assert points == {"none", "top", "random", "leace", "random_directions"}
    assert result["tradeoff"]["y_metric"] == "eer"


def test_whispers_own_job_is_the_word_error_rate_of_its_clean_test_clips(study):
    root, _, results, _ = study
    from speechprobe.tasks.corpus import load_corpus

    result = results["intervention"][1]
    assert result["layer"] == WHISPER_LAYER and result["layers"] == [WHISPER_LAYER] and result["job"] == "transcription"
    assert [c["name"] for c in result["conditions"]] == ["none", "top2-mean", "random2-mean-0"]
    metadata = load_corpus(Path(results["config"]["corpus"])).metadata
    for c in result["conditions"]:
        job = c["job"]
        assert job["available"] and job["metric"] == "wer" and job["value"] >= 0.0, job
        assert job["rows"] == "the clean-channel test utterances" and job["n_rows"] >= 1
        for example in job["examples"]:  # the clean test clips, each with its reference text
            assert metadata["channel"].iloc[example["row"]] == "clean"
            assert example["reference"] == metadata["text"].iloc[example["row"]]
        assert sum(g["n_rows"] for g in job["by_group"].values()) == job["n_rows"]
        assert job["looping"] <= job["n_rows"]
    none = result["conditions"][0]
    assert none["max_abs_difference"][WHISPER_LAYER] <= 1e-5  # no neuron: the plain store, and the plain transcripts
    top = result["conditions"][1]
    assert top["max_abs_difference"][WHISPER_LAYER] > 1e-3
    assert result["tradeoff"]["y_metric"] == "wer"
    # units of each section are keyed by that section only
    inputs = json.loads((root / "run" / "units" / "intervention" / WHISPER / "dialect" / WHISPER_LAYER / "fit" /
                         "inputs.json").read_text())
    assert inputs["config"]["intervention"]["encoder"] == WHISPER


def test_no_intervention_store_equals_the_plain_store(study):
    root, _, results, _ = study
    plain = _layers(root / "stores" / "ge2e")
    none_condition = results["intervention"][0]["conditions"][0]
    none = _layers(root / "run" / none_condition["store"])
    assert list(none) == list(plain)
    for name in plain:
        np.testing.assert_allclose(none[name], plain[name], rtol=0, atol=1e-6)
    assert results["intervention"][0]["control"]["none_max_abs_difference"] <= 1e-6
    manifest = json.loads((root / "run" / none_condition["store"] / "manifest.json").read_text())
    assert "intervention" in json.dumps(manifest)  # the store says it was extracted under an intervention


def test_intervened_stores_keep_earlier_layers_and_change_the_layer(study):
    root, _, results, _ = study
    plain = _layers(root / "stores" / "ge2e")
    for c in results["intervention"][0]["conditions"]:
        assert c["store"].startswith(f"units/intervention/ge2e/gender/{LAYER}/stores/{c['name']}-")
        layers = _layers(root / "run" / c["store"])
        np.testing.assert_allclose(layers["lstm1"], plain["lstm1"], rtol=0, atol=1e-6)
        assert c["earlier_layers_max_abs_difference"] <= 1e-6
        if c["kind"] != "none":
            assert c["max_abs_difference"][LAYER] > 1e-3  # the intervention did reach the layer
            assert c["max_abs_difference"]["lstm3"] > 1e-3  # ... and the layers after it


def test_in_forward_matches_stored_vector_ablation_at_the_layer(study):
    _, _, results, _ = study
    conditions = {c["kind"]: c for c in reversed(results["intervention"][0]["conditions"])}  # the first of each kind
    n_test = results["intervention"][0]["split"]["test"]
    for kind in ("top", "random", "leace", "random_directions"):
        at = conditions[kind]["at_layer"]
        assert at["vector_max_abs_difference"] < 1e-4, kind  # the edited stored vectors are the intervened ones
    # erasure is affine, so it commutes with mean pooling: the same accuracy; mean ablation fills frame means
    # where `ablate` fills the pooled training means: at most a few test utterances apart
    assert abs(conditions["leace"]["at_layer"]["difference"]) <= 1.0 / n_test + 1e-9
    assert abs(conditions["top"]["at_layer"]["difference"]) <= 3.0 / n_test + 1e-9


def test_minimal_subset_ablation_against_random_neurons(study):
    _, _, results, _ = study
    k = results["intervention"][0]["minimal_subset"]["k"]
    comp = next(c for c in results["intervention"][0]["comparisons"] if c["what"] == "neurons" and c["k"] == k)
    assert comp["minimal"]
    at = comp["at_layer"]
    assert at["at_least_null"] == (at["target"] <= at["null_mean"])
    if not at["at_least_null"]:  # the result says so in words
        assert at["verdict"].startswith(("above", "a smaller drop"))
    assert "random neurons" in at["verdict"]


def test_report_figures_and_timing(study):
    root, _, results, seconds = study
    report = (root / "run" / "report.md").read_text()
    assert "## Causal intervention: removing gender from ge2e at layer lstm2" in report
    assert "**Where removal is cheap**" in report and "random neurons" in report and "majority" in report
    assert f"## Causal intervention: removing dialect from {WHISPER} at layer {WHISPER_LAYER}" in report
    assert "word error rate" in report
    whisper_none = results["intervention"][1]["conditions"][0]["job"]["examples"][0]
    assert "### Transcripts of the first" in report and whisper_none["reference"] in report
    for suffix, result in zip(("ge2e_gender", f"{WHISPER}_dialect"), results["intervention"]):
        for name in ("intervention_tradeoff", "intervention_layers"):
            png = root / "run" / "figures" / f"{name}_{suffix}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"figures/{name}_{suffix}.png" in report
        table = (root / "run" / "logs" / "csv" / "tables" / f"intervention_{suffix}.csv").read_text()
        assert table.count("\n") == 1 + len(result["conditions"])
    print(f"intervention study on the tiny corpus: {seconds:.0f} s")


def test_rerun_reuses_every_unit(study):
    root, config, results, _ = study
    started = time.perf_counter()
    code, _, err = _run(["run", str(config), "--quiet"])
    assert code == 0, err
    again = json.loads((root / "run" / "results.json").read_text())
    assert again["units_computed"] == []
    assert again["intervention"] == results["intervention"]
    assert time.perf_counter() - started < 60


def test_cli_builds_the_intervention_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from speechprobe.experiments import execute as execute_module

    seen = {}
    monkeypatch.setattr(execute_module, "execute", lambda config, quiet=False: seen.setdefault("config", config))
    code, _, err = _run(["intervene", "--corpus", str(tmp_path / "c"), "--encoder", "ge2e", "--attribute", "dialect",
                         "--ks", "minimal,4", "--random-draws", "2", "--modes", "mean", "zero", "--tasks", "speaker",
                         "--out", str(tmp_path / "run"), "--max-epochs", "5", "--logger", "none"])
    assert code == 0, err
    config = seen["config"]
    (section,) = config.intervention  # the flags build one section
    assert (section.encoder, section.attribute, section.layer) == ("ge2e", "dialect", "best")
    assert section.ks == ("minimal", 4) and section.random_draws == 2 and section.modes == ("mean", "zero")
    assert section.tasks == ("speaker",) and config.probe.max_epochs == 5 and config.name == "intervention-dialect"
    code, _, err = _run(["intervene", "--corpus", "c", "--encoder", "ge2e", "--ks", "0"])
    assert code == 2 and "--ks" in err


def test_an_unknown_task_of_any_section_stops_the_run_before_any_work(tiny_corpus: Path, tmp_path: Path):
    config = _config(tiny_corpus, tmp_path)
    config["intervention"][1]["tasks"] = ["gender", "accent"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = _run(["run", str(path)])
    assert code == 2 and "accent" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "stores").exists()


def test_a_recomputed_fit_recomputes_the_conditions_but_reuses_their_stores(study):
    """A condition unit records the fit it was computed from: a fit computed again (here: deleted) makes every
    condition recompute; where the intervention came out the same, its store is reused, not extracted again."""
    import shutil

    root, config, results, _ = study
    shutil.rmtree(_units(root) / "fit")
    code, _, err = _run(["run", str(config)])
    assert code == 0, err
    again = json.loads((root / "run" / "results.json").read_text())
    names = [c["name"] for c in results["intervention"][0]["conditions"]]
    base = f"intervention/ge2e/gender/{LAYER}"
    assert again["units_computed"] == [f"{base}/fit", *[f"{base}/{n}" for n in names]]
    assert "recomputing (the fit or the intervention changed)" in err
    for c, d in zip(results["intervention"][0]["conditions"], again["intervention"][0]["conditions"]):
        assert not c["store_reused"] and d["store_reused"]  # extracted the first time, reused now
        assert c["intervention_key"] == d["intervention_key"] and c["max_abs_difference"] == d["max_abs_difference"]


def test_ks_nulls_and_jobs_resolve_as_documented():
    from speechprobe.experiments.studies.intervention.compute import random_neurons, resolve_ks, versus_null
    from speechprobe.experiments.studies.intervention.jobs import job_kind

    assert resolve_ks(("minimal", 8, 32), 8, 256) == [{"k": 8, "minimal": True, "capped": False},
                                                      {"k": 32, "minimal": False, "capped": False}]
    assert resolve_ks((300,), 5, 256) == [{"k": 256, "minimal": False, "capped": True}]
    assert random_neurons(256, 8, 0, 1) == random_neurons(256, 8, 0, 1) != random_neurons(256, 8, 0, 2)
    assert versus_null(0.5, 0.9, 0.05, 3, "random neurons").startswith("a larger drop than random neurons")
    assert versus_null(0.9, 0.88, 0.05, 3, "random neurons").startswith("no different")
    assert versus_null(0.95, 0.5, 0.05, 3, "random neurons").startswith("a smaller drop")
    assert "too few" in versus_null(0.5, 0.9, 0.0, 1, "random neurons")
    assert (job_kind("auto", "ge2e"), job_kind("auto", "random:ge2e@2"), job_kind("auto", "whisper-tiny.en-fast"),
            job_kind("auto", "mfcc"), job_kind("none", "ge2e")) == \
        ("verification", "verification", "transcription", "none", "none")


def test_transcripts_are_scored_on_the_clean_channel_when_there_is_one():
    import pandas as pd

    from speechprobe.experiments.studies.intervention.jobs import transcription_rows

    metadata = pd.DataFrame({"channel": ["clean", "telephone", "clean", "gsm"]})
    rows, which = transcription_rows(metadata, np.array([1, 2, 3]))
    assert rows.tolist() == [2] and which == "the clean-channel test utterances"
    rows, which = transcription_rows(metadata, np.array([1, 3]))  # no clean test row: all of them
    assert rows.tolist() == [1, 3] and which == "the test utterances"
    rows, _ = transcription_rows(pd.DataFrame({"speaker": ["a", "b"]}), np.array([0, 1]))
    assert rows.tolist() == [0, 1]


def test_tidy_removes_only_what_no_condition_reads(tmp_path: Path):
    from speechprobe.experiments.studies.intervention.compute import tidy

    for name in ("fit", "none", "top8-mean", "top24-mean", ".top9-mean.x.tmp", "stores/none-a", "stores/top8-mean-b",
                 "stores/top24-mean-c"):
        (tmp_path / name).mkdir(parents=True)
    for unit in ("fit", "none", "top8-mean", "top24-mean"):
        (tmp_path / unit / "unit.json").write_text("{}")
    told = []
    tidy(tmp_path, ["none", "top8-mean"], ["none-a", "top8-mean-b"], told.append)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir())
    assert left == [".top9-mean.x.tmp", "fit", "none", "stores", "stores/none-a", "stores/top8-mean-b", "top8-mean"]
    assert len(told) == 2
