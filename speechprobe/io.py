"""Writing results so that nothing is ever half-written, and JSON that any reader takes.

Every file speechprobe writes goes through a temporary name in the target's folder and a rename (atomic on
POSIX), and every folder of results is filled under a temporary name and renamed into place. One module for
all layers, so the rules (permissions, clean-up on interruption, naming the file on a full disk) are the same
everywhere. Only the standard library is imported here; numpy is recognised in `to_json` without importing it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from speechprobe.errors import SpeechprobeError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised inside that names no file (a write hitting a full disk) is re-raised naming `path`."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror or os.strerror(error.errno), str(path)) from error
        raise


def check_writable(*paths: str | Path) -> None:
    """Fail early, in one line, when a path cannot be written: for each, the path itself when it is an existing
    folder, else its nearest existing ancestor, must take a temporary file. Creates nothing that stays (an
    output is checked before any work starts, and bad input found later leaves no empty folder behind)."""
    for path in paths:
        folder = Path(path)
        while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise SpeechprobeError(f"cannot write to {path}: {folder} is not a folder")
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".speechprobe-write-check-")
        except OSError as error:
            raise SpeechprobeError(f"cannot write to {folder}: {error.strerror or error}") from None
        os.close(fd)
        os.unlink(tmp)


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a temporary file in the same folder, then rename it to `path`: a reader (or a crash, or
    Ctrl-C) never sees half a file. The file gets the permissions a plain `open` would give it."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(Path(tmp))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make shared results private
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_directory(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling folder and rename it to `path` (absent or empty), so `path` is never half-written."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would otherwise become the results' permissions
        with naming(path):
            fill(tmp)
        try:
            os.replace(tmp, path)  # replaces an empty folder, refuses a non-empty one
        except OSError as error:
            raise SpeechprobeError(
                f"{path}: cannot move the results into place ({error.strerror}); nothing was written") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def to_json(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays, tuples, paths, dataclass-like `as_dict()`; NaN and Inf
    become null (JSON has no NaN, and a reader in another language would choke on it)."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # a numpy array or scalar
        return to_json(value.tolist())
    if hasattr(value, "as_dict") and callable(value.as_dict):
        return to_json(value.as_dict())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps_json(payload: Any, *, indent: int = 1, sort_keys: bool = False) -> str:
    return json.dumps(to_json(payload), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path: str | Path, payload: Any, *, indent: int = 1, sort_keys: bool = False) -> Path:
    """`payload` as JSON (through `to_json`), atomically."""
    text = dumps_json(payload, indent=indent, sort_keys=sort_keys)
    return write_text(path, text)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
