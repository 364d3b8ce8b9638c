"""The one error type for faults a user can fix: bad input, a damaged file, an output that cannot be written.

Every layer raises a subclass (`CorpusError`, `EncoderError`, `ProbeFileError`) or this class itself, with a
message naming the file or value; the CLI prints it as one line and exits with 2. Anything else is a bug and
keeps its traceback. Importable without numpy or torch, so the CLI starts fast.
"""
from __future__ import annotations


class SpeechprobeError(Exception):
    """A fault the user can fix, named in the message (one line, no traceback from the CLI)."""
