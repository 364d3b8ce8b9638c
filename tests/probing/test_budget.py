"""Training arrays within a memory budget: the same numbers as converting everything to float64, far less memory."""
from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

import speechprobe.probing.budget as budget
from speechprobe.probing.budget import (gather_rows, layer_banks, parse_size, standardisation, standardise_)
from speechprobe.probing.probe import fit_probes
from speechprobe.probing.sweep import probe_layers

FAST = dict(max_epochs=6, batch_size=64, lr=1e-2)


@pytest.mark.parametrize("shape", [(1000, 1), (1000, 3), (777, 64), (50, 300)])
def test_standardisation_is_bit_for_bit_the_float64_one(shape, monkeypatch):
    monkeypatch.setattr(budget, "BLOCK_BYTES", 8 * 64 * 7)  # many small, uneven blocks
    rng = np.random.default_rng(1)
    X = (rng.standard_normal(shape) * rng.uniform(0.1, 30, shape[1]) + rng.uniform(-50, 50, shape[1])).astype(np.float32)
    X[:, 0] = 3.25  # a constant neuron gets scale 1
    X64 = X.astype(np.float64)
    mean, scale = standardisation(X)
    std = X64.std(axis=0)
    assert np.array_equal(mean, X64.mean(axis=0))
    assert np.array_equal(scale, np.where(std > 1e-7 * np.maximum(np.abs(X64.mean(0)), 1), std, 1.0))
    assert scale[0] == 1.0
    expected = ((X64 - mean) / scale).astype(np.float32)
    copy = X.copy()
    assert standardise_(copy, mean, scale) is copy and np.array_equal(copy, expected)  # in place
    out = np.empty_like(X)
    standardise_(X64, mean, scale, out=out)
    assert np.array_equal(out, expected)
    with pytest.raises(ValueError, match="float32"):
        standardise_(X64.copy(), mean, scale)


def test_gather_rows_reads_a_memory_map_a_block_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BLOCK_BYTES", 2**20)
    rng = np.random.default_rng(0)
    paths = []
    for g in range(3):
        np.save(tmp_path / f"l{g}.npy", rng.standard_normal((40_000, 64)).astype(np.float32))
        paths.append(tmp_path / f"l{g}.npy")
    layers = [np.load(p, mmap_mode="r") for p in paths]
    rows = np.sort(rng.choice(40_000, 10_000, replace=False))
    tracemalloc.start()
    try:
        X = gather_rows(layers, rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert X.dtype == np.float32 and X.shape == (3, 10_000, 64)
    assert all(np.array_equal(X[g], np.asarray(layers[g])[rows]) for g in range(3))
    assert peak < X.nbytes + 3 * 2**20  # the result and a block, not a layer (10 MB each) or float64 copies
    with pytest.raises(ValueError, match="one width"):
        gather_rows([layers[0], np.zeros((40_000, 8), np.float32)], rows)
    bad = np.asarray(layers[1]).copy()
    bad[rows[5], 3] = np.inf
    with pytest.raises(ValueError, match="layer 'b' contains NaN or Inf"):
        gather_rows([layers[0], bad], rows, names=["a", "b"])
    assert gather_rows([np.asarray(layers[0], np.float64)], rows).dtype == np.float64  # no digits lost


def test_layer_banks_fit_the_budget_and_are_even():
    names = [f"l{i}" for i in range(13)]
    assert layer_banks(names, 100, 10_000) == [names]
    banks = layer_banks(names, 100, 500)  # 5 fit: 3 banks, evened out
    assert [len(b) for b in banks] == [4, 5, 4] and sum(banks, []) == names
    assert all(len(b) * 100 <= 500 for b in banks)
    assert [len(b) for b in layer_banks(names, 100, 50)] == [1] * 13  # a layer over the budget trains alone
    assert layer_banks([], 100, 500) == []


@pytest.mark.parametrize("text, size", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("2.5GB", int(2.5 * 2**30)),
                                        ("1.5 GiB", int(1.5 * 2**30)), (3 * 2**20, 3 * 2**20), ("4194304", 2**22)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "8X", "-1G", "", "100K", True])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="memory budget"):
        parse_size(text)


def test_default_budget_is_half_the_available_memory(monkeypatch):
    monkeypatch.setattr(budget, "_available_bytes", lambda: 10 * 2**30)
    assert budget.default_budget() == 5 * 2**30
    monkeypatch.setattr(budget, "_available_bytes", lambda: None)
    assert budget.default_budget() == 4 * 2**30


def test_fit_probes_standardises_in_place_only_when_asked():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    X = (rng.standard_normal((2, 200, 5)) + y[None, :, None] + 10).astype(np.float32)
    X_val = X[:, ::4].copy()
    for copy in (True, False):
        train, val = X.copy(), X_val.copy()
        probes = fit_probes(train, y, val, y[::4], [(0, 0), (0, 0)], inputs=[0, 1], options=FAST, copy=copy)
        assert np.array_equal(train, X) == copy and np.array_equal(val, X_val) == copy
        if not copy:  # the caller's arrays now hold the standardised values
            assert np.allclose(train[1], (X[1] - probes[1].mean_) / probes[1].scale_, atol=1e-5)
        assert np.array_equal(probes[0].coef_, fit_probes(X, y, X_val, y[::4], [(0, 0), (0, 0)], inputs=[0, 1],
                                                          options=FAST)[0].coef_)


def _correlated_layers(n: int, d: int, n_layers: int, seed: int = 0):
    """Layers like an encoder's: neighbouring layers share most of their content, neurons are correlated."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    state = rng.standard_normal((n, d)) + 0.4 * np.eye(3, d)[y]
    layers = {}
    for i in range(n_layers):
        state = 0.8 * state + 0.2 * rng.standard_normal((n, d))
        layers[f"layer{i}"] = (state @ mixing).astype(np.float32)
    perm = rng.permutation(n)
    split = SimpleNamespace(train=perm[: n * 7 // 10], validation=perm[n * 7 // 10: n * 17 // 20], test=perm[n * 17 // 20:])
    return layers, y, split


def test_a_sweep_within_a_small_budget_gives_the_same_result_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BLOCK_BYTES", 2**20)  # float64 blocks of rows: the fixed overhead
    layers, y, split = _correlated_layers(6000, 96, 6)
    stored = {}
    for name, X in layers.items():  # as a store serves them: memory maps
        np.save(tmp_path / f"{name}.npy", X)
        stored[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    data = sum(X.nbytes for X in layers.values())
    layer_rows = (len(split.train) + len(split.validation)) * 96 * 4
    messages = []
    kwargs = dict(grid=[(0, 0), (1e-3, 0)], options=FAST, n_resamples=100)
    whole = probe_layers(layers, y, split, **kwargs)
    tracemalloc.start()
    try:
        banked = probe_layers(stored, y, split, memory=2 * layer_rows + 2**20, progress=messages.append, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    budget_text = budget.format_size(2 * layer_rows + 2**20)
    assert [m for m in messages if m.startswith("probing")] == [f"probing 2 layer(s) (of 6, to stay within {budget_text}) "
                                                                 "x 2 settings (96 neurons)"] * 3
    for a, b in zip(whole.layers, banked.layers):  # banks train as the whole group would (to float rounding)
        assert json.dumps(a.as_dict()) == json.dumps(b.as_dict())  # as text: NaN spreads of one fold compare equal
        assert np.allclose(whole.probes[a.layer].coef_, banked.probes[b.layer].coef_, rtol=1e-4, atol=1e-6)
    # numpy memory at the peak: two layers' training rows and a few float64 blocks of rows (their standardisation);
    # never the data (13.8 MB) nor a float64 copy of it
    assert peak < 2 * layer_rows + 4 * 2**20
    assert peak < data * 0.6


def _resident_file_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssFile")


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED") or not __import__("os").path.exists("/proc/self/status"),
                    reason="needs madvise and /proc (Linux)")
def test_a_memory_map_read_for_training_is_not_left_resident(tmp_path):
    X = np.random.default_rng(0).standard_normal((50_000, 256)).astype(np.float32)  # 51 MB
    np.save(tmp_path / "layer.npy", X)
    del X
    layer = np.load(tmp_path / "layer.npy", mmap_mode="r")
    before = _resident_file_bytes()
    float(np.asarray(layer).sum())  # every page read, as without releasing them
    touched = _resident_file_bytes()
    assert touched - before > 40e6
    budget.release_pages(layer[10:20])  # through a view too
    assert _resident_file_bytes() - before < 5e6
    rows = np.arange(0, 50_000, 3)
    gathered = gather_rows([layer], rows)
    assert _resident_file_bytes() - before < 5e6 and np.array_equal(gathered[0], np.asarray(layer)[rows])
    budget.release_pages(np.zeros(3))  # not a memory map: nothing to do
