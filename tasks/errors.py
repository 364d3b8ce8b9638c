"""The one error type for bad corpus input; the CLI turns it into a single line and exit code 2."""


class CorpusError(ValueError):
    """A corpus, audio file, label column, task or split that cannot be used, named in the message."""
