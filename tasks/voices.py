"""Synthetic speakers: a custom espeak-ng voice variant per speaker, of a gender, in one dialect.

Gender shifts the *distributions* of pitch and formant scaling, and they overlap (low female and high
male voices exist), so no single voice parameter decides gender; every other parameter is drawn from the
same distribution for every gender and dialect, so none of them leaks a label.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from speechprobe.tasks.catalog import DIALECTS

GENDERS = ("female", "male")

# (low, high) of the uniform draw for each gender; the ranges overlap on purpose.
_PITCH_BASE_HZ = {"female": (130.0, 215.0), "male": (72.0, 150.0)}
_FORMANT_SCALE = {"female": (1.00, 1.17), "male": (0.89, 1.06)}
_N_FORMANTS = 9


@dataclass(frozen=True)
class Voice:
    """One speaker's voice; `variant_text()` is its espeak-ng variant file."""

    speaker: str
    gender: str
    dialect: str
    pitch_base_hz: float
    pitch_range_hz: float
    formant_scale: float
    formant_jitter: tuple[float, ...]
    formant_height: tuple[float, ...]
    flutter: int
    roughness: int
    breath: int
    rate_wpm: int

    @property
    def language(self) -> str:
        return DIALECTS[self.dialect]

    @property
    def variant_name(self) -> str:
        return f"speechprobe-{self.speaker}"

    def variant_text(self) -> str:
        lines = [
            "language variant",
            f"name {self.variant_name}",
            f"gender {self.gender}",
            f"pitch {self.pitch_base_hz:.0f} {self.pitch_base_hz + self.pitch_range_hz:.0f}",
            f"flutter {self.flutter}",
            f"roughness {self.roughness}",
        ]
        for i, (jitter, height) in enumerate(zip(self.formant_jitter, self.formant_height)):
            lines.append(f"formant {i} {100 * self.formant_scale + jitter:.0f} {height:.0f} 100")
        if self.breath:
            lines.append("breath " + " ".join(str(self.breath) for _ in range(6)))
            lines.append("breathw 150 150 200 200 400 400")
        return "\n".join(lines) + "\n"

    def as_row(self) -> dict[str, object]:
        row = asdict(self)
        row["formant_jitter"] = " ".join(f"{v:.1f}" for v in self.formant_jitter)
        row["formant_height"] = " ".join(f"{v:.1f}" for v in self.formant_height)
        return row


def sample_voice(speaker: str, gender: str, dialect: str, rng: np.random.Generator) -> Voice:
    """Draw a distinct voice; only pitch and formant scaling depend on gender, nothing on dialect."""
    return Voice(
        speaker=speaker,
        gender=gender,
        dialect=dialect,
        pitch_base_hz=float(rng.uniform(*_PITCH_BASE_HZ[gender])),
        pitch_range_hz=float(rng.uniform(20.0, 80.0)),
        formant_scale=float(rng.uniform(*_FORMANT_SCALE[gender])),
        formant_jitter=tuple(float(v) for v in rng.uniform(-4.0, 4.0, _N_FORMANTS)),
        formant_height=tuple(float(v) for v in rng.uniform(75.0, 110.0, _N_FORMANTS)),
        flutter=int(rng.integers(0, 25)),
        roughness=int(rng.integers(0, 6)),
        breath=int(rng.choice([0, 0, 2, 4, 8])),
        rate_wpm=int(rng.integers(135, 200)),
    )
