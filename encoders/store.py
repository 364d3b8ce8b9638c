"""The representation store: the contract between extraction (expensive, once) and every analysis.

A directory:
- `manifest.json`: encoder (name, weights hash, layers, dims), corpus fingerprint, pooling, dtype,
  software versions; written last, so its presence means the store is complete;
- `index.csv`: one row per utterance (store row i = corpus row i) with every label column;
- `layers/<layer>.npy`: one N x D array per layer, memory-mappable, so loading one layer never reads
  the others.
While extraction runs, `extraction.json` holds the settings and `shards/` the committed batches (each
written to a temporary name and renamed), so a killed extraction resumes without redoing them; `.lock`
(held) and `.lock.owner` (pid and host) keep a second extraction out.

Every write goes to a temporary name with ordinary file writes (never a memory map, which dies of SIGBUS
on a full disk) and is renamed into place; a failed write removes its temporaries and raises an
`EncoderError` naming the store. Opening a store validates it (manifest entries, array headers against the
manifest, rows against the index) without reading the arrays; `check_store` also reads every value.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from speechprobe.encoders.errors import EncoderError
from speechprobe.io import write_json

FORMAT = "speechprobe-representation-store"
VERSION = 1
MANIFEST, INDEX, PENDING = "manifest.json", "index.csv", "extraction.json"
LAYERS_DIR, SHARDS_DIR = "layers", "shards"
LOCK, LOCK_OWNER = ".lock", ".lock.owner"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class StoreSettings:
    """Everything the stored numbers depend on; a store is reused only when all of it matches."""

    encoder: str
    weights_hash: str
    corpus_fingerprint: str
    utterances: int
    pooling: str
    dtype: str
    layers: tuple[str, ...]
    layer_dims: tuple[int, ...]  # pooled dims, as stored
    # samples per window, set only when some utterance was longer than it (encoded in windows, frames joined)
    window: Optional[int] = None
    # what `encoders.interventions.Intervention.describe()` says, set only for a store of an intervened forward
    # pass (a plain store's key, and manifest, stay as they were)
    intervention: Optional[dict] = None

    def key(self) -> str:
        # a setting left at None is left out, so stores written before it existed keep their keys
        plain = {name: value for name, value in asdict(self).items() if value is not None}
        return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (f"encoder {self.encoder} ({self.weights_hash}), corpus {self.corpus_fingerprint}, "
                f"{self.pooling} pooling, {self.dtype}, {len(self.layers)} layers"
                + (f", intervention {_describe_intervention(self.intervention)}" if self.intervention else ""))


def _describe_intervention(info: object) -> str:
    """"mean of 2 neurons at lstm2" from an intervention's description."""
    if not isinstance(info, dict):
        return repr(info)
    neurons = info.get("neurons")
    chosen = "every neuron" if neurons == "all" else (
        f"{len(neurons)} neurons" if isinstance(neurons, list) else repr(neurons))
    return f"{info.get('mode')} of {chosen} at {info.get('layer')}"


def _write_json(path: Path, payload: dict) -> None:
    write_json(path, payload, indent=2, sort_keys=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_json(path: Path) -> dict | None:
    """None if `path` is absent; an EncoderError naming it if it is there but not a JSON object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise EncoderError(f"{path}: cannot be read ({getattr(error, 'strerror', None) or error}); "
                           "the store is damaged") from None
    try:
        payload = json.loads(text)
    except ValueError as error:
        raise EncoderError(f"{path}: not valid JSON ({error}); the store is damaged") from None
    if not isinstance(payload, dict):
        raise EncoderError(f"{path}: holds a JSON {type(payload).__name__}, not an object; the store is damaged")
    return payload


@contextmanager
def _writing(store: Path, what: str) -> Iterator[None]:
    """A failed write of `what` becomes one line naming the store: a full disk says so."""
    try:
        yield
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise EncoderError(f"{store}: no space left on device while writing {what}; nothing half-written "
                               "was kept (committed shards stay for a resume): free some space and run the "
                               "extraction again") from None
        target = error.filename or store
        raise EncoderError(f"{target}: cannot write {what}: {error.strerror or error}") from None


def _pwrite_all(fd: int, data: bytes | memoryview, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view, position = view[written:], position + written


def _preallocate(fd: int, size: int) -> None:
    """Reserve the file's blocks up front, so a full disk fails here, before any row is written."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            return  # not supported here: the ordinary writes below still report a full disk
        raise


def layer_file_name(layer: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in layer) + ".npy"


class StoreWriter:
    """Commits shards atomically and assembles them into the final per-layer arrays."""

    def __init__(self, path: Path, settings: StoreSettings) -> None:
        self.path = Path(path)
        self.settings = settings
        self.notice: str | None = None  # why `prepare` started over, for the caller to tell the user

    def cached(self) -> bool:
        """True if a complete store with these settings is there; raises if `path` holds something else.

        Read-only (no lock, nothing written), so a cache hit works on a read-only store and a foreign
        folder gets no lock file.
        """
        manifest = _load_json(self.path / MANIFEST)
        if manifest is not None:
            if manifest.get("key") == self.settings.key():
                return True
            raise EncoderError(f"{self.path} already holds a different store ({_describe_manifest(manifest)}); "
                               "choose another --out or remove it")
        if self.path.exists() and not self.path.is_dir():
            raise EncoderError(f"{self.path} exists and is not a representation store; choose another --out")
        if (self.path / PENDING).exists():
            return False
        if self.path.is_dir() and any(entry.name not in (LOCK, LOCK_OWNER) for entry in self.path.iterdir()):
            raise EncoderError(f"{self.path} exists and is not a representation store; choose another --out")
        return False

    def lock(self):
        """Hold the store's lock while extracting (see `store_lock`)."""
        return store_lock(self.path)

    def prepare(self) -> bool:
        """True if a complete store with these settings is already there (a cache hit).

        A partial store with the same settings is resumed; one whose corpus changed since it started is
        started over (`notice` says so); a store with other settings, or a folder holding anything
        else, is refused and left untouched.
        """
        if self.cached():
            return True
        pending = _load_json(self.path / PENDING)
        if pending is not None and pending.get("key") != self.settings.key():
            theirs = pending.get("settings") if isinstance(pending.get("settings"), dict) else {}
            ours = asdict(self.settings)
            differ = [k for k in ours if k not in ("corpus_fingerprint", "utterances")
                      and _jsonable(theirs.get(k)) != _jsonable(ours[k])]
            if differ or not theirs:
                shown = ", ".join(f"{k} {theirs.get(k)!r} (now {ours[k]!r})" for k in differ[:3])
                raise EncoderError(f"{self.path} holds an unfinished extraction with other settings "
                                   f"({shown or 'unknown'}); choose another --out or remove it")
            self.notice = "the corpus changed since the unfinished extraction started; starting over"
            # the old shards go first: a run killed in between finds the old settings and starts over again
            shutil.rmtree(self.path / SHARDS_DIR, ignore_errors=True)
            pending = None
        with _writing(self.path, "the extraction settings"):
            (self.path / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
            if pending is None:
                _write_json(self.path / PENDING, {"key": self.settings.key(), "settings": asdict(self.settings)})
        return False

    def done_indices(self) -> set[int]:
        """Utterances of committed shards; a shard that does not read back is deleted and redone."""
        done: set[int] = set()
        for shard in sorted((self.path / SHARDS_DIR).glob("*.npz")):
            try:
                with np.load(shard) as data:
                    done.update(int(i) for i in data["indices"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                shard.unlink(missing_ok=True)
        return done

    def commit_shard(self, indices: np.ndarray, arrays: list[np.ndarray]) -> Path:
        """Write one batch's pooled vectors under a name derived from its rows, then rename into place."""
        indices = np.asarray(indices, dtype=np.int64)
        name = f"shard-{int(indices.min()):08d}-{hashlib.sha1(indices.tobytes()).hexdigest()[:10]}.npz"
        target = self.path / SHARDS_DIR / name
        with _writing(self.path, "a shard"):
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".npz")
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.savez(handle, indices=indices, **{f"layer{i}": a for i, a in enumerate(arrays)})
                os.replace(tmp, target)
            except BaseException:  # a full disk, or Ctrl-C mid-write: no half-written shard stays
                Path(tmp).unlink(missing_ok=True)
                raise
        return target

    def finalize(self, index: pd.DataFrame, extra: dict[str, object]) -> None:
        """Assemble shards into one array per layer, then write the index and, last, the manifest.

        Every file is written under a temporary name with ordinary writes into preallocated space and
        renamed into place only when all are complete; on any failure the temporaries are removed and
        the shards stay, so the next run assembles again.
        """
        settings = self.settings
        layers_dir = self.path / LAYERS_DIR
        tmp_paths = [layers_dir / f".{layer_file_name(name)}.tmp" for name in settings.layers]
        index_tmp = self.path / f".{INDEX}.tmp"
        try:
            with _writing(self.path, "the layer arrays"):
                layers_dir.mkdir(exist_ok=True)
                for stale in layers_dir.glob(".*.tmp"):  # left by a run killed mid-assembly
                    stale.unlink(missing_ok=True)
                self._assemble(tmp_paths)
            with _writing(self.path, INDEX):
                index.to_csv(index_tmp, index=False)
            with _writing(self.path, "the layer arrays"):
                for tmp, name in zip(tmp_paths, settings.layers):
                    os.replace(tmp, layers_dir / layer_file_name(name))
                os.replace(index_tmp, self.path / INDEX)
            with _writing(self.path, MANIFEST):
                _write_json(self.path / MANIFEST, {
                    "format": FORMAT, "version": VERSION, "key": settings.key(), **_manifest_settings(settings),
                    "layer_files": [f"{LAYERS_DIR}/{layer_file_name(name)}" for name in settings.layers],
                    "software": software_versions(), **extra,
                })
        finally:
            for tmp in (*tmp_paths, index_tmp):
                tmp.unlink(missing_ok=True)
        shutil.rmtree(self.path / SHARDS_DIR, ignore_errors=True)
        (self.path / PENDING).unlink(missing_ok=True)

    def _assemble(self, tmp_paths: list[Path]) -> None:
        n, settings = self.settings.utterances, self.settings
        dtype = np.dtype(settings.dtype)
        handles, offsets = [], []
        try:
            for tmp, dim in zip(tmp_paths, settings.layer_dims):
                handle = open(tmp, "wb")
                handles.append(handle)
                np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                              "fortran_order": False, "shape": (n, dim)})
                handle.flush()
                offsets.append(handle.tell())
                _preallocate(handle.fileno(), handle.tell() + n * dim * dtype.itemsize)
            filled = np.zeros(n, dtype=bool)
            for shard in sorted((self.path / SHARDS_DIR).glob("*.npz")):
                rows, arrays = self._read_shard(shard)
                order = np.argsort(rows, kind="stable")
                rows = rows[order]
                # runs of consecutive rows go out in one write each
                breaks = np.flatnonzero(np.diff(rows) != 1) + 1
                for handle, offset, dim, array in zip(handles, offsets, settings.layer_dims, arrays):
                    array = np.ascontiguousarray(array[order], dtype=dtype)
                    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
                        _pwrite_all(handle.fileno(), array[start:stop].tobytes(),
                                    offset + int(rows[start]) * dim * dtype.itemsize)
                filled[rows] = True
            if not filled.all():
                missing = np.flatnonzero(~filled)
                raise EncoderError(f"{self.path}: {len(missing)} utterances were not extracted (first: row {missing[0]})")
            for handle in handles:
                os.fsync(handle.fileno())
        finally:
            for handle in handles:
                handle.close()

    def _read_shard(self, shard: Path) -> tuple[np.ndarray, list[np.ndarray]]:
        """A shard's rows and layers, checked against the settings; a damaged one is removed (redone next run)."""
        n, dims = self.settings.utterances, self.settings.layer_dims
        try:
            with np.load(shard, allow_pickle=False) as data:
                rows = np.asarray(data["indices"], dtype=np.int64)
                arrays = [np.asarray(data[f"layer{i}"]) for i in range(len(dims))]
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            problem = f"cannot be read ({error})"
        else:
            if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
                problem = f"holds rows outside 0..{n - 1}"
            elif any(a.shape != (len(rows), d) or a.dtype.kind not in "fiu" for a, d in zip(arrays, dims)):
                problem = "holds arrays of the wrong shape or type"
            else:
                return rows, arrays
        shard.unlink(missing_ok=True)
        raise EncoderError(f"{shard}: a damaged shard {problem} was removed; run the extraction again to redo "
                           "its utterances")


@contextmanager
def store_lock(path: str | Path) -> Iterator[None]:
    """Hold a store's lock (creating its folder): a second holder fails at once with an EncoderError naming
    this process (pid and host, from the `.lock.owner` sidecar), instead of both writing the same shards."""
    from filelock import FileLock, Timeout

    path = Path(path)
    with _writing(path, "the lock file"):
        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:  # a TimeoutError, so an OSError: turned into the message here, not by `_writing`
            raise EncoderError(f"{path} is being written by another extraction ({lock_holder(path)}); "
                               "wait for it to finish, or stop it and run again") from None
    try:
        with _writing(path, "the lock file"):
            _write_json(path / LOCK_OWNER, {"pid": os.getpid(), "host": socket.gethostname(),
                                            "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield
    finally:
        (path / LOCK_OWNER).unlink(missing_ok=True)
        lock.release()


def lock_holder(path: str | Path) -> str:
    """Who holds a store's lock, from its sidecar file: "pid 123 on host h since ..."."""
    owner = _read_json(Path(path) / LOCK_OWNER)
    if not isinstance(owner, dict) or "pid" not in owner:
        return "a process that has not yet said which"
    return f"pid {owner['pid']} on {owner.get('host', '?')} since {owner.get('since', '?')}"


def _manifest_settings(settings: StoreSettings) -> dict:
    """The settings as the manifest records them; `intervention` only where there is one."""
    recorded = asdict(settings)
    if recorded.get("intervention") is None:
        recorded.pop("intervention", None)
    return recorded


def _jsonable(value: object) -> object:
    """Tuples and lists compare equal after a JSON round trip."""
    return json.loads(json.dumps(value))


def software_versions() -> dict[str, str]:
    import torch
    import transformers

    from importlib.metadata import PackageNotFoundError, version

    try:
        speechprobe = version("speechprobe")
    except PackageNotFoundError:  # running from a source tree
        speechprobe = "source"
    return {"speechprobe": speechprobe, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "transformers": transformers.__version__}


def _describe_manifest(manifest: dict) -> str:
    return (f"encoder {manifest.get('encoder')}, corpus {manifest.get('corpus_fingerprint')}, "
            f"{manifest.get('pooling')} pooling, {manifest.get('dtype')}"
            + (f", intervention {_describe_intervention(manifest['intervention'])}" if manifest.get("intervention") else ""))


_REQUIRED = {"encoder": str, "weights_hash": str, "corpus_fingerprint": str, "utterances": int, "pooling": str,
             "dtype": str, "layers": list, "layer_dims": list, "layer_files": list}


def _open_manifest(path: Path) -> dict:
    """The manifest, or an EncoderError saying why this folder is not a usable store."""
    manifest = _load_json(path / MANIFEST)
    if manifest is None:
        if (path / PENDING).exists():
            raise EncoderError(f"{path}: extraction is unfinished; run `speechprobe extract` again to resume")
        raise EncoderError(f"{path}: not a representation store (no {MANIFEST})")
    if manifest.get("format") != FORMAT:
        raise EncoderError(f"{path / MANIFEST}: not a speechprobe representation store manifest")
    return manifest


def _manifest_problems(path: Path, manifest: dict) -> list[str]:
    where = path / MANIFEST
    problems = []
    for key, kind in _REQUIRED.items():
        value = manifest.get(key)
        if key not in manifest:
            problems.append(f"{where}: no {key!r} entry; the store is damaged")
        elif not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"{where}: {key!r} is {value!r}, not a {kind.__name__}; the store is damaged")
    if problems:
        return problems
    names, dims, files = manifest["layers"], manifest["layer_dims"], manifest["layer_files"]
    if not (len(names) == len(dims) == len(files)):
        problems.append(f"{where}: {len(names)} layers, {len(dims)} layer_dims and {len(files)} layer_files "
                        "disagree; the store is damaged")
    if manifest["utterances"] < 0 or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in dims):
        problems.append(f"{where}: utterances and layer_dims must be counts; the store is damaged")
    if any(not isinstance(f, str) for f in files) or any(not isinstance(n, str) for n in names):
        problems.append(f"{where}: layers and layer_files must be names; the store is damaged")
    if len(set(map(str, names))) != len(names):
        problems.append(f"{where}: layer names repeat; the store is damaged")
    try:
        np.dtype(manifest["dtype"])
    except TypeError:
        problems.append(f"{where}: dtype {manifest['dtype']!r} is not a numpy type; the store is damaged")
    return problems


def _layer_file(path: Path, relative: str) -> Path:
    """A manifest's layer file, refused unless it lies inside the store folder."""
    root = path.resolve()
    target = (path / relative).resolve()
    if Path(relative).is_absolute() or not target.is_relative_to(root) or target == root:
        raise EncoderError(f"{path / MANIFEST}: layer file {relative!r} lies outside the store folder; refusing it")
    return target


def _npy_header(file: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from a .npy header, reading nothing else."""
    with open(file, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
        return shape, fortran, dtype, handle.tell()


def _layer_problems(path: Path, manifest: dict, position: int) -> list[str]:
    """What is wrong with one layer's file, from its header and size (its values are not read)."""
    relative = manifest["layer_files"][position]
    try:
        file = _layer_file(path, relative)
    except EncoderError as error:
        return [str(error)]
    shown = path / relative
    expected = (manifest["utterances"], manifest["layer_dims"][position])
    try:
        shape, _, dtype, offset = _npy_header(file)
        size = file.stat().st_size
    except FileNotFoundError:
        return [f"{shown}: missing (layer {manifest['layers'][position]}); the store is damaged"]
    except (OSError, ValueError, EOFError) as error:
        return [f"{shown}: not a readable .npy array ({getattr(error, 'strerror', None) or error}); "
                "the store is damaged"]
    if dtype.hasobject or dtype.kind not in "fiuc":
        return [f"{shown}: holds {dtype} values, not numbers (a pickled object array is never loaded); "
                "the store is damaged"]
    problems = []
    if dtype != np.dtype(manifest["dtype"]):
        problems.append(f"{shown}: holds {dtype}, the manifest says {manifest['dtype']}; the store is damaged")
    if tuple(shape) != expected:
        problems.append(f"{shown}: shape {tuple(shape)}, the manifest says {expected} (utterances x dims); "
                        "the store is damaged")
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < needed:
        problems.append(f"{shown}: truncated ({size} bytes, its header needs {needed}); the store is damaged")
    elif size > needed:
        problems.append(f"{shown}: {size - needed} bytes past the end of its array; the store is damaged")
    return problems


def _read_index(path: Path) -> pd.DataFrame:
    file = path / INDEX
    try:
        return pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise EncoderError(f"{file}: missing; the store is damaged (its labels are gone): extract it again") from None
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise EncoderError(f"{file}: cannot be read ({first.strip()}); the store is damaged") from None


def _store_problems(path: Path) -> tuple[dict | None, pd.DataFrame | None, list[str]]:
    """Manifest, index and every problem found without reading the arrays' values."""
    try:
        manifest = _open_manifest(path)
    except EncoderError as error:
        return None, None, [str(error)]
    problems = _manifest_problems(path, manifest)
    if problems:
        return manifest, None, problems
    for position in range(len(manifest["layers"])):
        problems += _layer_problems(path, manifest, position)
    index = None
    try:
        index = _read_index(path)
    except EncoderError as error:
        problems.append(str(error))
    else:
        if len(index) != manifest["utterances"]:
            problems.append(f"{path / INDEX}: {len(index)} rows, the manifest says {manifest['utterances']} "
                            "utterances; the store is damaged")
    return manifest, index, problems


def check_store(path: str | Path, block_rows: int = 65536) -> list[str]:
    """Every problem of a store, one line each naming the file (empty: healthy).

    Beyond what opening checks (manifest entries, array headers against the manifest, file sizes, rows
    against the index), every array is read in full: unreadable blocks and non-finite values are found.
    """
    path = Path(path)
    manifest, _, problems = _store_problems(path)
    if manifest is None or _manifest_problems(path, manifest):
        return problems
    for position, relative in enumerate(manifest["layer_files"]):
        shown = path / relative
        if _layer_problems(path, manifest, position):  # already listed; its values cannot be trusted
            continue
        try:
            array = np.load(_layer_file(path, relative), mmap_mode="r", allow_pickle=False)
            bad, first = 0, None
            for start in range(0, len(array), block_rows):
                block = np.asarray(array[start:start + block_rows])
                finite = np.isfinite(block).all(axis=1) if block.ndim == 2 else np.isfinite(block)
                if not finite.all():
                    bad += int((~finite).sum())
                    first = start + int(np.flatnonzero(~finite)[0]) if first is None else first
            del array
        except (OSError, ValueError, EncoderError) as error:
            problems.append(f"{shown}: cannot be read in full ({getattr(error, 'strerror', None) or error}); "
                            "the store is damaged")
            continue
        if bad:
            problems.append(f"{shown}: {bad} rows hold NaN or infinite values (first: row {first})")
    return problems


class RepresentationStore:
    """Read side: the manifest, the utterance index and any one layer as a memory-mapped N x D array.

    Opening validates the store (manifest entries, each array's header and size against the manifest,
    the index's rows) without reading any array's values; `check_store` reads them too.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest, index, problems = _store_problems(self.path)
        if problems:
            more = (f" (and {len(problems) - 1} more problems: `speechprobe info --check {self.path}` lists them)"
                    if len(problems) > 1 else "")
            raise EncoderError(problems[0] + more)
        self.manifest = manifest
        self._index: pd.DataFrame | None = index

    @property
    def layer_names(self) -> list[str]:
        return list(self.manifest["layers"])

    @property
    def layer_dims(self) -> list[int]:
        return list(self.manifest["layer_dims"])

    def __len__(self) -> int:
        return int(self.manifest["utterances"])

    @property
    def index(self) -> pd.DataFrame:
        if self._index is None:
            self._index = _read_index(self.path)
        return self._index

    def layer(self, layer: str | int) -> np.ndarray:
        """One layer's N x D array, memory-mapped (read-only): only the rows you touch are read."""
        names = self.layer_names
        if isinstance(layer, int) or (isinstance(layer, str) and layer.lstrip("-").isdigit() and layer not in names):
            position = int(layer)
            if not -len(names) <= position < len(names):
                raise EncoderError(f"{self.path}: no layer {layer}; it has {len(names)} ({', '.join(names)})")
            layer = names[position]
        if layer not in names:
            raise EncoderError(f"{self.path}: no layer {layer!r}; layers: {', '.join(names)}")
        relative = self.manifest["layer_files"][names.index(layer)]
        try:
            return np.load(_layer_file(self.path, relative), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:  # changed since the store was opened
            raise EncoderError(f"{self.path / relative}: cannot be read ({getattr(error, 'strerror', None) or error}); "
                               "the store is damaged") from None

    def describe(self) -> str:
        m = self.manifest
        lines = [
            f"store {self.path}",
            f"  encoder     {m['encoder']} (weights {m['weights_hash']})",
            f"  corpus      {m.get('corpus_source', '?')} (fingerprint {m['corpus_fingerprint']}), {m['utterances']} utterances",
            f"  pooling     {m['pooling']}, stored as {m['dtype']}",
            *([f"  intervened  {_describe_intervention(m['intervention'])}"] if m.get("intervention") else []),
            f"  labels      {', '.join(c for c in self.index.columns if c not in ('utt_id', 'file_name'))}",
            "  software    " + ", ".join(f"{k} {v}" for k, v in m.get("software", {}).items()),
            f"  layers ({len(self.layer_names)}):",
        ]
        width = max(len(name) for name in self.layer_names)
        lines += [f"    {name:<{width}}  {dim:>6}" for name, dim in zip(self.layer_names, self.layer_dims)]
        return "\n".join(lines)
