"""One loader for every corpus: audiofolder layouts, CSV/JSONL tables and Hugging Face datasets.

Whatever the source, a `Corpus` is the same thing downstream: a metadata table with canonical column
names (`utt_id`, `speaker`, `gender`, `dialect`, `channel`, `text`, `duration`, ...) and a way to fetch
one utterance's audio at the encoder's sample rate. Audio is fetched lazily, one row at a time, so a
corpus of any size loads in the time it takes to read its metadata; everything that can be checked
without decoding (missing columns, missing files, duplicate ids, audio paths leading out of a corpus
folder) is checked at load time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from speechprobe.io import write_text
from speechprobe.tasks.audio import audio_duration, check_length, decode_audio, resample
from speechprobe.tasks.errors import CorpusError

#: Columns that hold names, not numbers: read as strings so ids like "001" keep their zeros.
TEXT_COLUMNS = ("utt_id", "speaker", "gender", "dialect", "channel", "text", "language", "file_name")
#: Columns of a metadata table that may hold the audio path, in order of preference.
PATH_COLUMNS = ("file_name", "path", "audio")
#: Metadata tables recognised in an audiofolder layout (Hugging Face's names).
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
#: Per-file digests remembered by `Corpus.fingerprint` live under the user's cache dir ($SPEECHPROBE_CACHE,
#: else $XDG_CACHE_HOME/speechprobe), one file per corpus folder, so a rerun hashes only files that changed.
#: Never in the corpus folder: a corpus is the user's data (shared, read-only, under version control), and
#: a file written there would change what a byte-for-byte comparison of two builds sees.
_MEMO_FORMAT = "speechprobe-file-digests/sha256/1"
#: A file changed this recently when it is hashed is not remembered: a same-size rewrite within one
#: timestamp tick would keep its (path, inode, size, mtime, ctime) and so its stale digest.
RACY_WINDOW_NS = 2_000_000_000
#: A file may hold this much less audio than the metadata `duration` column says (durations in tables
#: are often rounded, or measured before a re-encode) before it counts as truncated.
DURATION_SLACK_S = 0.1
DURATION_SLACK_FRACTION = 0.02

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")


class _Audio(Protocol):
    """Where a corpus's audio lives; one implementation per kind of source."""

    def native(self, i: int) -> tuple[np.ndarray, int]: ...

    def fingerprint(self, h: Any) -> None: ...

    def duration(self, i: int) -> float: ...

    def name(self, i: int) -> str: ...


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
        """Row `i`'s audio at its own sample rate, for callers that resample batched (extraction).

        A file holding less audio than its header or the row's `duration` says is truncated: a
        `CorpusError` naming the file, never a short clip silently stored in its place."""
        if not 0 <= int(i) < len(self):
            raise IndexError(f"utterance index {i} out of range for a corpus of {len(self)}")
        wave, native = self._audio.native(int(i))
        self._check_duration(int(i), len(wave), native)
        return wave, native

    def _check_duration(self, i: int, frames: int, native: int) -> None:
        if "duration" not in self.metadata.columns or native <= 0:
            return
        try:
            promised = float(self.metadata.at[i, "duration"])
        except (TypeError, ValueError):
            return
        if np.isfinite(promised) and promised > 0:
            check_length(frames / native, promised, self._audio.name(i), what="metadata duration",
                         slack_s=DURATION_SLACK_S, fraction=DURATION_SLACK_FRACTION)

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

    def fingerprint(self, full: bool = True) -> str:
        """16 hex digits (sha256) identifying metadata and audio, so a stored extraction can tell its corpus.

        It is content-based, not mtime-based: every byte of every local audio file is hashed, so a
        byte-identical rebuild (seeded synthesis) keeps its fingerprint, moving the corpus elsewhere
        does too (file names, not paths, are hashed), and any change to any sample changes it. Per-file
        digests are remembered in the user's cache dir keyed by (path, inode, size, mtime_ns, ctime_ns), so a
        rerun only rehashes files that changed. Hugging Face datasets contribute the `datasets`
        fingerprint of their data. `full` is accepted for old callers and ignored (always full).
        """
        del full  # every byte is always hashed
        h = hashlib.sha256()
        h.update(self.metadata.to_csv(index=False).encode())
        self._audio.fingerprint(h)
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------- audio kinds


class _FileAudio:
    """Audio files on disk, one resolved path per row; `root` is the corpus folder (where the digest
    memo lives)."""

    def __init__(self, paths: list[Path], root: Path | None = None) -> None:
        self.paths = paths
        self.root = root

    def native(self, i: int) -> tuple[np.ndarray, int]:
        return decode_audio(self.paths[i])

    def duration(self, i: int) -> float:
        return audio_duration(self.paths[i])

    def name(self, i: int) -> str:
        return str(self.paths[i])

    def fingerprint(self, h: Any) -> None:
        for signature in _file_signatures(self.paths, self.root):
            h.update(signature)


class _DatasetAudio:
    """A Hugging Face dataset's audio column, cast to `Audio(decode=False)` and decoded with soundfile.

    Rows carry either embedded bytes or a path; `paths` holds the resolved path of path-only rows
    (None where the row has bytes), found once at load time.
    """

    def __init__(
        self, dataset: Any, column: str, paths: list[Path | None], source: str, root: Path | None = None
    ) -> None:
        self.dataset, self.column, self.paths, self.source, self.root = dataset, column, paths, source, root

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

    def name(self, i: int) -> str:
        if self.paths[i] is not None:
            return str(self.paths[i])
        path = self.dataset[i][self.column].get("path")
        return f"{self.source} row {i}" + (f" ({path})" if path else "")

    def fingerprint(self, h: Any) -> None:
        h.update(str(getattr(self.dataset, "_fingerprint", "")).encode())
        for signature in _file_signatures([p for p in self.paths if p is not None], self.root):
            h.update(signature)


# ------------------------------------------------------------------------------------ file digests


def _file_signatures(paths: Sequence[Path | None], root: Path | None) -> Iterator[bytes]:
    """Per file, its name, size and sha256 digest of every byte (a missing file says so).

    Digests are remembered per (absolute path, inode, size, mtime_ns, ctime_ns) in the user's cache dir
    (see `_cache_memo`): a file whose stat changed
    in any of them is hashed again, an unchanged one is not read at all."""
    paths = [p for p in paths if p is not None]
    if not paths:
        return
    memo = _DigestMemo(root)
    seen: dict[str, bytes] = {}
    for path in paths:
        key = os.path.abspath(path)
        if key not in seen:
            seen[key] = memo.signature(Path(path), key)
        yield seen[key]
    memo.save()


def _hash_file(path: Path) -> bytes:
    """sha256 of every byte: OpenSSL's, which uses the CPU's SHA instructions (1.4 GB/s here, twice
    hashlib.blake2b's 0.74 GB/s)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class _DigestMemo:
    """The memo of file digests: read from every place it may be, written back to the first that
    takes it (atomically: temp file + `os.replace`); no place writable means no memo, never an error."""

    def __init__(self, root: Path | None) -> None:
        self.places = [_cache_memo(root)]
        self.entries: dict[str, list] = {}
        for place in reversed(self.places):
            self.entries.update(_read_memo(place))
        self.changed = False

    def signature(self, path: Path, key: str) -> bytes:
        try:
            st = os.stat(key)
            stat = _stat_key(st)
            entry = self.entries.get(key)
            if entry is not None and entry[:4] == stat:
                digest = bytes.fromhex(entry[4])
            else:
                started = time.time_ns()
                digest = _hash_file(path)
                after = os.stat(key)
                if _stat_key(after) == stat and started - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_WINDOW_NS:
                    self.entries[key] = stat + [digest.hex()]
                    self.changed = True
                elif self.entries.pop(key, None) is not None:
                    self.changed = True
        except OSError:
            return f"{path.name}:missing".encode()
        return f"{path.name}:{st.st_size}:".encode() + digest

    def save(self) -> None:
        if not self.changed:
            return
        entries = {k: v for k, v in self.entries.items() if os.path.exists(k)}
        text = json.dumps({"format": _MEMO_FORMAT, "files": entries}, separators=(",", ":"))
        for place in self.places:
            if _write_atomic(place, text):
                return


def _cache_memo(root: Path | None) -> Path:
    """The memo's place under the user's cache dir ($SPEECHPROBE_CACHE, else $XDG_CACHE_HOME/speechprobe),
    one file per corpus folder."""
    cache = os.environ.get("SPEECHPROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "speechprobe"
    )
    folder = os.path.realpath(root) if root is not None else ""
    return Path(cache) / "digests" / f"{hashlib.blake2b(folder.encode(), digest_size=8).hexdigest()}.json"


def _read_memo(place: Path) -> dict[str, list]:
    try:
        memo = json.loads(place.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(memo, dict) or memo.get("format") != _MEMO_FORMAT or not isinstance(memo.get("files"), dict):
        return {}
    return {
        k: v
        for k, v in memo["files"].items()
        if isinstance(v, list) and len(v) == 5 and all(isinstance(x, int) for x in v[:4]) and _is_hex(v[4])
    }


def _is_hex(value: Any) -> bool:
    try:
        return isinstance(value, str) and len(bytes.fromhex(value)) == 32
    except ValueError:
        return False


def _write_atomic(place: Path, text: str) -> bool:
    """The memo, atomically; False (no memo, never an error) when the place cannot take it."""
    try:
        write_text(place, text)
        return True
    except OSError:
        return False


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

    An audiofolder's audio must live inside its folder: a path that leads out of it (`../x.wav`, an
    absolute path elsewhere, a symlink resolving outside) is refused, so a corpus someone sends never
    reads other files. A table given as a file is a list of audio anywhere (paths relative to its
    folder or absolute) and is not confined.
    """
    columns = dict(columns or {})
    label = str(source)
    path = Path(source).expanduser()
    if path.is_dir():
        table = _metadata_table(path, split)
        if table is not None:
            return _table_corpus(table, label, columns, audio_column, root=path)
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


def _table_corpus(
    table: Path, label: str, columns: dict[str, str], audio_column: str | None, *, root: Path | None = None
) -> Corpus:
    """`root`: the audiofolder every audio path must stay inside (None for a table given as a file)."""
    frame = _read_table(table, label, columns, audio_column)
    frame = _map_columns(frame, columns, label)
    path_column = source_column = _path_column(frame, audio_column, label)
    if path_column != "file_name" and "file_name" not in frame.columns:
        frame = frame.rename(columns={path_column: "file_name"})
        path_column = "file_name"
    _require_rows(frame, label)
    paths = [_resolve(value, table.parent) for value in frame[path_column]]
    if root is not None:
        _require_inside(paths, list(frame[path_column]), root, label, source_column)
    _require_files(paths, label)
    metadata = _finish_metadata(frame, label, list(frame[path_column]))
    audio = _FileAudio(paths, root if root is not None else table.parent)
    return Corpus(metadata=metadata, source=label, _audio=audio)


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


def _require_inside(
    paths: Sequence[Path | None], values: Sequence[Any], root: Path, label: str, column: str
) -> None:
    """Every path, symlinks followed, inside `root`; the first one that is not is named with its row."""
    real_root = os.path.realpath(root)
    outside = []
    for i, path in enumerate(paths):
        if path is not None and not _inside(os.path.realpath(path), real_root):
            outside.append(i)
    if outside:
        first = outside[0]
        how = (
            f"a symlink resolving to {os.path.realpath(paths[first])}"
            if _inside(os.path.abspath(paths[first]), os.path.abspath(root))
            else "a path outside it"
        )
        raise CorpusError(
            f"{label}: row {first} {column} {str(values[first])!r} leads outside the corpus folder ({how}; "
            f"{len(outside)} of {len(paths)} rows); audio must live inside the corpus folder"
        )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


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
    backend = _DatasetAudio(audio, column, paths, label, folder)
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
