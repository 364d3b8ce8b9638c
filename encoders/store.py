"""The representation store: the contract between extraction (expensive, once) and every analysis.

A directory:
- `manifest.json`: encoder (name, weights hash, layers, dims), corpus fingerprint, pooling, dtype,
  software versions; written last, so its presence means the store is complete;
- `index.csv`: one row per utterance (store row i = corpus row i) with every label column;
- `layers/<layer>.npy`: one N x D array per layer, memory-mappable, so loading one layer never reads
  the others.
While extraction runs, `extraction.json` holds the settings and `shards/` the committed batches (each
written to a temporary name and renamed), so a killed extraction resumes without redoing them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encoders.choices import DTYPES
from encoders.errors import EncoderError

FORMAT = "speechprobe-representation-store"
VERSION = 1
MANIFEST, INDEX, PENDING = "manifest.json", "index.csv", "extraction.json"
LAYERS_DIR, SHARDS_DIR = "layers", "shards"


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

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (f"encoder {self.encoder} ({self.weights_hash}), corpus {self.corpus_fingerprint}, "
                f"{self.pooling} pooling, {self.dtype}, {len(self.layers)} layers")


def _write_json(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def layer_file_name(layer: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in layer) + ".npy"


class StoreWriter:
    """Commits shards atomically and assembles them into the final per-layer arrays."""

    def __init__(self, path: Path, settings: StoreSettings) -> None:
        self.path = Path(path)
        self.settings = settings

    def prepare(self) -> bool:
        """True if a complete store with these settings is already there (a cache hit).

        A partial store with the same settings is resumed; a store with other settings, or a folder
        holding anything else, is refused and left untouched.
        """
        manifest = _read_json(self.path / MANIFEST)
        if manifest is not None:
            if manifest.get("key") == self.settings.key():
                return True
            raise EncoderError(f"{self.path} already holds a different store ({_describe_manifest(manifest)}); "
                               "choose another --out or remove it")
        pending = _read_json(self.path / PENDING)
        if pending is not None:
            if pending.get("key") != self.settings.key():
                raise EncoderError(f"{self.path} holds an unfinished extraction with other settings "
                                   f"({pending.get('settings', {}).get('encoder')}); choose another --out or remove it")
            return False
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise EncoderError(f"{self.path} exists and is not a representation store; choose another --out")
        (self.path / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
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
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, indices=indices, **{f"layer{i}": a for i, a in enumerate(arrays)})
        os.replace(tmp, target)
        return target

    def finalize(self, index: pd.DataFrame, extra: dict[str, object]) -> None:
        """Assemble shards into one array per layer, then write the index and, last, the manifest."""
        n, settings = self.settings.utterances, self.settings
        layers_dir = self.path / LAYERS_DIR
        layers_dir.mkdir(exist_ok=True)
        tmp_paths = [layers_dir / f".{layer_file_name(name)}.tmp" for name in settings.layers]
        arrays = [np.lib.format.open_memmap(p, mode="w+", dtype=settings.dtype, shape=(n, d))
                  for p, d in zip(tmp_paths, settings.layer_dims)]
        filled = np.zeros(n, dtype=bool)
        for shard in sorted((self.path / SHARDS_DIR).glob("*.npz")):
            with np.load(shard) as data:
                rows = data["indices"]
                for i, array in enumerate(arrays):
                    array[rows] = data[f"layer{i}"]
                filled[rows] = True
        if not filled.all():
            missing = np.flatnonzero(~filled)
            raise EncoderError(f"{self.path}: {len(missing)} utterances were not extracted (first: row {missing[0]})")
        for array in arrays:
            array.flush()
        del arrays
        for tmp, name in zip(tmp_paths, settings.layers):
            os.replace(tmp, layers_dir / layer_file_name(name))
        index_tmp = self.path / f".{INDEX}.tmp"
        index.to_csv(index_tmp, index=False)
        os.replace(index_tmp, self.path / INDEX)
        _write_json(self.path / MANIFEST, {
            "format": FORMAT, "version": VERSION, "key": settings.key(), **asdict(settings),
            "layer_files": [f"{LAYERS_DIR}/{layer_file_name(name)}" for name in settings.layers],
            "software": software_versions(), **extra,
        })
        shutil.rmtree(self.path / SHARDS_DIR, ignore_errors=True)
        (self.path / PENDING).unlink(missing_ok=True)


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
            f"{manifest.get('pooling')} pooling, {manifest.get('dtype')}")


class RepresentationStore:
    """Read side: the manifest, the utterance index and any one layer as a memory-mapped N x D array."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = _read_json(self.path / MANIFEST)
        if manifest is None:
            if (self.path / PENDING).exists():
                raise EncoderError(f"{self.path}: extraction is unfinished; run `speechprobe extract` again to resume")
            raise EncoderError(f"{self.path}: not a representation store (no {MANIFEST})")
        if manifest.get("format") != FORMAT:
            raise EncoderError(f"{self.path}: {MANIFEST} is not a speechprobe representation store manifest")
        self.manifest = manifest
        self._index: pd.DataFrame | None = None

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
            self._index = pd.read_csv(self.path / INDEX, dtype=str, keep_default_na=False, na_values=[""])
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
        return np.load(self.path / self.manifest["layer_files"][names.index(layer)], mmap_mode="r")

    def describe(self) -> str:
        m = self.manifest
        lines = [
            f"store {self.path}",
            f"  encoder     {m['encoder']} (weights {m['weights_hash']})",
            f"  corpus      {m.get('corpus_source', '?')} (fingerprint {m['corpus_fingerprint']}), {m['utterances']} utterances",
            f"  pooling     {m['pooling']}, stored as {m['dtype']}",
            f"  labels      {', '.join(c for c in self.index.columns if c not in ('utt_id', 'file_name'))}",
            f"  software    " + ", ".join(f"{k} {v}" for k, v in m.get("software", {}).items()),
            f"  layers ({len(self.layer_names)}):",
        ]
        width = max(len(name) for name in self.layer_names)
        lines += [f"    {name:<{width}}  {dim:>6}" for name, dim in zip(self.layer_names, self.layer_dims)]
        return "\n".join(lines)
