"""A reader for CTranslate2's `model.bin`, so its weights load without the CTranslate2 runtime.

CTranslate2 (the engine behind faster-whisper) ships models in one flat binary file that its Python
package writes with `struct` (`ctranslate2/specs/model_spec.py: ModelSpec._serialize`), all little
endian:

    uint32 binary_version | string spec_name | uint32 spec_revision      (name/revision: version >= 2)
    uint32 n_variables, then per variable:
        string name | uint8 ndim | uint32 dims[ndim] | uint8 dtype_id | uint32 n_bytes | raw data
        (binary version < 4: uint8 item_size and uint32 n_items instead of dtype_id and n_bytes)
    uint32 n_aliases, then per alias: string alias | string target      (version >= 3)

where a string is a uint16 length (NUL included), the UTF-8 bytes and a NUL. Reading it here keeps
a 75 MB Whisper checkpoint usable by transformers' classes, with only numpy and `struct`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechprobe.encoders.base import EncoderError

#: The binary versions whose layout is documented above (CTranslate2 4.x writes version 6).
SUPPORTED_BINARY_VERSIONS = range(2, 7)
#: dtype ids, in the order of CTranslate2's `DataType` enum (include/ctranslate2/types.h).
DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ITEM_SIZES = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}
_ITEM_SIZE_DTYPES = {4: "float32", 2: "int16", 1: "int8"}  # binary versions < 4


@dataclass(frozen=True)
class CTranslate2Model:
    """The header of a model.bin and its variables (name -> array, aliases resolved, floats as float32)."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(repr=False)
    aliases: dict[str, str] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.variables[name]
        except KeyError:
            raise EncoderError(f"CTranslate2 {self.spec} model has no variable {name!r}") from None

    def scalar(self, name: str, default: int | float | None = None) -> int | float:
        """A scalar attribute (flags, head counts); `default` where the model does not store it."""
        if name not in self.variables and default is not None:
            return default
        return self[name].item()


class _Cursor:
    """Bounds-checked reads over the file's bytes, so a truncated file names the byte it ends at."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def take(self, size: int, what: str) -> int:
        start = self.offset
        if start + size > len(self.data):
            raise EncoderError(f"{self.path} is truncated: {what} needs {size} bytes at byte {start}, "
                               f"the file has {len(self.data)}")
        self.offset += size
        return start

    def unpack(self, fmt: str, what: str) -> int:
        start = self.take(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.data, start)[0]

    def string(self, what: str) -> str:
        size = self.unpack("H", what)
        start = self.take(size, what)
        raw = self.data[start:start + size]
        try:
            return raw.split(b"\0", 1)[0].decode("utf-8")
        except UnicodeDecodeError:
            raise EncoderError(f"{self.path} is not a CTranslate2 model.bin: {what} at byte {start} "
                               "is not UTF-8") from None


def _to_array(data: bytes, start: int, dtype_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One variable's bytes as an array: float16 and bfloat16 widened to float32, others copied."""
    count = int(np.prod(shape, dtype=np.int64))
    if dtype_name == "bfloat16":
        bits = np.frombuffer(data, dtype="<u2", count=count, offset=start).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    array = np.frombuffer(data, dtype=np.dtype(dtype_name).newbyteorder("<"), count=count, offset=start)
    if dtype_name == "float16":
        return array.astype(np.float32).reshape(shape)
    return array.astype(array.dtype.newbyteorder("="), copy=True).reshape(shape)


def read_ctranslate2(path: str | Path, spec: str | None = None) -> CTranslate2Model:
    """Every variable of a CTranslate2 `model.bin`; `EncoderError` for a missing, truncated or unknown file.

    `spec` (e.g. "WhisperSpec"), when given, must match the file's specification name.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EncoderError(f"cannot read CTranslate2 model {path}: {exc.strerror or exc}") from None
    cursor = _Cursor(data, path)

    version = cursor.unpack("I", "the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise EncoderError(f"{path} is not a CTranslate2 model.bin this reader knows: binary version {version} "
                           f"(supported: {SUPPORTED_BINARY_VERSIONS.start}-{SUPPORTED_BINARY_VERSIONS.stop - 1})")
    name = cursor.string("the specification name")
    revision = cursor.unpack("I", "the specification revision")
    if spec is not None and name != spec:
        raise EncoderError(f"{path} holds a CTranslate2 {name or 'unnamed'} model, expected {spec}")

    variables: dict[str, np.ndarray] = {}
    for index in range(cursor.unpack("I", "the variable count")):
        var_name = cursor.string(f"variable {index}'s name")
        what = f"variable {var_name!r}"
        shape = tuple(cursor.unpack("I", what) for _ in range(cursor.unpack("B", what)))
        if version >= 4:
            dtype_id = cursor.unpack("B", what)
            if dtype_id >= len(DTYPE_NAMES):
                raise EncoderError(f"{path}: {what} has unknown dtype id {dtype_id}")
            dtype_name, n_bytes = DTYPE_NAMES[dtype_id], cursor.unpack("I", what)
        else:
            item_size = cursor.unpack("B", what)
            if item_size not in _ITEM_SIZE_DTYPES:
                raise EncoderError(f"{path}: {what} has unknown item size {item_size}")
            dtype_name, n_bytes = _ITEM_SIZE_DTYPES[item_size], cursor.unpack("I", what) * item_size
        expected = int(np.prod(shape, dtype=np.int64)) * _ITEM_SIZES[dtype_name]
        if n_bytes != expected:
            raise EncoderError(f"{path}: {what} of shape {shape} and dtype {dtype_name} declares {n_bytes} bytes, "
                               f"expected {expected}")
        variables[var_name] = _to_array(data, cursor.take(n_bytes, what), dtype_name, shape)

    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(cursor.unpack("I", "the alias count")):
            alias, target = cursor.string("an alias"), cursor.string("an alias target")
            if target not in variables:
                raise EncoderError(f"{path}: alias {alias!r} points to missing variable {target!r}")
            aliases[alias] = target
            variables[alias] = variables[target]
    if cursor.offset != len(data):
        raise EncoderError(f"{path}: {len(data) - cursor.offset} unexpected bytes after the last record "
                           f"(byte {cursor.offset})")
    return CTranslate2Model(version, name, revision, variables, aliases)
