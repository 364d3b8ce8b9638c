"""One loader for every corpus: audiofolder layouts, CSV/JSONL tables and Hugging Face datasets.

Whatever the source, a `Corpus` is the same thing downstream: a metadata table with canonical column
names (`utt_id`, `speaker`, `gender`, `dialect`, `channel`, `text`, `duration`, ...) and a way to fetch
one utterance's audio at the encoder's sample rate. Audio is fetched lazily, one row at a time, so a
corpus of any size loads in the time it takes to read its metadata; everything that can be checked
without decoding (missing columns, missing files, duplicate ids) is checked at load time.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from tasks.audio import audio_duration, decode_audio, resample
from tasks.errors import CorpusError

#: Columns that hold names, not numbers: read as strings so ids like "001" keep their zeros.
TEXT_COLUMNS = ("utt_id", "speaker", "gender", "dialect", "channel", "text", "language", "file_name")
#: Columns of a metadata table that may hold the audio path, in order of preference.
PATH_COLUMNS = ("file_name", "path", "audio")
#: Metadata tables recognised in an audiofolder layout (Hugging Face's names).
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
#: Bytes hashed at each end of every audio file by `Corpus.fingerprint`.
FINGERPRINT_BLOCK = 4096

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")


class _Audio(Protocol):
    """Where a corpus's audio lives; one implementation per kind of source."""

    def native(self, i: int) -> tuple[np.ndarray, int]: ...

    def fingerprint(self, h: Any, full: bool) -> None: ...

    def duration(self, i: int) -> float: ...


@dataclass(frozen=True, eq=False)
class Corpus:
    """Metadata (one row per utterance, canonical columns, no audio) plus lazy access to the audio."""

    metadata: pd.DataFrame
    source: str
    _audio: _Audio = field(repr=False)

    def __len__(self) -> int:
        return len(self.metadata)

    def __repr__(self) -> str:
        return f"Corpus({self.source!r}, {len(self)} utterances, columns={list(self.metadata.columns)})"

    def load_audio(self, i: int, sample_rate: int) -> np.ndarray:
        """Row `i`'s audio as float32 mono at `sample_rate`; `CorpusError` names the file if it is bad."""
        wave, native = self.load_native(i)
        return resample(wave, native, sample_rate)

    def load_native(self, i: int) -> tuple[np.ndarray, int]:
        """Row `i`'s audio at its own sample rate, for callers that resample batched (extraction)."""
        if not 0 <= int(i) < len(self):
            raise IndexError(f"utterance index {i} out of range for a corpus of {len(self)}")
        return self._audio.native(int(i))

    def iter_audio(self, sample_rate: int, indices: Sequence[int] | None = None) -> Iterator[np.ndarray]:
        """Yield waveforms in `indices` order (all rows by default), decoding one at a time."""
        for i in range(len(self)) if indices is None else indices:
            yield self.load_audio(int(i), sample_rate)

    def check(self, sample_rate: int = 16000, progress: bool = False) -> list[str]:
        """Decode every utterance and return one line per bad file (empty list: the corpus is clean).

        Load time only checks that files exist; this is the slow, complete check behind
        `speechprobe corpus --check`, run before an extraction that would otherwise die half way.
        """
        rows: Iterator[int] | Any = range(len(self))
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc=f"checking {self.source}", unit="file")
        problems = []
        for i in rows:
            try:
                self.load_audio(i, sample_rate)
            except CorpusError as exc:
                problems.append(str(exc))
        return problems

    def durations(self) -> np.ndarray:
        """Seconds per utterance, for length-bucketed batching: the `duration` column where it is
        complete, else each file's header (no decoding)."""
        if "duration" in self.metadata:
            values = pd.to_numeric(self.metadata["duration"], errors="coerce").to_numpy(dtype=float)
            if np.isfinite(values).all():
                return values
        return np.array([self._audio.duration(i) for i in range(len(self))], dtype=float)

    def fingerprint(self, full: bool = False) -> str:
        """A 16-hex-digit sha256 identifying metadata and audio, so a stored extraction can tell its corpus.

        It is content-based, not mtime-based: a byte-identical rebuild (seeded synthesis) keeps its
        fingerprint, and moving the corpus elsewhere does too (file names, not paths, are hashed). Local
        files contribute their size and first and last 4 KiB (a re-rendered or re-encoded file changes
        its header or samples there), `full=True` hashes every byte; Hugging Face datasets contribute
        the `datasets` fingerprint of their data.
        """
        h = hashlib.sha256()
        h.update(self.metadata.to_csv(index=False).encode())
        self._audio.fingerprint(h, full)
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------- audio kinds


class _FileAudio:
    """Audio files on disk, one resolved path per row."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def native(self, i: int) -> tuple[np.ndarray, int]:
        return decode_audio(self.paths[i])

    def duration(self, i: int) -> float:
        return audio_duration(self.paths[i])

    def fingerprint(self, h: Any, full: bool) -> None:
        for path in self.paths:
            h.update(_file_signature(path, full))


class _DatasetAudio:
    """A Hugging Face dataset's audio column, cast to `Audio(decode=False)` and decoded with soundfile.

    Rows carry either embedded bytes or a path; `paths` holds the resolved path of path-only rows
    (None where the row has bytes), found once at load time.
    """

    def __init__(self, dataset: Any, column: str, paths: list[Path | None], source: str) -> None:
        self.dataset, self.column, self.paths, self.source = dataset, column, paths, source

    def native(self, i: int) -> tuple[np.ndarray, int]:
        if self.paths[i] is not None:
            return decode_audio(self.paths[i])
        cell = self.dataset[i][self.column]
        name = f"{self.source} row {i}" + (f" ({cell['path']})" if cell.get("path") else "")
        return decode_audio(io.BytesIO(cell["bytes"]), name=name)

    def duration(self, i: int) -> float:
        if self.paths[i] is not None:
            return audio_duration(self.paths[i])
        return audio_duration(io.BytesIO(self.dataset[i][self.column]["bytes"]), name=f"{self.source} row {i}")

    def fingerprint(self, h: Any, full: bool) -> None:
        h.update(str(getattr(self.dataset, "_fingerprint", "")).encode())
        for path in self.paths:
            if path is not None:
                h.update(_file_signature(path, full))


def _file_signature(path: Path, full: bool) -> bytes:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if full or size <= 2 * FINGERPRINT_BLOCK:
                data = f.read()
            else:
                data = f.read(FINGERPRINT_BLOCK)
                f.seek(size - FINGERPRINT_BLOCK)
                data += f.read(FINGERPRINT_BLOCK)
    except OSError:
        return f"{path.name}:missing".encode()
    return f"{path.name}:{size}:".encode() + hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------------------------- loader


def load_corpus(
    source: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    split: str = "train",
    audio_column: str | None = None,
) -> Corpus:
    """Load a corpus from a folder, a metadata table or a Hugging Face dataset.

    `source` is (1) an audiofolder: `DIR/metadata.csv|jsonl` (or `DIR/<split>/...`) whose `file_name`
    holds paths relative to DIR; (2) a `.csv`/`.tsv`/`.jsonl` table anywhere, paths (`file_name`, `path`
    or `audio`) relative to its folder; (3) a `save_to_disk` folder, or anything `datasets.load_dataset`
    takes (a hub name, a folder of parquet files). `columns` maps canonical names to source columns,
    e.g. `{"speaker": "speaker_id", "dialect": "accent"}`. Every failure is one `CorpusError` line.
    """
    columns = dict(columns or {})
    label = str(source)
    path = Path(source).expanduser()
    if path.is_dir():
        table = _metadata_table(path, split)
        if table is not None:
            return _table_corpus(table, label, columns, audio_column)
        return _dataset_corpus(_open_dataset(path, label, split), label, columns, audio_column, path)
    if path.is_file():
        if path.suffix.lower() in _TABLE_SUFFIXES:
            return _table_corpus(path, label, columns, audio_column)
        raise CorpusError(
            f"{label}: not a corpus (expected a folder, a .csv/.tsv/.jsonl table or a Hugging Face dataset)"
        )
    if isinstance(source, Path) or not _HUB_NAME.match(label) or label.lower().endswith(_TABLE_SUFFIXES):
        raise CorpusError(f"{label}: no such corpus (no file or folder at this path)")
    return _dataset_corpus(_open_dataset(None, label, split), label, columns, audio_column, None)


def _metadata_table(folder: Path, split: str) -> Path | None:
    for base in (folder, folder / split):
        for name in METADATA_FILES:
            if (base / name).is_file():
                return base / name
    return None


# ------------------------------------------------------------------------------------ local tables


def _table_corpus(table: Path, label: str, columns: dict[str, str], audio_column: str | None) -> Corpus:
    frame = _read_table(table, label, columns, audio_column)
    frame = _map_columns(frame, columns, label)
    path_column = _path_column(frame, audio_column, label)
    if path_column != "file_name" and "file_name" not in frame.columns:
        frame = frame.rename(columns={path_column: "file_name"})
        path_column = "file_name"
    _require_rows(frame, label)
    paths = [_resolve(value, table.parent) for value in frame[path_column]]
    _require_files(paths, label)
    metadata = _finish_metadata(frame, label, list(frame[path_column]))
    return Corpus(metadata=metadata, source=label, _audio=_FileAudio(paths))


def _read_table(table: Path, label: str, columns: dict[str, str], audio_column: str | None) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL table; name columns stay strings and only empty cells count as missing
    (a dialect or gender coded "NA" is a label, not a missing value)."""
    text = set(TEXT_COLUMNS) | set(PATH_COLUMNS) | ({audio_column} if audio_column else set())
    text |= {src for canon, src in columns.items() if canon in text}
    try:
        if table.suffix.lower() == ".jsonl":
            return pd.read_json(table, lines=True, dtype=False)
        sep = "\t" if table.suffix.lower() == ".tsv" else ","
        return pd.read_csv(table, sep=sep, dtype={c: str for c in text}, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CorpusError(f"{table}: cannot read metadata table ({reason})") from None


def _path_column(frame: pd.DataFrame, audio_column: str | None, label: str) -> str:
    if audio_column is not None:
        if audio_column not in frame.columns:
            raise CorpusError(
                f"{label}: no audio column {audio_column!r} (columns: {', '.join(map(str, frame.columns))})"
            )
        return audio_column
    for name in PATH_COLUMNS:
        if name in frame.columns:
            return name
    raise CorpusError(
        f"{label}: no audio path column (expected one of {', '.join(PATH_COLUMNS)}; "
        f"columns: {', '.join(map(str, frame.columns))})"
    )


def _resolve(value: Any, base: Path) -> Path | None:
    if _is_missing(value) or str(value).strip() == "":
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _require_files(paths: Sequence[Path | None], label: str, embedded: Sequence[bool] | None = None) -> None:
    """Existence only (a stat per file): decoding everything is `Corpus.check`'s job."""
    missing = [
        i for i, p in enumerate(paths) if not (embedded and embedded[i]) and (p is None or not p.is_file())
    ]
    if missing:
        first = missing[0]
        what = f"audio file {paths[first]}" if paths[first] is not None else f"row {first} (no audio path)"
        raise CorpusError(f"{label}: {what} is missing ({len(missing)} of {len(paths)} audio files missing)")


# ---------------------------------------------------------------------------- Hugging Face datasets


def _open_dataset(folder: Path | None, label: str, split: str) -> Any:
    """A `datasets.Dataset` for the split, with every `datasets` failure turned into one line."""
    import datasets

    try:
        if folder is not None and _is_saved_dataset(folder):
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise CorpusError(f"{label}: no split {split!r} (splits: {', '.join(loaded)})")
                loaded = loaded[split]
            return loaded
        return datasets.load_dataset(str(folder) if folder is not None else label, split=split)
    except CorpusError:
        raise
    except Exception as exc:  # datasets raises anything from FileNotFoundError to ConnectionError
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        what = "cannot load as a corpus" if folder is not None else "no such file or folder, nor a hub dataset"
        raise CorpusError(f"{label}: {what} ({type(exc).__name__}: {reason})") from None


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def _dataset_corpus(
    dataset: Any, label: str, columns: dict[str, str], audio_column: str | None, folder: Path | None
) -> Corpus:
    """Metadata from every non-audio column; audio stays in the (memory-mapped) dataset until asked for."""
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        raise CorpusError(f"{label}: not a map-style Hugging Face dataset ({type(dataset).__name__})")
    column = _dataset_audio_column(dataset, audio_column, label)
    audio = dataset.select_columns([column])
    if isinstance(dataset.features[column], datasets.Audio):
        audio = audio.cast_column(column, datasets.Audio(decode=False))
    frame = _map_columns(dataset.remove_columns([column]).to_pandas(), columns, label)
    _require_rows(frame, label)
    paths, names, embedded = _scan_audio(audio, column, ([folder] if folder is not None else []) + [Path.cwd()])
    _require_files(paths, label, embedded)
    metadata = _finish_metadata(frame, label, names, index_fallback=True)
    backend = _DatasetAudio(audio, column, paths, label)
    return Corpus(metadata=metadata, source=label, _audio=backend)


def _dataset_audio_column(dataset: Any, audio_column: str | None, label: str) -> str:
    import datasets

    if audio_column is not None:
        if audio_column not in dataset.column_names:
            raise CorpusError(
                f"{label}: no audio column {audio_column!r} (columns: {', '.join(dataset.column_names)})"
            )
        return audio_column
    found = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Audio)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CorpusError(
            f"{label}: no datasets.Audio column; pass audio_column= (columns: {', '.join(dataset.column_names)})"
        )
    raise CorpusError(f"{label}: several audio columns ({', '.join(found)}); pass audio_column= to pick one")


def _scan_audio(
    audio: Any, column: str, bases: list[Path]
) -> tuple[list[Path | None], list[str | None], list[bool]]:
    """Per row: the resolved file of a path-only row (None for rows with embedded bytes), the row's
    original path, and whether it has bytes. Reads the arrow column in batches, so embedded bytes are
    never all in memory at once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    paths: list[Path | None] = []
    names: list[str | None] = []
    embedded: list[bool] = []
    for batch in audio.with_format("arrow").iter(batch_size=1024):
        cells = batch.column(column)
        if pa.types.is_struct(cells.type):
            has_bytes = pc.is_valid(pc.struct_field(cells, "bytes")).to_pylist()
            raw = pc.struct_field(cells, "path").to_pylist()
        else:  # a plain column of path strings, picked with audio_column=
            raw = cells.to_pylist()
            has_bytes = [False] * len(raw)
        for has, name in zip(has_bytes, raw):
            names.append(name)
            embedded.append(bool(has))
            paths.append(None if has else _find_file(name, bases))
    return paths, names, embedded


def _find_file(name: str | None, bases: list[Path]) -> Path | None:
    """Relative paths in a dataset are tried against its folder first, then the working directory."""
    if not name:
        return None
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    candidates = [base / path for base in bases]
    return next((c for c in candidates if c.is_file()), candidates[0])


# ------------------------------------------------------------------------------------ metadata


def _map_columns(frame: pd.DataFrame, columns: dict[str, str], label: str) -> pd.DataFrame:
    """Rename source columns to canonical names; a mapped column wins over one already so named."""
    for canon, src in columns.items():
        if src not in frame.columns:
            raise CorpusError(
                f"{label}: no column {src!r} to map to {canon!r} (columns: {', '.join(map(str, frame.columns))})"
            )
    if not columns:
        return frame
    out = frame.copy()
    for canon, src in columns.items():
        out[canon] = frame[src]
    return out.drop(columns=[src for src in set(columns.values()) if src not in columns])


def _require_rows(frame: pd.DataFrame, label: str) -> None:
    if len(frame) == 0:
        raise CorpusError(f"{label}: empty corpus (no utterances)")


def _finish_metadata(
    frame: pd.DataFrame, label: str, names: Sequence[Any], *, index_fallback: bool = False
) -> pd.DataFrame:
    """RangeIndex, string ids and speakers, and a unique `utt_id` (derived from file names if absent)."""
    frame = frame.reset_index(drop=True)
    if "utt_id" not in frame.columns:
        frame.insert(0, "utt_id", _derive_ids(names, index_fallback))
    for name in ("utt_id", "speaker"):
        if name in frame.columns:
            frame[name] = _as_text(frame[name])
    no_id = frame.index[frame["utt_id"].map(_is_missing)]
    if len(no_id):
        raise CorpusError(f"{label}: {len(no_id)} rows have no utt_id (first: row {no_id[0]})")
    counts = frame["utt_id"].value_counts()
    if counts.iloc[0] > 1:
        raise CorpusError(
            f"{label}: utt_id {counts.index[0]!r} appears {counts.iloc[0]} times; utterance ids must be unique"
        )
    return frame


def _as_text(values: pd.Series) -> pd.Series:
    """Ids as strings, missing kept missing; whole floats (an int column with gaps) lose their ".0"."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype(str)


def _derive_ids(names: Sequence[Any], index_fallback: bool) -> list[str]:
    """File stems; the relative path without suffix where stems collide (spk1/001.wav, spk2/001.wav);
    row numbers for dataset rows with no usable file names."""
    text = ["" if _is_missing(n) else str(n) for n in names]
    for make in (lambda n: Path(n).stem, lambda n: Path(n).with_suffix("").as_posix()):
        ids = [make(n) if n else "" for n in text]
        if all(ids) and len(set(ids)) == len(ids):
            return ids
    if index_fallback:
        return [str(i) for i in range(len(text))]
    return [Path(n).with_suffix("").as_posix() if n else str(i) for i, n in enumerate(text)]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT
