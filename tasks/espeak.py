"""A minimal ctypes binding to the libespeak-ng that PyPI's `espeakng-loader` ships (no system install).

espeak-ng seeds its noise generator from the clock (fixed here with `espeak_ng_SetRandSeed` before every
utterance) and keeps further synthesis state (the flutter phase) in process-wide statics that nothing
resets, so the same text and voice give different samples depending on what the process synthesised
before. Byte-identical corpora therefore need each unit of work
(one speaker's utterances, in a fixed order) to run in a process that has never synthesised anything:
`tasks.synthetic` runs every speaker in a fresh worker process.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from speechprobe.tasks.errors import CorpusError

SAMPLE_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_VARIANT_DIR = "!v"

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _library_and_data() -> tuple[str, str]:
    """The shared library and data folder: the PyPI wheel's, else a system libespeak-ng (e.g. on aarch64)."""
    try:
        import espeakng_loader
    except ImportError:  # pragma: no cover - the wheel is a dependency; this is the aarch64 fallback
        espeakng_loader = None
    if espeakng_loader is not None:
        lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        if os.path.exists(lib):
            return lib, data
    for lib, data in (
        ("libespeak-ng.so.1", "/usr/lib/x86_64-linux-gnu/espeak-ng-data"),
        ("libespeak-ng.so.1", "/usr/lib/aarch64-linux-gnu/espeak-ng-data"),
        ("libespeak-ng.so.1", "/usr/share/espeak-ng-data"),
    ):
        if os.path.isdir(data):
            return lib, data
    raise CorpusError("espeak-ng not found: install the `espeakng-loader` wheel or a system libespeak-ng")


def private_data_dir(root: Path, variants: Mapping[str, str]) -> Path:
    """An espeak-ng data folder under `root` whose only voice variants are `variants` (name -> file text).

    espeak-ng lists at most 349 voices and variants; stock data already fills most of that list, so a
    folder holding many custom variants makes languages vanish. Each speaker therefore gets a folder of
    its own: symlinks to the dictionaries and phoneme data (19 MB, never copied) and a `voices/!v/`
    holding just that speaker's variant. Keep `root` short: espeak-ng truncates long paths.
    """
    _, data = _library_and_data()
    target = Path(root) / "espeak-ng-data"
    target.mkdir(parents=True)
    for entry in Path(data).iterdir():
        if entry.name != "voices":
            (target / entry.name).symlink_to(entry.resolve())
    variant_dir = target / "voices" / _VARIANT_DIR
    variant_dir.mkdir(parents=True)
    for name, text in variants.items():
        (variant_dir / name).write_text(text)
    return target


class Espeak:
    """One initialised espeak-ng engine; synthesises text with a language voice and a variant file."""

    def __init__(self, data_dir: Path) -> None:
        lib_path, _ = _library_and_data()
        self._lib = ctypes.CDLL(lib_path)
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.data_dir = Path(data_dir)
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_dir).encode(), 0)
        if rate != SAMPLE_RATE:
            raise CorpusError(f"espeak-ng failed to initialise from {self.data_dir} (returned {rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept on self: ctypes must not free it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples: int, _events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def synthesize(self, text: str, language: str, variant: str | None = None, rate: int = 175,
                   seed: int = 0) -> np.ndarray:
        """int16 samples at 22.05 kHz for `text` read by `language` (e.g. 'en-us') with `variant`.

        espeak-ng seeds its noise generator from the clock at start-up; `seed` replaces that.
        """
        voice = language if variant is None else f"{language}+{variant}"
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise CorpusError(f"espeak-ng has no voice {voice!r}")
        self._lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        self._chunks.clear()
        data = text.encode("utf-8")
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise CorpusError(f"espeak-ng could not synthesise {text!r} with voice {voice!r}")
        return np.concatenate(self._chunks)
