from __future__ import annotations

from speechprobe.tasks.catalog import CHANNEL_NAMES, PRESET_NAMES
from speechprobe.tasks.channels import CHANNELS
from speechprobe.tasks.synthetic import PRESETS


def test_the_cli_names_match_the_implementations() -> None:
    assert CHANNEL_NAMES == tuple(CHANNELS)
    assert PRESET_NAMES == tuple(PRESETS)
