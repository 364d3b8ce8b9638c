"""Run the `speechprobe` CLI in-process, capturing what it prints (shared by the CLI tests)."""
from __future__ import annotations

import contextlib
import io

from speechprobe.experiments.cli import main


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `speechprobe ARGV`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
