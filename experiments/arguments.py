"""Command-line values -> API values, shared by the CLI's commands (kept out of `cli` so nothing imports it)."""
from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from speechprobe.errors import SpeechprobeError
from speechprobe.io import check_writable
from speechprobe.tasks.errors import CorpusError

if TYPE_CHECKING:
    from speechprobe.probing.options import TrainingOptions


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


def parse_whole(flag: str, text: Any, minimum: int) -> int:
    """A whole-number flag given as text, at least `minimum` (one line naming the flag and value otherwise)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise SpeechprobeError(f"{flag} {text!r} is not a whole number") from None
    if value < minimum:
        raise SpeechprobeError(f"{flag} {text!r} must be at least {minimum}")
    return value


def parse_strength(flag: str, text: str) -> float:
    """A regularisation strength: a finite number >= 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SpeechprobeError(f"{flag} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SpeechprobeError(f"{flag} {text!r} must be a finite number >= 0")
    return value


def parse_grid(args: argparse.Namespace) -> list[tuple[float, float]] | None:
    """--l1/--l2 (one setting) or --grid "l1:l2,l1:l2" (several); None for the sweep's default grid."""
    l1, l2, grid = args.l1, args.l2, args.grid
    if (l1 is None) != (l2 is None):
        given = "--l1" if l1 is not None else "--l2"
        raise SpeechprobeError(f"{given} needs {'--l2' if l1 is not None else '--l1'} too: give both, or --grid L1:L2,...")
    if l1 is not None and grid is not None:
        raise SpeechprobeError("give either --l1/--l2 or --grid, not both")
    if l1 is not None:
        return [(parse_strength("--l1", l1), parse_strength("--l2", l2))]
    if grid is None:
        return None
    pairs = []
    for item in grid.split(","):
        a, sep, b = item.strip().partition(":")
        if not sep or not a.strip() or not b.strip() or ":" in b:
            raise SpeechprobeError(f"--grid {item.strip()!r} is not L1:L2 (e.g. --grid 0:0,0.001:0.001)")
        try:
            pair = (float(a), float(b))
        except ValueError:
            raise SpeechprobeError(f"--grid {item.strip()!r}: L1 and L2 must be numbers") from None
        if not all(math.isfinite(v) and v >= 0 for v in pair):
            raise SpeechprobeError(f"--grid {item.strip()!r}: L1 and L2 must be finite numbers >= 0")
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def parse_target(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SpeechprobeError(f"--target {text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise SpeechprobeError(f"--target {text!r} must be a fraction in (0, 1] of the full probe's accuracy")
    return value


def add_compute_options(parser: argparse.ArgumentParser) -> None:
    """--accelerator, --device and --memory: where probes train and how much memory one batched fit may hold
    (they change how fast, not what)."""
    from speechprobe.probing.options import ACCELERATORS

    parser.add_argument("--accelerator", choices=ACCELERATORS, metavar="NAME",
                        help=f"where probes train: {', '.join(ACCELERATORS)} (default auto: a GPU where there is one)")
    parser.add_argument("--device", type=int, metavar="INDEX", help="which device of the accelerator (default its first)")
    parser.add_argument("--memory", metavar="SIZE",
                        help="the most memory one batched probe fit holds, e.g. 8G (default: half the available memory)")


def compute_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The compute flags given, as a config's ``compute`` section (absent flags: the config's or the defaults)."""
    settings = {key: getattr(args, key, None) for key in ("accelerator", "device", "memory")}
    return {key: value for key, value in settings.items() if value is not None}


def parse_memory(args: argparse.Namespace) -> "int | None":
    """--memory in bytes (None: the default budget); a clear error for what is not a size."""
    from speechprobe.probing.budget import parse_size

    if getattr(args, "memory", None) is None:
        return None
    try:
        return parse_size(args.memory)
    except ValueError as error:
        raise SpeechprobeError(f"--memory: {error}") from None


def parse_training_options(args: argparse.Namespace) -> "TrainingOptions":
    """How every probe a command trains is trained (a :class:`probing.options.TrainingOptions`): ``--max-epochs``,
    ``--accelerator`` and ``--device``, the rest the defaults (probes retrained from a fitted one take over that
    probe's options)."""
    from speechprobe.probing.options import TrainingOptions

    where = {key: getattr(args, key) for key in ("accelerator", "device") if getattr(args, key, None) is not None}
    if where.get("device", 0) < 0:
        raise SpeechprobeError(f"--device {where['device']} must be a device index >= 0")
    if args.max_epochs is None:
        return TrainingOptions(**where)
    return TrainingOptions(max_epochs=parse_whole("--max-epochs", args.max_epochs, 1), **where)


def check_out(out: str) -> Path:
    """--out must be absent or an empty folder (results are never written over others), and writable: the
    results are written beside it and renamed into place, so its parent must take a file, and so must the
    folder itself where it exists (a read-only mount). Checked before any probe is trained."""
    path = Path(out)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise SpeechprobeError(f"--out {path} exists and is not a folder; choose another --out")
        if any(path.iterdir()):
            raise SpeechprobeError(f"--out {path} exists and is not empty; choose another --out or remove it")
    check_writable(path.parent, path)
    return path


def open_store(path: str):
    from speechprobe.encoders.store import RepresentationStore

    return RepresentationStore(path)


def resolve_layers(store, requested: Sequence[str] | None) -> list[str]:
    """Layer names (or positions, as `extract --layers`) -> store layer names, in the order given."""
    names = store.layer_names
    if not requested:
        return list(names)
    chosen: list[str] = []
    for layer in requested:
        if layer in names:
            name = layer
        elif layer.lstrip("-").isdigit() and -len(names) <= int(layer) < len(names):
            name = names[int(layer)]
        else:
            raise SpeechprobeError(f"{store.path}: no layer {layer!r}; its layers: {', '.join(names)}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def library_call(what: str, call: Callable[[], Any]) -> Any:
    """Run a probing function; its ValueError (a clear one-line message on bad input) is a user error."""
    try:
        return call()
    except ValueError as error:
        raise SpeechprobeError(f"{what}: {error}") from error


def progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    if args.quiet:
        return None
    return lambda message: print(f"speechprobe: {message}", file=sys.stderr, flush=True)
