"""Shared fixtures: one tiny synthetic corpus per test session (8 speakers x 5 channels, ~2 s to build), and a
temporary user cache dir."""
from __future__ import annotations

from pathlib import Path

import pytest

from speechprobe.tasks.synthetic import PRESETS, build_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = build_corpus(tmp_path_factory.mktemp("corpus") / "tiny", PRESETS["tiny"], progress=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory):
    """The corpus fingerprint's digest memo (tasks.corpus) goes to the user's cache dir: during tests, a
    temporary one, so the suite leaves nothing in ~/.cache and no test reads another run's memo."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECHPROBE_CACHE", str(tmp_path_factory.mktemp("user-cache")))
        yield
