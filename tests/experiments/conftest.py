"""Fixtures shared by the experiment tests that extract stores."""
from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread, in extraction too: on a 2-core machine shared with other jobs, two OpenMP threads
    spin-wait on each other (a GE2E batch of 16 utterances: 1.2-1.5 s on one thread, 6-22 s on two). Thread
    count changes speed, not what is computed."""
    import torch

    from speechprobe.encoders.extraction import ExtractionModule

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ExtractionModule, "on_predict_start", lambda self: torch.set_num_threads(1))
        yield
    torch.set_num_threads(threads)
