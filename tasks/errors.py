"""The error type for bad corpus input; the CLI turns it into a single line and exit code 2."""
from speechprobe.errors import SpeechprobeError


class CorpusError(SpeechprobeError, ValueError):
    """A corpus, audio file, label column, task or split that cannot be used, named in the message."""
