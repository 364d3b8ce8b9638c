"""One source of truth for every choice list and default: the config schema; the CLI and the API agree with it."""
from __future__ import annotations

import argparse

import pytest

from speechprobe.encoders.choices import POOLINGS
from speechprobe.experiments import config
from speechprobe.experiments.cli import build_parser
from speechprobe.experiments.config import AttributionSection, ProbeSettings, RunConfig, default_of
from speechprobe.tasks.catalog import PRESET_NAMES


def _option(command: str, flag: str) -> argparse.Action:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse has no public walk
    for action in sub.choices[command]._actions:
        if flag in action.option_strings:
            return action
    raise AssertionError(f"speechprobe {command} has no {flag}")


@pytest.mark.parametrize("command, flag, choices", [
    ("neurons", "--method", config.RANKING_METHODS),
    ("neurons", "--ablation-mode", config.ABLATION_MODES),
    ("attribute", "--methods", config.ATTRIBUTION_METHODS),
    ("attribute", "--pooling", POOLINGS),
    ("extract", "--pooling", POOLINGS),
    ("sweep", "--similarity", config.SIMILARITY_MEASURES),
    ("similarity", "--measure", config.SIMILARITY_MEASURES),
    ("sweep", "--corpus-preset", PRESET_NAMES),
    ("corpus", "--preset", PRESET_NAMES),
])
def test_cli_choices_are_the_schema_lists(command: str, flag: str, choices: tuple) -> None:
    assert tuple(_option(command, flag).choices) == tuple(choices)


@pytest.mark.parametrize("command, flag, section, key", [
    ("neurons", "--method", ProbeSettings, "method"),
    ("neurons", "--target", ProbeSettings, "target"),
    ("attribute", "--ig-steps", AttributionSection, "ig_steps"),
    ("attribute", "--shap-samples", AttributionSection, "shap_samples"),
])
def test_cli_defaults_are_the_schema_defaults(command: str, flag: str, section: type, key: str) -> None:
    default = _option(command, flag).default
    assert type(default_of(section, key))(default) == default_of(section, key)


def test_logger_default_and_api_lists_agree() -> None:
    from speechprobe.experiments.studies.attribution.attribute import AttributionSettings
    from speechprobe.probing import ablation, ranking, similarity

    assert _option("sweep", "--logger").default.split(",") == list(default_of(RunConfig, "logger"))
    assert ranking.METHODS == config.RANKING_METHODS and ranking.DEFAULT_METHOD == default_of(ProbeSettings, "method")
    assert ablation.MODES == config.ABLATION_MODES and ablation.DEFAULT_MODE == config.DEFAULT_ABLATION_MODE
    assert similarity.MEASURES == config.SIMILARITY_MEASURES
    settings = AttributionSettings()
    assert settings.methods == default_of(AttributionSection, "methods")
    assert (settings.ig_steps, settings.shap_samples) == (config.IG_STEPS, config.SHAP_SAMPLES)
