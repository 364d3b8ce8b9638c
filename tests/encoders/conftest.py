"""Fixtures shared by the encoder tests."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of many small ops (LSTM steps, tiny models): on 2 cores shared with other
    jobs, two OpenMP threads spin-wait for each other (test_conformance, measured on 2 cores under a load of 4:
    59 s with two threads, 17 s with one). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; the thread count is restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
