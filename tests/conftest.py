"""Shared fixtures: one tiny synthetic corpus per test session (8 speakers x 5 channels, ~2 s to build)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.synthetic import PRESETS, build_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = build_corpus(tmp_path_factory.mktemp("corpus") / "tiny", PRESETS["tiny"], progress=False)
    return path
