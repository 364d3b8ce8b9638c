"""Extraction: a frozen encoder reads a corpus once and writes every layer's pooled vectors to a store.

It runs as a Lightning `Trainer.predict` loop with a prediction writer, so `devices=N` (DDP over GPUs,
or CPU processes) scales it out unchanged: each rank takes every N-th batch and commits its own shards.
Batches are sorted into length buckets (longest first, so an out-of-memory batch fails in the first
seconds), every layer comes from one forward pass under inference mode, and only pooled vectors leave
the device, so memory is bounded by the batch, not the corpus.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from speechprobe.encoders.base import EncoderError, SpeechEncoder
from speechprobe.encoders.choices import DTYPES, POOLINGS, PRECISIONS
from speechprobe.encoders.interventions import BoundIntervention, Intervention, intervene
from speechprobe.encoders.pooling import pool, pooled_dim
from speechprobe.encoders.resample import resample_rows
from speechprobe.encoders.store import StoreSettings, StoreWriter
from speechprobe.encoders.windows import effective_window, encode
from speechprobe.tasks.corpus import Corpus
from speechprobe.threads import ENV as THREADS_ENV, available_cores, cpu_threads
from speechprobe.tasks.errors import CorpusError



def resolve_layers(encoder: SpeechEncoder, layers: Sequence[str] | None) -> list[int]:
    """Layer names or positions (negative from the end) -> positions; None means every layer."""
    if not layers:
        return list(range(len(encoder.layer_names)))
    positions = []
    for layer in layers:
        if layer in encoder.layer_names:
            positions.append(encoder.layer_names.index(layer))
        elif layer.lstrip("-").isdigit() and -len(encoder.layer_names) <= int(layer) < len(encoder.layer_names):
            positions.append(int(layer) % len(encoder.layer_names))
        else:
            raise EncoderError(f"encoder {encoder.name} has no layer {layer!r}; layers: {', '.join(encoder.layer_names)}")
    return sorted(set(positions))


Item = tuple[int, "np.ndarray | None", int, "str | None"]  # row, audio at its own rate, rate, error


class CorpusAudio(Dataset):
    """Utterances at their own sample rate (resampling runs batched on the device, in predict_step);
    a bad file becomes an error carried to the main process, so the user sees one line naming it
    instead of a DataLoader worker traceback."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, index: int) -> Item:
        try:
            wave, rate = self.corpus.load_native(index)
            return index, wave, rate, None
        except CorpusError as error:
            return index, None, 0, str(error)


def collate(items: list[Item]) -> dict[str, Any]:
    """Right-pad the batch with zeros; the lengths say where each row's real audio ends."""
    errors = [error for *_, error in items if error]
    waves = [wave if wave is not None else np.zeros(1, np.float32) for _, wave, _, _ in items]
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
    return {"indices": torch.tensor([i for i, *_ in items], dtype=torch.long), "waves": batch,
            "lengths": lengths, "rates": torch.tensor([rate for _, _, rate, _ in items], dtype=torch.long),
            "errors": errors}


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length (little padding), longest first; rank r of N takes batches r, r+N, ..."""

    def __init__(self, indices: Sequence[int], lengths: np.ndarray, batch_size: int, rank: int = 0,
                 world_size: int = 1) -> None:
        order = sorted(indices, key=lambda i: (-lengths[i], i))
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        self.batches = batches[rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ExtractionData(pl.LightningDataModule):
    """The pending utterances of a corpus, read on every rank after all ranks agree on what is pending."""

    def __init__(self, corpus: Corpus, writer: StoreWriter, lengths: np.ndarray, batch_size: int,
                 num_workers: int) -> None:
        super().__init__()
        self.corpus, self.writer, self.lengths = corpus, writer, lengths
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pending: list[int] = []

    def setup(self, stage: str) -> None:
        done = self.writer.done_indices()
        self.pending = [i for i in range(len(self.corpus)) if i not in done]
        if self.trainer is not None:
            self.trainer.strategy.barrier("pending-read")  # no rank commits a shard before all have read

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = LengthBucketSampler(self.pending, self.lengths, self.batch_size, rank, world)
        return DataLoader(CorpusAudio(self.corpus), batch_sampler=sampler, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=False)


class ExtractionModule(pl.LightningModule):
    """Wraps a frozen encoder: one forward pass per batch, every chosen layer pooled on the device."""

    def __init__(self, encoder: SpeechEncoder, layers: Sequence[int], pooling: str,
                 window: Optional[int] = None, intervention: Optional[Intervention] = None,
                 threads: Optional[int] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers, self.pooling, self.window = list(layers), pooling, window
        self.intervention = intervention
        self.threads = threads  # CPU threads per process (None: speechprobe.threads decides on each rank)
        self._bound: Optional[BoundIntervention] = None  # bound once per process (its tensors cached per device)

    def on_predict_start(self) -> None:
        # CPU processes share the cores, and with other processes: a torch thread beyond the free cores stalls
        # every op (speechprobe.threads: measured 2.6x with one other busy process on 2 cores)
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads or cpu_threads(self.trainer.world_size)[0])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if batch["errors"]:
            raise CorpusError(batch["errors"][0])
        waves, lengths = resample_rows(batch["waves"], batch["lengths"], batch["rates"], self.encoder.sample_rate)
        if self.intervention is not None and self._bound is None:
            self._bound = self.intervention.bind(self.encoder)
        try:
            with intervene(self.encoder, self._bound) if self._bound is not None else nullcontext():
                output = encode(self.encoder, waves, lengths, self.window, batch_size=len(batch["indices"]))
        except torch.OutOfMemoryError:
            raise EncoderError(f"out of memory on a batch of {len(batch['indices'])} utterances of up to "
                               f"{waves.shape[1] / self.encoder.sample_rate:.1f} s; "
                               "try a smaller --batch-size") from None
        pooled = [pool(output.states[l], output.frame_lengths[l], self.pooling).float().cpu() for l in self.layers]
        return {"indices": batch["indices"].cpu(), "pooled": pooled}


class ShardWriter(BasePredictionWriter):
    """Commits each batch as a shard the moment it is computed: a killed run loses one batch at most."""

    def __init__(self, writer: StoreWriter, dtype: str) -> None:
        super().__init__(write_interval="batch")
        self.writer, self.dtype = writer, dtype

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        arrays = [p.numpy().astype(self.dtype) for p in prediction["pooled"]]
        self.writer.commit_shard(prediction["indices"].numpy(), arrays)

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("shards-committed")  # rank 0 assembles only once every rank is done


class Progress(Callback):
    """utterances/s, seconds of audio per second and an ETA, counted over all ranks' share of the work."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: tqdm | None = None
        self.audio_seconds, self.start = 0.0, 0.0

    def on_predict_start(self, trainer, pl_module) -> None:
        if self.enabled and trainer.is_global_zero:
            self.bar = tqdm(total=self.total, unit="utt", desc="extracting", file=sys.stderr)
            self.start = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.bar is not None:
            n = len(batch["indices"]) * trainer.world_size  # other ranks progress alike
            seconds = (batch["lengths"].double() / batch["rates"].clamp_min(1).double()).sum()
            self.audio_seconds += float(seconds) * trainer.world_size
            self.bar.update(min(n, self.total - self.bar.n))
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix(audio_s_per_s=f"{self.audio_seconds / elapsed:.1f}")

    def on_predict_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close()  # the error then starts a line of its own, not the end of the bar's

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass(frozen=True)
class ExtractionResult:
    path: Path
    reused: bool
    is_main_process: bool
    settings: StoreSettings


def extract(corpus: Corpus, encoder: SpeechEncoder, out: str | Path, *, pooling: str = "mean",
            layers: Sequence[str] | None = None, batch_size: int = 16, devices: int = 1, accelerator: str = "auto",
            precision: str = "32", dtype: str = "float32", num_workers: int = 0,
            window_seconds: Optional[float] = None, progress: bool = True,
            intervention: Optional[Intervention] = None) -> ExtractionResult:
    """Extract (or reuse, or resume) the store at `out` for `corpus` through `encoder`.

    With `intervention` (`encoders.interventions`), every forward pass applies it: the store is that of the
    intervened encoder, its manifest records `intervention.describe()` and its cache key includes it (a
    store without one keeps its key). A callable transform cannot key a cache and is refused.

    An utterance longer than the encoder's window (Whisper: 30 s) or than `window_seconds` is encoded in
    equal windows whose frames are pooled together (`encoders.windows`): every real frame counts once.

    The store's lock is held while it is written: a second extraction into it fails at once, naming the
    process that holds it. Ctrl-C raises KeyboardInterrupt; committed shards stay, so the next run
    resumes (or starts over, saying so, when the corpus changed meanwhile).
    """
    if pooling not in POOLINGS:
        raise EncoderError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
    if dtype not in DTYPES:
        raise EncoderError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if precision not in PRECISIONS:
        raise EncoderError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if batch_size < 1 or devices < 1:
        raise EncoderError("--batch-size and --devices must be at least 1")
    positions = resolve_layers(encoder, layers)
    intervention_info = None
    if intervention is not None:
        if not isinstance(intervention, Intervention):
            raise EncoderError(f"intervention must be an Intervention, got {type(intervention).__name__}")
        bound = intervention.bind(encoder)  # a bad layer, neuron or dim fails here, before anything is written
        if not bound.content_keyed:
            raise EncoderError(f"intervention {intervention.summary()}: a callable transform has no content to key "
                               "a store on; pass affine=(mean, left, right) instead")
        intervention, intervention_info = bound.intervention, bound.describe()
    try:
        window = effective_window(encoder, window_seconds)
    except ValueError as error:
        raise EncoderError(f"--window: {error}") from None
    lengths: Optional[np.ndarray] = None  # read only when needed: without a duration column it means reading every file's header
    if window is not None:
        lengths = _sample_lengths(corpus, encoder)
        if not (lengths > window).any():
            window = None  # nothing is cut: the numbers (and so the store's key) are those of whole utterances
    settings = StoreSettings(
        encoder=encoder.name, weights_hash=encoder.weights_hash(), corpus_fingerprint=corpus.fingerprint(),
        utterances=len(corpus), pooling=pooling, dtype=dtype,
        layers=tuple(encoder.layer_names[p] for p in positions),
        layer_dims=tuple(pooled_dim(encoder.layer_dims[p], pooling) for p in positions), window=window,
        intervention=intervention_info)
    writer = StoreWriter(Path(out), settings)
    if writer.cached():  # read-only: a complete store is reused without taking its lock
        return ExtractionResult(Path(out), True, True, settings)
    with writer.lock() if _is_launching_process() else nullcontext():
        if writer.prepare():  # another run may have completed it meanwhile
            return ExtractionResult(Path(out), True, True, settings)
        if writer.notice:
            print(f"speechprobe: {out}: {writer.notice}", file=sys.stderr, flush=True)
        if lengths is None:
            lengths = _sample_lengths(corpus, encoder)
        _check_lengths(corpus, lengths, encoder)
        pending = len(corpus) - len(writer.done_indices())
        if pending and not _predict(corpus, encoder, writer, positions, lengths, pending, pooling=pooling,
                                    batch_size=batch_size, devices=devices, accelerator=accelerator,
                                    precision=precision, dtype=dtype, num_workers=num_workers, window=window,
                                    progress=progress, intervention=intervention):
            return ExtractionResult(Path(out), False, False, settings)
        writer.finalize(corpus.metadata, {"corpus_source": corpus.source, "sample_rate": encoder.sample_rate,
                                          "encoder_info": encoder.describe()})
    return ExtractionResult(Path(out), False, True, settings)


def _is_launching_process() -> bool:
    """False in the processes a distributed launcher started for ranks other than 0: they run `extract`
    again under the lock their rank 0 holds, so they must not take it themselves."""
    return all(os.environ.get(name, "0") in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def _predict(corpus: Corpus, encoder: SpeechEncoder, writer: StoreWriter, positions: list[int], lengths: np.ndarray,
             pending: int, *, pooling: str, batch_size: int, devices: int, accelerator: str, precision: str,
             dtype: str, num_workers: int, window: Optional[int], progress: bool,
             intervention: Optional[Intervention] = None) -> bool:
    """Run the pending utterances through `Trainer.predict`; True on the main process."""
    _quiet_lightning()
    try:
        trainer = pl.Trainer(
            accelerator=accelerator, devices=devices, precision=precision if precision != "32" else "32-true",
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            use_distributed_sampler=False, inference_mode=True,
            callbacks=[ShardWriter(writer, dtype), Progress(pending, progress)])
    except (ValueError, RuntimeError, MisconfigurationException) as error:  # e.g. 16-mixed or GPUs on a CPU
        raise EncoderError(f"cannot run on --accelerator {accelerator} --devices {devices} "
                           f"--precision {precision}: {' '.join(str(error).split())}") from None
    threads = None
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        try:
            threads, why = cpu_threads(devices)
        except ValueError as error:
            raise EncoderError(str(error)) from None
        share = max(1, available_cores() // devices)
        if progress and threads < share:
            print(f"speechprobe: extracting on {threads} thread{'s' if threads > 1 else ''} per process: {why} "
                  f"(set {THREADS_ENV} to choose)", file=sys.stderr, flush=True)
    module = ExtractionModule(encoder, positions, pooling, window, intervention, threads)
    data = ExtractionData(corpus, writer, lengths, batch_size, num_workers)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():
            # LengthBucketSampler returns every pending index by construction (no drop_last to set).
            warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
            trainer.predict(module, datamodule=data, return_predictions=False)
    except SystemExit:
        # Lightning answers Ctrl-C with a graceful shutdown and sys.exit(1): give the caller the
        # KeyboardInterrupt back (committed shards stay, so the next run resumes).
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        # ...and it leaves SIGINT ignored for the rest of the process.
        if sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)
    return trainer.is_global_zero


def _quiet_lightning() -> None:
    """Lightning's start-up banner (GPU available, tips) is noise in a command's output."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def _sample_lengths(corpus: Corpus, encoder: SpeechEncoder) -> np.ndarray:
    """Each utterance's length in samples at the encoder's rate."""
    return np.ceil(corpus.durations() * encoder.sample_rate).astype(np.int64)


def _check_lengths(corpus: Corpus, lengths: np.ndarray, encoder: SpeechEncoder) -> None:
    """Audio too short for the encoder fails before any compute, naming the utterance."""
    short = np.flatnonzero(lengths < encoder.min_samples)
    if len(short):
        first = short[0]
        utt = corpus.metadata["utt_id"].iloc[first] if "utt_id" in corpus.metadata else f"row {first}"
        raise EncoderError(
            f"{utt}: {lengths[first] / encoder.sample_rate:.3f} s of audio is shorter than {encoder.name}'s "
            f"receptive field ({math.ceil(encoder.min_samples) / encoder.sample_rate:.3f} s); "
            f"{len(short)} utterance(s) are too short")
