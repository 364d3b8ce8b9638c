"""A damaged saved probe (issue 14): `ElasticNetProbe.load` raises a ValueError naming the file and the problem,
never a SafetensorError, TypeError or KeyError, and never runs code from the files."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from speechprobe.probing.probe import ElasticNetProbe


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), np.repeat(["a", "b", "c"], 20)
    folder = tmp_path_factory.mktemp("probe") / "good"
    ElasticNetProbe(max_epochs=2).fit(X, y).save(folder)
    return folder


class _Boom:
    """A pickle that would run code on loading."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/speechprobe-pickle-ran",))


def _damage(folder: Path, case: str) -> Path:
    tensors, meta = folder / "probe.safetensors", folder / "probe.json"
    if case == "random bytes":
        tensors.write_bytes(np.random.default_rng(1).bytes(256))
    elif case == "pickle":
        tensors.write_bytes(pickle.dumps(_Boom()))
    elif case == "empty tensors":
        tensors.write_bytes(b"")
    elif case in ("unknown parameter", "invalid JSON", "bad parameter value", "missing key", "wrong shape"):
        data = json.loads(meta.read_text())
        if case == "unknown parameter":
            data["params"]["dropout"] = 0.5
        elif case == "bad parameter value":
            data["params"]["max_epochs"] = "many"
        elif case == "missing key":
            del data["classes"]
        elif case == "wrong shape":
            data["n_features"] = 7
        text = json.dumps(data)
        meta.write_text(text[: len(text) // 2] if case == "invalid JSON" else text)
    return tensors if case in ("random bytes", "pickle", "empty tensors", "wrong shape") else meta


@pytest.mark.parametrize("case, problem", [
    ("random bytes", "not a readable safetensors file"),
    ("pickle", "not a readable safetensors file"),
    ("empty tensors", "not a readable safetensors file"),
    ("unknown parameter", "unknown probe parameter(s) 'dropout'"),
    ("bad parameter value", "parameter 'max_epochs' has an invalid value 'many'"),
    ("invalid JSON", "not valid JSON"),
    ("missing key", "'classes' is missing"),
    ("wrong shape", "coef_ is of shape (3, 5), expected shape (3, 7)"),
])
def test_a_damaged_probe_file_is_a_value_error_naming_it(saved: Path, tmp_path: Path, case: str, problem: str):
    folder = tmp_path / "probe"
    shutil.copytree(saved, folder)
    damaged = _damage(folder, case)
    Path("/tmp/speechprobe-pickle-ran").unlink(missing_ok=True)
    with pytest.raises(ValueError) as raised:
        ElasticNetProbe.load(folder)
    message = str(raised.value)
    assert message.startswith(f"{damaged}: ") and problem in message and "\n" not in message
    assert not Path("/tmp/speechprobe-pickle-ran").exists()
    ElasticNetProbe.load(saved)  # the intact copy still reads
