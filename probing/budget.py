"""Training arrays held within a memory budget: how many layers train at once, gathered as float32, standardised in place.

Why: a sweep at study size (10^5 utterances x 13 layers x 768 neurons is 4 GB of float32) held float64 copies
of every layer, the stacked rows and the standardised stack at once, about 7.5x the data. Here layers are
read from wherever they live (a memory-mapped store's arrays are never copied whole), the rows a bank of
layers trains on are gathered into one float32 array, standardised there in place, and banks are cut so
that what they hold stays within a budget (default: half the memory available when the sweep starts).

Public API
----------
- :func:`default_budget`, :func:`parse_size` - the budget in bytes: half the available memory, or a size a
  user wrote ("8G", "512M", "2.5GB", a number of bytes).
- :func:`layer_banks` - equal-width layers grouped into banks that each fit the budget.
- :func:`gather_rows` - chosen rows of several layers as one (G, n, D) float32 array, read a block at a time.
- :func:`standardisation` and :func:`standardise_` - training-split mean and scale (float64, read a block of
  rows at a time) and the standardisation applied in place to float32 rows. Their numbers are bit for bit
  those of converting the whole array to float64 first (the same additions in the same order), so bounding
  memory changes no result.
- :func:`numeric_matrix`, :func:`check_finite` - a 2-D numeric array checked without converting it (a memory
  map stays one), and checked finite a block at a time.
- :func:`release_pages` - a memory map's pages handed back once read, so the resident set shows what a sweep
  holds rather than every layer it has read.

Plain numpy; nothing here knows about probes, encoders or torch.
"""
from __future__ import annotations

import mmap
import os
import re
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["BLOCK_BYTES", "check_finite", "default_budget", "format_size", "gather_rows", "gathered_dtype", "layer_banks",
           "numeric_matrix", "parse_size", "release_pages", "standardisation", "standardise_"]

# Rows are read, converted and standardised this many bytes (float64) at a time: the only temporaries.
BLOCK_BYTES = 16 * 2**20
# Per probe and per weight, the float32 tensors a probe bank holds (weights, Adam's two moments, the best
# weights, the penalty and mask factors, the gradient and a scratch buffer), rounded up.
BANK_TENSORS_PER_WEIGHT = 10

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def _available_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # not Linux: the physical memory
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> int:
    """Half the memory available now (MemAvailable on Linux, else half the physical memory; 4 GiB if unknown)."""
    available = _available_bytes()
    return int(available // 2) if available else 4 * 2**30


def parse_size(text: Any) -> int:
    """Bytes from "8G", "512M", "2.5GB", "1.5 GiB" or a plain number of bytes; ValueError naming the text."""
    if isinstance(text, bool):
        raise ValueError(f"memory budget {text!r} is not a size")
    if isinstance(text, (int, float)):
        number, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).upper() not in _UNITS:
            raise ValueError(f"memory budget {text!r} is not a size: write e.g. 8G, 512M or a number of bytes")
        number, unit = float(match.group(1)), match.group(2).upper()
    size = int(number * _UNITS[unit])
    if size < 2**20:
        raise ValueError(f"memory budget {text!r} is below 1 MiB: write e.g. 8G or 512M")
    return size


def format_size(size: float) -> str:
    """Bytes as a short human figure (1.3 GB)."""
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} B"


def layer_banks(names: Sequence[str], bytes_per_layer: int, budget: int) -> list[list[str]]:
    """``names`` (in order) cut into consecutive banks of as many layers as fit ``budget`` (at least one each).

    Banks are evened out: 13 layers where 5 fit become banks of 5, 4 and 4, never 5, 5, 3 (the same number
    of banks, so the same number of passes over the data, with the largest bank smaller)."""
    if not names:
        return []
    fit = max(1, int(budget // max(1, bytes_per_layer)))
    n_banks = -(-len(names) // fit)
    bounds = np.linspace(0, len(names), n_banks + 1).round().astype(int)
    return [list(names[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def numeric_matrix(name: str, X: Any) -> np.ndarray:
    """X as a non-empty 2-D numeric array, without a copy where it is one already (a memory map stays one).
    Finiteness is checked where rows are read (:func:`gather_rows`, :func:`standardisation`), not here: that
    would read all of it."""
    try:
        array = X if isinstance(X, np.ndarray) else np.asarray(X)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array") from None
    if array.dtype.kind not in "fiub":
        try:  # numbers held as objects (e.g. from a DataFrame) are converted; text is refused
            array = np.asarray(array, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a numeric array") from None
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n_examples, n_features), got shape {array.shape}")
    return array


def _block_rows(width: int) -> int:
    return max(1, BLOCK_BYTES // (8 * max(1, width)))


def check_finite(name: str, X: np.ndarray) -> None:
    """ValueError "<name> contains NaN or Inf" if it does; read a block of rows at a time."""
    step = _block_rows(X.shape[-1])
    for start in range(0, X.shape[0], step):
        _check_finite(name, np.asarray(X[start:start + step]))
    release_pages(X)


def _check_finite(name: str, block: np.ndarray) -> None:
    # A float64 sum of float32 (or smaller) values cannot overflow, so it is NaN or Inf exactly when some
    # value is: one pass, no boolean array. Float64 input is checked value by value.
    if block.dtype.itemsize < 8 and block.dtype.kind == "f":
        finite = np.isfinite(np.add.reduce(block, axis=None, dtype=np.float64))
    else:
        finite = bool(np.all(np.isfinite(block))) if block.dtype.kind == "f" else True
    if not finite:
        raise ValueError(f"{name} contains NaN or Inf")


def release_pages(X: Any) -> None:
    """Let go of the pages of a memory-mapped array this process has read (they stay in the page cache, so a
    second read costs no disk access): its resident memory then shows what it holds, not every layer it read
    (without this, a 200,000-utterance sweep's resident set counted its 7.4 GB of layers as well). A no-op for
    arrays that are not memory maps, or where the system has no madvise."""
    base = X
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or a system that refuses: only the resident figure suffers
            pass


def gathered_dtype(layers: Sequence[Any]) -> np.dtype:
    """float32, or float64 when a layer holds float64 (its values standardised from float32 would lose
    digits a float64 user array may need, e.g. a small spread around a large mean)."""
    wide = any(np.dtype(getattr(X, "dtype", np.float64)).itemsize > 4 for X in layers)
    return np.dtype(np.float64 if wide else np.float32)


def gather_rows(layers: Sequence[Any], rows: np.ndarray, *, names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Rows ``rows`` of every layer (equal widths), as one (G, len(rows), D) array (:func:`gathered_dtype`),
    checked finite.

    Read a block of rows at a time, so a memory-mapped layer is never loaded whole."""
    rows = np.asarray(rows, dtype=np.intp)
    widths = {np.shape(X)[1] for X in layers}
    if len(widths) != 1:
        raise ValueError(f"layers gathered together must have one width, got {sorted(widths)}")
    D = widths.pop()
    out = np.empty((len(layers), rows.size, D), dtype=gathered_dtype(layers))
    step = _block_rows(D)
    for g, X in enumerate(layers):
        what = f"layer {names[g]!r}" if names is not None else "X"
        for start in range(0, rows.size, step):
            block = np.asarray(X[rows[start:start + step]])
            _check_finite(what, block)
            out[g, start:start + step] = block
        release_pages(X)
    return out


def standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-split mean and scale of (N, D) ``X`` in float64; a constant neuron (std below a relative floor)
    gets scale 1.

    Read a block of rows at a time. Bit for bit ``X.astype(float64).mean(0)`` and ``.std(0)``: numpy sums
    along the rows one row after another, and each block's sum continues from the running total."""
    n, d = X.shape
    step = _block_rows(d)
    total = np.zeros((1, d))
    for start in range(0, n, step):
        block = np.asarray(X[start:start + step], dtype=np.float64)
        total = np.add.reduce(np.concatenate([total, block]), axis=0, keepdims=True)
    mean = total[0] / n
    total = np.zeros((1, d))
    for start in range(0, n, step):
        deviation = np.asarray(X[start:start + step], dtype=np.float64) - mean
        np.multiply(deviation, deviation, out=deviation)
        total = np.add.reduce(np.concatenate([total, deviation]), axis=0, keepdims=True)
    std = np.sqrt(total[0] / n)
    floor = 1e-7 * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(std > floor, std, 1.0)


def standardise_(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``(X - mean) / scale`` as float32, into ``out`` or (``out=None``) into float32 ``X`` itself, a block of rows
    at a time; returns the array written.

    Computed in float64 from X's own values and rounded once, as converting the whole array first would."""
    if out is None:
        if X.dtype != np.float32 or not X.flags.writeable:
            raise ValueError("standardising in place needs a writeable float32 array")
        out = X
    step = _block_rows(X.shape[1])
    for start in range(0, X.shape[0], step):
        out[start:start + step] = (np.asarray(X[start:start + step], dtype=np.float64) - mean) / scale
    return out
