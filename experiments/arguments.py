"""Command-line values -> API values, shared by the CLI's commands (kept out of `cli` so nothing imports it)."""
from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable, Sequence

from speechprobe.tasks.errors import CorpusError


def cmd_lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A command whose module (and its numpy/torch imports) loads only when that command runs."""
    def command(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)
    return command


def column_map(pairs: Sequence[str] | None) -> dict[str, str] | None:
    """`--column speaker=speaker_id` pairs: canonical name = column in the source."""
    if not pairs:
        return None
    mapping = {}
    for pair in pairs:
        canonical, sep, source = pair.partition("=")
        if not sep or not canonical or not source:
            raise CorpusError(f"--column {pair!r} is not CANONICAL=SOURCE (e.g. speaker=speaker_id)")
        mapping[canonical] = source
    return mapping


def add_corpus_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--column", action="append", metavar="NAME=SOURCE",
                        help="map a canonical column (speaker, gender, dialect, channel, text, utt_id) to a "
                             "column of the source, e.g. --column dialect=accent; repeatable")
    parser.add_argument("--hf-split", default="train", help="split of a Hugging Face dataset (default: train)")


def load_source(args: argparse.Namespace, source: str) -> Any:
    """The corpus at `source`, read with the command's --column and --hf-split."""
    from speechprobe.tasks.corpus import load_corpus

    return load_corpus(source, columns=column_map(args.column), split=args.hf_split)
