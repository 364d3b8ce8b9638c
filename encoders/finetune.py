"""Fine-tune the shipped Whisper tiny.en on a corpus's transcripts, so `speechprobe compare` has a pretrained
model and its fine-tuned self (`speechprobe finetune`).

    export_whisper("data/checkpoints/whisper-tiny.en")                       # A: the shipped weights, untouched
    finetune_whisper(corpus, "data/checkpoints/whisper-tiny.en-ft", steps=20)  # B: A after 20 Adam steps

Both write a transformers folder (`save_pretrained`: config.json, model.safetensors, generation_config.json,
plus the `WhisperFeatureExtractor`'s preprocessor_config.json) that loads as the encoder `hf:<folder>`
(`encoders.hf` hands Whisper folders to `WhisperEncoder`; `encoders.checkpoints` maps its layers to
parameters). The whole model (encoder and decoder) is saved; the probes read only the encoder.

Training: the whole model from the shipped tiny.en (the encoder's sinusoidal positions stay frozen, as
transformers keeps them), teacher-forced cross-entropy of each row's transcript (column `text`) given its
audio: log-mel features from `WhisperFeatureExtractor()` on `corpus.load_audio(i, 16000)` (30 s window), token
sequence `<|startoftranscript|><|notimestamps|>` + text tokens (shipped tokenizer, leading space as Whisper
writes text) + `<|endoftext|>`; the decoder reads the sequence without its last token and is scored on it
without its first (transformers' `labels=` loss, padding as -100), so `<|notimestamps|>`, the text and the end
token are predicted. Adam, fixed learning rate, `steps` batches of `batch_size` rows drawn in a seeded
permutation of the rows (a new permutation each pass), on the CPU; the global torch RNG is left as it was.
Default rows: the clean-channel rows (`metadata.channel == "clean"`) where the corpus has that column, else all.

The folder is written atomically: into a hidden temporary sibling, then renamed; an existing non-empty `out`
is refused before any work. `finetune.json` in the folder records the settings and the loss of each step.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from speechprobe.encoders.errors import EncoderError
from speechprobe.encoders.whisper_conversion import MODEL_NAME
from speechprobe.io import write_directory

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration

    from speechprobe.tasks.corpus import Corpus

__all__ = ["SAMPLE_RATE", "RECORD", "export_whisper", "finetune_whisper", "transcript_loss", "default_rows"]

SAMPLE_RATE = 16000
#: the training record written next to the weights
RECORD = "finetune.json"
_SOT, _NO_TIMESTAMPS, _EOT = "<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"


# --------------------------------------------------------------------------------------------------
# Output folder


def check_out(out: Union[str, os.PathLike]) -> Path:
    """The model folder: new, or an empty folder (a trained model is never written over another)."""
    path = Path(out).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EncoderError(f"{path}: exists and is not a folder; give a new folder for the model")
        if any(path.iterdir()):
            raise EncoderError(f"{path}: folder exists and is not empty; refusing to overwrite it "
                               "(remove it or give another --out)")
    return path


def _write_model(out: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` into a temporary sibling of `out`, renamed to `out` (new or empty) only when complete."""
    return write_directory(check_out(out), write)


def _save(model: WhisperForConditionalGeneration, folder: Path, record: Optional[dict[str, Any]] = None) -> None:
    from transformers import WhisperFeatureExtractor

    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(folder)
    if record is not None:
        (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _shipped_model() -> WhisperForConditionalGeneration:
    from speechprobe.encoders.whisper import load_whisper_tiny_en_model

    return load_whisper_tiny_en_model()


def export_whisper(out: Union[str, os.PathLike]) -> Path:
    """The shipped tiny.en, untrained, as an `hf:` folder (the reference A of a comparison)."""
    check_out(out)
    model = _shipped_model()
    return _write_model(Path(out).expanduser(), lambda folder: _save(model, folder, {"base": MODEL_NAME, "steps": 0}))


# --------------------------------------------------------------------------------------------------
# Data


def _load_corpus(corpus: Union[Corpus, str, os.PathLike]) -> Corpus:
    if isinstance(corpus, (str, os.PathLike)):
        from speechprobe.tasks.corpus import load_corpus

        return load_corpus(corpus)
    return corpus


def default_rows(corpus: Corpus) -> list[int]:
    """The clean-channel rows where the corpus has a `channel` column, else every row."""
    meta = corpus.metadata
    if "channel" in meta.columns:
        return [int(i) for i in np.flatnonzero((meta["channel"] == "clean").to_numpy())]
    return list(range(len(meta)))


def _check_rows(corpus: Corpus, rows: Optional[Sequence[int]]) -> list[int]:
    meta = corpus.metadata
    if "text" not in meta.columns:
        raise EncoderError("fine-tuning needs a `text` column (the transcripts); the corpus has "
                           f"{', '.join(map(str, meta.columns))}")
    chosen = default_rows(corpus) if rows is None else [int(i) for i in rows]
    if not chosen:
        raise EncoderError("fine-tuning: no rows to train on" + (" (the corpus has no clean-channel rows; "
                                                                  "pass rows)" if rows is None else ""))
    bad = [i for i in chosen if not 0 <= i < len(meta)]
    if bad:
        raise EncoderError(f"fine-tuning: row {bad[0]} is out of range (the corpus has {len(meta)} rows)")
    texts = meta["text"].iloc[chosen]
    empty = [i for i, text in zip(chosen, texts) if not isinstance(text, str) or not text.strip()]
    if empty:
        raise EncoderError(f"fine-tuning: row {empty[0]} has no transcript (empty `text`)")
    return chosen


class _Examples:
    """Features and token sequences of corpus rows, computed once per row."""

    def __init__(self, corpus: Corpus, max_tokens: int) -> None:
        from transformers import WhisperFeatureExtractor

        from speechprobe.encoders.transcription import _shipped_tokenizer, _tokenizer_path

        self.corpus = corpus
        self.max_tokens = max_tokens
        self.extractor = WhisperFeatureExtractor()
        self.tokenizer = _shipped_tokenizer(str(_tokenizer_path()))
        self.special = [self._token(name) for name in (_SOT, _NO_TIMESTAMPS, _EOT)]
        self.cache: dict[int, tuple[Tensor, list[int]]] = {}

    def _token(self, name: str) -> int:
        token = self.tokenizer.token_to_id(name)
        if token is None:
            raise EncoderError(f"{MODEL_NAME}: the shipped tokenizer has no {name} token")
        return int(token)

    def tokens(self, text: str) -> list[int]:
        sot, no_timestamps, eot = self.special
        ids = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
        return [sot, no_timestamps, *ids, eot]

    def example(self, row: int) -> tuple[Tensor, list[int]]:
        if row not in self.cache:
            wave = self.corpus.load_audio(row, SAMPLE_RATE)
            features = self.extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features[0]
            tokens = self.tokens(str(self.corpus.metadata["text"].iloc[row]))
            if len(tokens) - 1 > self.max_tokens:
                raise EncoderError(f"fine-tuning: row {row}'s transcript is {len(tokens) - 2} tokens, more than "
                                   f"the decoder's {self.max_tokens - 1}")
            self.cache[row] = (features, tokens)
        return self.cache[row]

    def batch(self, rows: Sequence[int]) -> dict[str, Tensor]:
        """`input_features`, `decoder_input_ids` (sequence minus its last token, padded with EOT) and `labels`
        (minus its first, padded with -100) for transformers' Whisper."""
        examples = [self.example(row) for row in rows]
        width = max(len(tokens) for _, tokens in examples) - 1
        eot = self.special[2]
        inputs = torch.full((len(rows), width), eot, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for k, (_, tokens) in enumerate(examples):
            inputs[k, : len(tokens) - 1] = torch.tensor(tokens[:-1])
            labels[k, : len(tokens) - 1] = torch.tensor(tokens[1:])
        features = torch.stack([features for features, _ in examples])
        return {"input_features": features, "decoder_input_ids": inputs, "labels": labels}


def _order(rows: list[int], steps: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """`steps` batches: consecutive slices of seeded permutations of `rows` (a fresh one each pass)."""
    generator = np.random.default_rng(seed)
    queue: list[int] = []
    for _ in range(steps):
        while len(queue) < min(batch_size, len(rows)):
            queue.extend(rows[i] for i in generator.permutation(len(rows)))
        size = min(batch_size, len(rows))
        yield queue[:size]
        queue = queue[size:]


# --------------------------------------------------------------------------------------------------
# Loss and training


def transcript_loss(model: WhisperForConditionalGeneration, corpus: Union[Corpus, str, os.PathLike],
                    rows: Sequence[int]) -> float:
    """The teacher-forced cross-entropy (mean over predicted tokens) of `rows`' transcripts, in eval mode."""
    corpus = _load_corpus(corpus)
    rows = _check_rows(corpus, rows)
    examples = _Examples(corpus, int(model.config.max_target_positions))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(model(**examples.batch(rows)).loss)
    finally:
        model.train(was_training)


def _check_settings(steps: int, lr: float, batch_size: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise EncoderError(f"fine-tuning: steps must be a whole number >= 1, got {steps!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise EncoderError(f"fine-tuning: the learning rate must be a finite number > 0, got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EncoderError(f"fine-tuning: batch_size must be a whole number >= 1, got {batch_size!r}")


def finetune_whisper(corpus: Union[Corpus, str, os.PathLike], out: Union[str, os.PathLike], *,
                     rows: Optional[Sequence[int]] = None, steps: int = 20, lr: float = 1e-5, batch_size: int = 4,
                     seed: int = 0, progress: bool = True) -> Path:
    """Train the shipped tiny.en for `steps` Adam steps on `rows`' transcripts; save it to `out` (an `hf:` folder).

    See the module text. Returns `out`. Raises `EncoderError` (one line) for bad settings, rows or transcripts,
    or an existing non-empty `out`, before any training.
    """
    _check_settings(steps, lr, batch_size)
    out = check_out(out)
    corpus = _load_corpus(corpus)
    rows = _check_rows(corpus, rows)
    model = _shipped_model()
    examples = _Examples(corpus, int(model.config.max_target_positions))
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        model.requires_grad_(True)
        model.model.encoder.embed_positions.requires_grad_(False)  # sinusoidal, frozen as transformers has it
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=float(lr))
        batches = _order(rows, int(steps), int(batch_size), int(seed))
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=int(steps), desc=f"fine-tuning {MODEL_NAME}", unit="step")
        for batch_rows in batches:
            loss = model(**examples.batch(batch_rows)).loss
            if not torch.isfinite(loss):
                raise EncoderError(f"fine-tuning: the loss became {float(loss)} at step {len(losses) + 1}; "
                                   "try a smaller learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress and hasattr(batches, "set_postfix"):
                batches.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval().requires_grad_(False)
    record = {"base": MODEL_NAME, "steps": int(steps), "lr": float(lr), "batch_size": int(batch_size),
              "seed": int(seed), "rows": len(rows), "losses": losses}
    return _write_model(out, lambda folder: _save(model, folder, record))
