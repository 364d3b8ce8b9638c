"""`speechprobe similarity` on stores extracted from the tiny corpus: within one encoder, between two, rows
matched by utterance; bad input is one line and exit 2."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tests.experiments.cli_runner import run_cli as _run

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.studies.similarity.compute import aligned_layers


@pytest.fixture(scope="module")
def stores(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("similarity")
    paths = []
    for seed in (0, 1):
        path = root / f"store{seed}"
        code, _, err = _run(["extract", "--corpus", str(tiny_corpus), "--encoder", f"random:wav2vec2-tiny@{seed}",
                             "--out", str(path), "--quiet"])
        assert code == 0, err
        paths.append(path)
    return paths[0], paths[1]


def test_within_one_store_matches_the_library_and_is_symmetric(stores, tmp_path: Path):
    from speechprobe.encoders.store import RepresentationStore
    from speechprobe.probing.similarity import linear_cka

    out = tmp_path / "within"
    code, stdout, err = _run(["similarity", "--store", str(stores[0]), "--out", str(out), "--quiet"])
    assert code == 0, err
    result = json.loads((out / "similarity.json").read_text())
    matrix = np.array(result["matrix"])
    store = RepresentationStore(stores[0])
    assert result["layers_a"] == result["layers_b"] == list(store.layer_names) and result["within"]
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
    first, last = store.layer_names[0], store.layer_names[-1]
    assert matrix[0, -1] == pytest.approx(linear_cka(store.layer(first), store.layer(last)), abs=1e-9)
    assert (out / "similarity.png").read_bytes()[:4] == b"\x89PNG" and "wrote" in stdout


def test_two_stores_compare_every_pair_of_layers(stores, tmp_path: Path):
    out = tmp_path / "between"
    code, _, err = _run(["similarity", "--store", str(stores[0]), "--store", str(stores[1]), "--measure", "svcca",
                         "--out", str(out), "--quiet"])
    assert code == 0, err
    result = json.loads((out / "similarity.json").read_text())
    matrix = np.array(result["matrix"])
    assert matrix.shape == (len(result["layers_a"]), len(result["layers_b"])) and not result["within"]
    assert np.all((matrix >= -1e-9) & (matrix <= 1 + 1e-9))
    assert result["encoder_a"] != result["encoder_b"]


def _fake_store(ids: list[str], layers: dict[str, np.ndarray], path: str) -> SimpleNamespace:
    return SimpleNamespace(index=pd.DataFrame({"utt_id": ids}), layer_names=list(layers),
                           layer=lambda name: layers[name], path=path)


def test_rows_are_matched_by_utterance_not_position():
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(30)]
    X, Y = rng.normal(size=(30, 5)), rng.normal(size=(30, 4))
    order = rng.permutation(30)
    a = _fake_store(ids, {"x": X}, "a")
    b = _fake_store([ids[i] for i in order], {"y": Y[order]}, "b")
    layers_a, layers_b = aligned_layers(a, b)
    np.testing.assert_array_equal(layers_a["x"], X)
    np.testing.assert_array_equal(layers_b["y"], Y)  # back in the first store's order
    with pytest.raises(SpeechprobeError, match="hold different utterances"):
        aligned_layers(a, _fake_store(ids[:29] + ["other"], {"y": Y}, "c"))


def test_bad_input_is_one_line_and_exit_2(stores, tmp_path: Path):
    code, _, err = _run(["similarity", "--store", str(stores[0]), "--store", str(stores[0]), "--store",
                         str(stores[1]), "--out", str(tmp_path / "three")])
    assert code == 2 and "--store is given 3 times" in err and not (tmp_path / "three").exists()
    code, _, err = _run(["similarity", "--store", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert code == 2 and "nowhere" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    code, _, err = _run(["similarity", "--store", str(stores[0]), "--out", str(busy)])
    assert code == 2 and "not empty" in err and (busy / "keep.txt").read_text() == "mine"
