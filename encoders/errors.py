"""The error type for bad encoder input, importable without torch so the CLI starts fast."""
from speechprobe.errors import SpeechprobeError


class EncoderError(SpeechprobeError, ValueError):
    """An encoder name, model path, weights file, store or input that cannot be used, named in the message."""
