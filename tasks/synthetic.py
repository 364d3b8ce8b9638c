"""The synthetic labelled speech corpus: speakers x dialects x genders x channels, balanced by construction.

Built offline with pip packages only (espeak-ng from `espeakng-loader`, soundfile, numpy, scipy) in the
Hugging Face `audiofolder` layout: `audio/<speaker>/<utt_id>.wav` (16 kHz mono int16) and
`metadata.csv`. The same configuration and seed give byte-identical files, whatever the number of jobs.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from speechprobe.tasks.channels import CHANNELS, SAMPLE_RATE, record
from speechprobe.tasks.errors import CorpusError
from speechprobe.tasks.espeak import SAMPLE_RATE as ESPEAK_RATE
from speechprobe.tasks.espeak import Espeak, private_data_dir
from speechprobe.tasks.texts import sentences
from speechprobe.tasks.voices import DIALECTS, GENDERS, Voice, sample_voice
from speechprobe.threads import available_cores

GENERATOR_VERSION = 1
MANIFEST = "corpus.json"
METADATA = "metadata.csv"
SPEAKERS = "speakers.csv"
VARIANT = "speaker"  # each speaker has an espeak data folder of its own, so one variant name serves

# Independent random streams, one per purpose, so adding a speaker never changes another's draws.
_UP, _DOWN = SAMPLE_RATE // math.gcd(SAMPLE_RATE, ESPEAK_RATE), ESPEAK_RATE // math.gcd(SAMPLE_RATE, ESPEAK_RATE)
_STREAM_LAYOUT, _STREAM_VOICE, _STREAM_SHARED_TEXT, _STREAM_OWN_TEXT, _STREAM_UTTERANCE = range(5)


@dataclass(frozen=True)
class CorpusConfig:
    """What to build; `utterances` is per speaker *and channel*, so every speaker is in every channel."""

    speakers: int = 64
    utterances: int = 2
    dialects: tuple[str, ...] = tuple(DIALECTS)
    channels: tuple[str, ...] = tuple(CHANNELS)
    shared_fraction: float = 0.5
    seed: int = 0

    def validate(self) -> CorpusConfig:
        unknown = [d for d in self.dialects if d not in DIALECTS]
        if unknown:
            raise CorpusError(f"unknown dialect {unknown[0]!r}; choose from {', '.join(DIALECTS)}")
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown:
            raise CorpusError(f"unknown channel {unknown[0]!r}; choose from {', '.join(CHANNELS)}")
        if not self.dialects or not self.channels:
            raise CorpusError("a corpus needs at least one dialect and one channel")
        if len(set(self.dialects)) != len(self.dialects) or len(set(self.channels)) != len(self.channels):
            raise CorpusError("--dialects and --channels must not repeat a name")
        cells = len(GENDERS) * len(self.dialects)
        if self.speakers < cells or self.speakers % cells:
            raise CorpusError(
                f"--speakers {self.speakers} cannot be balanced over {len(GENDERS)} genders x "
                f"{len(self.dialects)} dialects; use a multiple of {cells}"
            )
        if self.utterances < 1:
            raise CorpusError(f"--utterances must be at least 1, got {self.utterances}")
        if not 0.0 <= self.shared_fraction <= 1.0:
            raise CorpusError(f"shared_fraction must lie in [0, 1], got {self.shared_fraction}")
        return self

    def fingerprint(self) -> str:
        payload = json.dumps({"generator": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def utterances_per_speaker(self) -> int:
        return self.utterances * len(self.channels)


PRESETS: dict[str, CorpusConfig] = {
    "tiny": CorpusConfig(speakers=8, utterances=1, dialects=("en-US", "en-GB-scotland")),
    "default": CorpusConfig(),
    "large": CorpusConfig(speakers=320, utterances=2),
}


@dataclass(frozen=True)
class UtterancePlan:
    utt_id: str
    text: str
    text_kind: str  # "shared" with every speaker, or the speaker's "own"
    channel: str
    seed: tuple[int, ...]


@dataclass(frozen=True)
class SpeakerPlan:
    voice: Voice
    utterances: tuple[UtterancePlan, ...] = field(default_factory=tuple)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def plan_corpus(config: CorpusConfig) -> list[SpeakerPlan]:
    """Every speaker's voice and every utterance's text, channel and seed; no audio yet."""
    config.validate()
    cells = [(dialect, gender) for dialect in config.dialects for gender in GENDERS]
    per_cell = config.speakers // len(cells)
    # Speaker numbers are shuffled over cells so that an id says nothing about its labels.
    order = _rng(config.seed, _STREAM_LAYOUT).permutation(config.speakers)
    n_total = config.utterances_per_speaker
    n_shared = int(round(n_total * config.shared_fraction))
    shared = sentences(_rng(config.seed, _STREAM_SHARED_TEXT), n_shared)
    plans = []
    for slot, number in enumerate(order):
        dialect, gender = cells[slot // per_cell]
        speaker = f"spk{number:03d}"
        voice = sample_voice(speaker, gender, dialect, _rng(config.seed, _STREAM_VOICE, int(number)))
        text_rng = _rng(config.seed, _STREAM_OWN_TEXT, int(number))
        own = [t for t in sentences(text_rng, n_total) if t not in shared][: n_total - n_shared]
        texts = [(t, "shared") for t in shared] + [(t, "own") for t in own]
        texts = [texts[i] for i in text_rng.permutation(len(texts))]
        channels = [c for c in config.channels for _ in range(config.utterances)]
        channels = [channels[i] for i in text_rng.permutation(len(channels))]
        utterances = tuple(
            UtterancePlan(f"{speaker}-{u:03d}", text, kind, channel, (config.seed, _STREAM_UTTERANCE, int(number), u))
            for u, ((text, kind), channel) in enumerate(zip(texts, channels))
        )
        plans.append(SpeakerPlan(voice, utterances))
    return sorted(plans, key=lambda p: p.voice.speaker)


def _render_speaker(plan: SpeakerPlan, out_dir: str) -> list[dict[str, object]]:
    """Synthesise, record and write one speaker's files; runs in a fresh process (see tasks.espeak)."""
    voice = plan.voice
    with tempfile.TemporaryDirectory(prefix="sp-") as root:
        engine = Espeak(private_data_dir(Path(root), {VARIANT: voice.variant_text()}))
        return [_render_utterance(engine, voice, utt, Path(out_dir)) for utt in plan.utterances]


def _render_utterance(engine: Espeak, voice: Voice, utt: UtterancePlan, out_dir: Path) -> dict[str, object]:
    dry = engine.synthesize(utt.text, voice.language, VARIANT, voice.rate_wpm, seed=utt.seed[-1])
    speech = signal.resample_poly(dry.astype(np.float64) / 32768.0, _UP, _DOWN)
    samples, params = record(speech, utt.channel, _rng(*utt.seed))
    file_name = f"audio/{voice.speaker}/{utt.utt_id}.wav"
    path = out_dir / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return {
        "file_name": file_name,
        "utt_id": utt.utt_id,
        "speaker": voice.speaker,
        "gender": voice.gender,
        "dialect": voice.dialect,
        "channel": utt.channel,
        "text": utt.text,
        "duration": round(len(samples) / SAMPLE_RATE, 4),
        "text_kind": utt.text_kind,
        "channel_params": json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in sorted(params.items())}),
    }


def read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def build_corpus(out: str | Path, config: CorpusConfig = CorpusConfig(), *, jobs: int | None = None,
                 progress: bool = True) -> tuple[Path, bool]:
    """Build the corpus into `out` (or reuse it); returns the folder and whether it was reused.

    The corpus is written to a temporary sibling folder and renamed into place when complete, so `out`
    never holds half a corpus; a folder holding anything else is never overwritten.
    """
    config.validate()
    out = Path(out)
    if out.exists():
        manifest = read_manifest(out)
        if manifest is not None and manifest.get("fingerprint") == config.fingerprint():
            return out, True
        if manifest is not None:
            raise CorpusError(f"{out} already holds a different corpus ({_describe(manifest['config'])}); "
                              "choose another --out or remove it")
        if not out.is_dir() or any(out.iterdir()):
            raise CorpusError(f"{out} exists and is not a speechprobe corpus; choose another --out")
    plans = plan_corpus(config)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        rows = _render_all(plans, tmp, jobs or available_cores(), progress)
        metadata = pd.DataFrame(rows).sort_values("utt_id", kind="stable").reset_index(drop=True)
        metadata.to_csv(tmp / METADATA, index=False)
        pd.DataFrame([p.voice.as_row() for p in plans]).to_csv(tmp / SPEAKERS, index=False)
        manifest = {
            "format": "speechprobe-synthetic-corpus",
            "generator_version": GENERATOR_VERSION,
            "fingerprint": config.fingerprint(),
            "config": asdict(config),
            "speakers": config.speakers,
            "utterances": len(metadata),
            "sample_rate": SAMPLE_RATE,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()  # verified empty above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, False


def _render_all(plans: list[SpeakerPlan], out_dir: Path, jobs: int,
                progress: bool) -> list[dict[str, object]]:
    """One fresh process per speaker (maxtasksperchild=1), so espeak's hidden state starts pristine.

    Workers run only numpy/scipy/soundfile/espeak code, never torch. How they start: `start_method`.
    """
    context = multiprocessing.get_context(start_method())
    total = sum(len(p.utterances) for p in plans)
    rows: list[dict[str, object]] = []
    work = [(plan, str(out_dir)) for plan in plans]
    with context.Pool(processes=min(jobs, len(plans)), maxtasksperchild=1) as pool, \
            tqdm(total=total, unit="utt", desc="synthesising", disable=not progress) as bar:
        for speaker_rows in pool.imap_unordered(_render_speaker_job, work):
            rows.extend(speaker_rows)
            bar.update(len(speaker_rows))
    return rows


def start_method() -> str:
    """``fork`` while this process runs a single OS thread: cheap, and it needs no ``__main__`` guard in the
    caller's script or notebook. Once other threads exist (torch's OpenMP pool, a progress bar's monitor, a
    logger's writer), forking copies whatever lock one of them held at that instant, and a worker can wait on
    it forever: seen in the test suite, a forked worker blocked on a futex after torch and Lightning had run
    in the same process. Then ``forkserver``: workers are forked from a clean single-threaded server (a script
    without a ``__main__`` guard would be imported by it, the usual rule of spawn-like starts)."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc (macOS, Windows): count Python's threads, the ones we can see
        import threading

        threads = threading.active_count()
    if threads <= 1 or "forkserver" not in multiprocessing.get_all_start_methods():
        return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return "forkserver"


def _render_speaker_job(job: tuple[SpeakerPlan, str]) -> list[dict[str, object]]:
    return _render_speaker(*job)


def _describe(config: dict) -> str:
    return (f"{config.get('speakers')} speakers, {config.get('utterances')} utterances per channel, "
            f"seed {config.get('seed')}")


def config_from_args(preset: str = "default", **overrides: object) -> CorpusConfig:
    """A preset with the given fields replaced (None means keep the preset's value)."""
    if preset not in PRESETS:
        raise CorpusError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return replace(PRESETS[preset], **changes).validate()
