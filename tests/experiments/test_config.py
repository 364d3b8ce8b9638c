"""Experiment configs: the shipped examples load; unknown keys, wrong types and missing parts name the key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.config import load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
MINIMAL = {"name": "t", "corpus": "c", "sweep": {"encoders": ["ge2e"]}}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path):
    config = load_config(path)
    assert config.sweep or config.audit or config.ablation or config.intervention or config.compare or config.topomap
    assert config.out_dir == Path("data/runs") / config.name


def test_defaults_fill_in():
    config = parse_config(MINIMAL)
    assert config.sweep.tasks == ("speaker", "gender", "dialect", "channel")
    assert config.probe.folds == 5 and config.logger == ("csv", "wandb") and config.sweep.baselines == "auto"
    assert config.encoders() == ["ge2e"]


@pytest.mark.parametrize("change, message", [
    ({"sweep": {"encodrs": ["ge2e"]}}, "sweep.encodrs: unknown key"),
    ({"probe": {"max_epochs": "5"}}, "probe.max_epochs: Input should be a valid integer"),
    ({"probe": {"folds": 2}}, "probe.folds: Input should be greater than or equal to 3"),
    ({"probe": {"grid": [[0, -1]]}}, "probe.grid: grid pair"),
    ({"sweep": {"encoders": ["ge2e"], "tasks": ["gender", 3]}}, "sweep.tasks.1: Input should be a valid string"),
    ({"logger": ["csv", "mlflow"]}, "logger.1: Input should be 'none', 'csv', 'wandb' or 'tensorboard'"),
    ({"logger": ["none", "csv"]}, "none cannot be combined"),
    ({"audit": {"encoder": "ge2e", "layer": 3}}, "audit.layer: Input should be a valid string"),
    ({"sweep": None}, "no study"),
    ({"sweep": {"encoders": ["ge2e"], "similarity": "cca"}}, "sweep.similarity: Input should be 'linear_cka'"),
    ({"sweep": {"encoders": ["ge2e"], "attribution": {"methods": ["occlusion"]}}}, "sweep.attribution.methods.0: Input should be"),
    ({"sweep": {"encoders": ["ge2e"], "attribution": {"utterances": 0}}}, "sweep.attribution.utterances: Input should be greater"),
    ({"compute": {"memory": "lots"}}, "compute.memory: memory budget 'lots' is not a size"),
    ({"compute": {"accelerator": "tpu"}}, "compute.accelerator: Input should be 'auto'"),
    ({"compute": {"device": -1}}, "compute.device: Input should be greater than or equal to 0"),
])
def test_bad_configs_name_the_key(change: dict, message: str):
    with pytest.raises(SpeechprobeError) as error:
        parse_config({**MINIMAL, **change}, "my.yaml")
    assert str(error.value).startswith("my.yaml: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_compute_settings_default_to_auto_and_half_the_memory():
    config = parse_config({**MINIMAL, "compute": {"memory": "8G"}})
    default = parse_config(MINIMAL).compute
    assert (default.accelerator, default.device, default.memory) == ("auto", None, None)
    assert config.compute.memory == "8G"
    from speechprobe.experiments.runner import memory_budget, training_options

    assert memory_budget(config) == 8 * 2**30 and memory_budget(parse_config(MINIMAL)) is None
    options = training_options(parse_config({**MINIMAL, "compute": {"accelerator": "cpu", "device": 0}}))
    assert (options.accelerator, options.device) == ("cpu", 0)


def test_attribution_is_optional_and_has_defaults():
    assert parse_config(MINIMAL).sweep.attribution is None
    config = parse_config({**MINIMAL, "sweep": {"encoders": ["ge2e"], "attribution": {}}})
    assert config.sweep.attribution.utterances == 1 and "integrated_gradients" in config.sweep.attribution.methods
    config = parse_config({**MINIMAL, "sweep": {"encoders": ["ge2e"], "attribution": {"methods": ["lrp"], "utterances": 2}}})
    assert config.sweep.attribution.methods == ("lrp",) and config.sweep.attribution.utterances == 2


def test_missing_required_key_and_non_mapping():
    with pytest.raises(SpeechprobeError, match="corpus: missing"):
        parse_config({"name": "t", "sweep": {"encoders": ["ge2e"]}})
    with pytest.raises(SpeechprobeError, match="a config is a mapping"):
        parse_config(["name", "t"])


def test_yaml_errors_name_the_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ncorpus: [unclosed\n")
    with pytest.raises(SpeechprobeError, match=r"bad.yaml: not valid YAML at line \d"):
        load_config(bad)
    with pytest.raises(SpeechprobeError, match="cannot read the config"):
        load_config(tmp_path / "absent.yaml")


def test_the_sweep_gradnap_key_is_off_by_default_and_strict():
    assert parse_config(MINIMAL).sweep.gradnap is False
    on = parse_config({**MINIMAL, "sweep": {"encoders": ["ge2e"], "gradnap": True}})
    assert on.sweep.gradnap is True and on.as_plain()["sweep"]["gradnap"] is True
    with pytest.raises(SpeechprobeError, match="sweep.gradnap"):
        parse_config({**MINIMAL, "sweep": {"encoders": ["ge2e"], "gradnap": "yes"}})


def test_intervention_is_one_section_or_a_list_of_distinct_ones():
    base = {"name": "x", "corpus": "c"}
    one = parse_config({**base, "intervention": {"encoder": "ge2e", "ks": ["minimal", 4]}})
    assert [(s.encoder, s.ks) for s in one.intervention] == [("ge2e", ("minimal", 4))]
    two = parse_config({**base, "intervention": [{"encoder": "ge2e"},
                                                 {"encoder": "whisper-tiny.en-fast", "attribute": "dialect"}]})
    assert [s.attribute for s in two.intervention] == ["gender", "dialect"]
    assert two.encoders() == ["ge2e", "whisper-tiny.en-fast"]
    for bad, message in (([{"encoder": "ge2e"}, {"encoder": "ge2e"}], "intervention: two intervention sections"),
                         ([], "intervention: give at least one"),
                         ({"encoder": "ge2e", "ks": ["x"]}, "intervention.ks.0: Input should be 'minimal'"),
                         ([{"encoder": "ge2e"}, {"encoder": "ge2e", "ks": ["x"]}], "intervention.1.ks.0:"),
                         ({"encoder": "ge2e", "bogus": 1}, "intervention.bogus: unknown key"),
                         ([{"encoder": "ge2e", "bogus": 1}], "intervention.0.bogus: unknown key")):
        with pytest.raises(SpeechprobeError, match=re.escape(message)):
            parse_config({**base, "intervention": bad})
