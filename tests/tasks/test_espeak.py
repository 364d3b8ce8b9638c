from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from speechprobe.tasks.espeak import SAMPLE_RATE, Espeak, private_data_dir
from speechprobe.tasks.voices import DIALECTS, sample_voice

TEXT = "The quiet farmer carried the wooden basket."


def _synthesize_in_fresh_process(args: tuple[str, str, str | None, int]) -> bytes:
    data_dir, language, variant, seed = args
    return Espeak(Path(data_dir)).synthesize(TEXT, language, variant, seed=seed).tobytes()


def _fresh(*jobs: tuple[str, str, str | None, int]) -> list[bytes]:
    with multiprocessing.get_context("fork").Pool(1, maxtasksperchild=1) as pool:
        return pool.map(_synthesize_in_fresh_process, jobs)


def test_every_dialect_speaks(tmp_path: Path) -> None:
    data_dir = private_data_dir(tmp_path, {})
    lengths = {}
    for dialect, language in DIALECTS.items():
        (wave,) = [np.frombuffer(b, np.int16) for b in _fresh((str(data_dir), language, None, 0))]
        assert 1.0 < len(wave) / SAMPLE_RATE < 6.0, dialect
        assert np.abs(wave).max() > 1000
        lengths[dialect] = len(wave)
    assert len(set(lengths.values())) > 1  # accents are not one voice renamed


def test_variants_change_the_voice_and_seeded_synthesis_repeats(tmp_path: Path) -> None:
    low = sample_voice("a", "male", "en-US", np.random.default_rng(0))
    high = sample_voice("b", "female", "en-US", np.random.default_rng(0))
    data_dir = private_data_dir(tmp_path, {"low": low.variant_text(), "high": high.variant_text()})
    assert sorted(p.name for p in (data_dir / "voices" / "!v").iterdir()) == ["high", "low"]
    first, again, other_seed, other_voice = _fresh(
        (str(data_dir), "en-us", "low", 1), (str(data_dir), "en-us", "low", 1),
        (str(data_dir), "en-us", "low", 2), (str(data_dir), "en-us", "high", 1))
    assert first == again
    assert first != other_voice
    assert len(first) > 0 and len(other_seed) > 0
