"""Probe banks train on the device Lightning gives them: every tensor follows the bank, results match the CPU's.

This machine may have no GPU: the moves are checked on the meta device (where every tensor goes, no data) and
through dtype round trips (which go through the same ``_apply`` as a device move and must keep training
exactly as it was); the GPU comparison runs only where CUDA is available.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speechprobe.probing import training
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.probe import fit_probes
from speechprobe.probing.training import ProbeBank, RaggedProbeBank, train_probe_bank

D, C = 30, 3
KS = [1, 2, 3, 12, 14, 30, 29]


def _nested_masks(ranking: np.ndarray, ks) -> np.ndarray:
    masks = np.zeros((len(ks), len(ranking)), np.float32)
    for row, k in enumerate(ks):
        masks[row, ranking[:k]] = 1
    return masks


def _data(seed: int = 0, n: int = 240, inputs: int = 2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(inputs, n, D)).astype(np.float32)
    y = (X[0, :, :3] @ np.array([1.5, -1.0, 0.5]) + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    y[X[0, :, 5] > 1.0] = 2
    return X, y


def _banks():
    """A ProbeBank (two inputs), a masked ProbeBank (masks not nested) and a RaggedProbeBank (nested masks,
    several tiers, two probes already dropped), built with the arguments train_probe_bank gives them."""
    rng = np.random.default_rng(8)
    P = len(KS)
    l1, l2 = rng.uniform(0, 0.01, P).tolist(), rng.uniform(0, 0.01, P).tolist()
    plain = ProbeBank(D, C, l1[:4], l2[:4], input_index=[0, 0, 1, 1], batch_size=16)
    loose = (rng.random((P, D)) < 0.5).astype(np.float32)
    loose[:, 0] = 1
    assert training.nested_feature_order(loose) is None
    masked = ProbeBank(D, C, l1, l2, feature_mask=loose, input_index=[0] * P, batch_size=16)
    masks = _nested_masks(rng.permutation(D), KS)
    order = training.nested_feature_order(masks)
    ragged = RaggedProbeBank(D, C, l1, l2, feature_mask=masks, input_index=[0] * P, feature_order=order,
                             ordered_inputs=True, batch_size=16)
    ragged.active[[0, 5]] = False
    ragged._frozen_some()
    return {"plain": plain, "masked": masked, "ragged": ragged}


def _train_a_little(bank: ProbeBank, seed: int, steps: int = 3) -> None:
    """A few optimiser steps and a validation pass, without a Trainer (so Adam's moments, its step counts and
    the validation sum are set)."""
    X, y = _data(seed, n=64)
    X = torch.as_tensor(X[:1] if isinstance(bank, RaggedProbeBank) else X)
    y = torch.as_tensor(y)
    for _ in range(steps):
        bank.training_step((X, y), 0)
    bank.on_validation_epoch_start()
    bank.validation_step((X, y), 0)


def _tensors(value, path: str):
    """Every tensor reachable from ``value`` through dicts, lists and tuples (NamedTuples too), with its path."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{path}[{index}]")


def _all_tensors(bank: ProbeBank) -> dict[str, torch.Tensor]:
    return {path: tensor for name, value in vars(bank).items() for path, tensor in _tensors(value, name)}


@pytest.mark.parametrize("kind", ["plain", "masked", "ragged"])
def test_every_tensor_of_a_bank_follows_it_to_another_device(kind):
    bank = _banks()[kind]
    _train_a_little(bank, seed=1)
    before = _all_tensors(bank)
    plain_attributes = {"_scratch", "_adam_step_counts[0]", "_adam_step_counts[1]", "_val_sum"}
    if kind == "ragged":
        plain_attributes |= {"_state['weight']", "_state['m']", "_state['v_bias']", "_grad_weight", "_mask_full",
                             "_packed", "_tiers[0][0]", "_blocks[0][1]", "_blocks[0][2]", "_grad_blocks[0][2]"}
    assert plain_attributes <= set(before)  # the walk sees the plain attributes, not only parameters and buffers
    assert all(t.device.type == "cpu" for t in before.values())

    moved = bank.to(torch.device("meta"))
    assert moved is bank and bank.device.type == "meta"
    after = _all_tensors(bank)
    elsewhere = sorted(path for path, t in after.items() if t.device.type != "meta")
    assert not elsewhere, f"left behind on another device: {elsewhere}"
    assert plain_attributes <= set(after)
    assert len(after) >= len(before)
    if kind == "ragged":  # laid out again for the same probes (not the ones dropped)
        assert sorted(bank._training.tolist()) == [1, 2, 3, 4, 6]
        assert sum(tier.size for tier in bank._tiers) == 5


@pytest.mark.parametrize("kind", ["plain", "masked", "ragged"])
def test_a_dtype_round_trip_keeps_training_exactly_as_it_was(kind):
    """``.double()`` then ``.float()`` goes through the same ``_apply`` as a move to a GPU and back; float32 ->
    float64 -> float32 is exact, so the moved bank must train on bit for bit as one never moved. Views of the
    old weights (a ragged bank's per-tier blocks) left stale, or Adam's state lost, would show here."""
    moved, still = _banks()[kind], _banks()[kind]
    for bank in (moved, still):
        _train_a_little(bank, seed=2)

    moved.double()
    floats = {path: t for path, t in _all_tensors(moved).items() if t.is_floating_point()}
    steps = {path for path in floats if path.startswith("_adam_step_counts")}
    assert len(steps) == 2 and all(floats[path].dtype == torch.float32 for path in steps)  # the fused kernel's
    assert all(t.dtype == torch.float64 for path, t in floats.items() if path not in steps), \
        sorted(path for path, t in floats.items() if t.dtype != torch.float64 and path not in steps)
    if kind == "ragged":  # the per-tier views alias the new weights, biases and gradient buffer
        weights, biases = moved.weight.untyped_storage().data_ptr(), moved.bias.untyped_storage().data_ptr()
        grads = moved._grad_weight.untyped_storage().data_ptr()
        assert all(W.untyped_storage().data_ptr() == weights and b.untyped_storage().data_ptr() == biases
                   for _, W, b in moved._blocks)
        assert all(out.untyped_storage().data_ptr() == grads for _, _, out in moved._grad_blocks)
    X, y = _data(3, n=64)
    X = X[:1] if kind == "ragged" else X
    grad_weight, grad_bias = moved.gradients(torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y))
    reference = still.gradients(torch.as_tensor(X), torch.as_tensor(y))
    assert grad_weight.dtype == torch.float64
    torch.testing.assert_close(grad_weight.float(), reference[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_bias.float(), reference[1], rtol=1e-5, atol=1e-6)

    moved.float()
    for bank in (moved, still):
        _train_a_little(bank, seed=4, steps=4)
    assert moved.adam_steps == still.adam_steps == 7 * 64 // 16  # 7 chunks of 64 rows, batches of 16
    torch.testing.assert_close(moved.effective_weight(), still.effective_weight(), rtol=0, atol=0)
    torch.testing.assert_close(moved.effective_bias(), still.effective_bias(), rtol=0, atol=0)
    torch.testing.assert_close(moved._val_sum, still._val_sum, rtol=0, atol=0)


def _fit(options: TrainingOptions, **kwargs):
    X, y = _data(5, n=300)
    return fit_probes(X[:, :240], y[:240], X[:, 240:], y[240:], [(1e-3, 1e-4), (1e-2, 0.0), (0.0, 1e-2)] * 2,
                      inputs=[0, 0, 0, 1, 1, 1], options=options, **kwargs)


def test_auto_and_cpu_give_the_same_probes_on_a_machine_without_a_gpu():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("'auto' is a GPU here: compared with the CPU's to float tolerance in the CUDA test")
    options = TrainingOptions(max_epochs=6, batch_size=32, patience=2)
    assert options.accelerator == "auto" and options.device is None
    auto = _fit(options)
    for explicit in (options.replace(accelerator="cpu"), options.replace(accelerator="cpu", device=0)):
        cpu = _fit(explicit)
        for a, c in zip(auto, cpu):
            np.testing.assert_array_equal(a.coef_, c.coef_)
            np.testing.assert_array_equal(a.intercept_, c.intercept_)
            assert a.best_epoch_ == c.best_epoch_
            assert (c.accelerator, c.device) == (explicit.accelerator, explicit.device)  # the probe records them


def test_an_unknown_accelerator_is_a_value_error_naming_it():
    X, y = _data(6, n=80, inputs=1)
    with pytest.raises(ValueError, match="unknown accelerator 'tpu'; known: auto, cpu, gpu, cuda, mps"):
        train_probe_bank(X[:, :60], y[:60], X[:, 60:], y[60:], C, [0.0], [0.0], options={"accelerator": "tpu"})
    with pytest.raises(ValueError, match="unknown accelerator 'GPU'"):
        TrainingOptions(accelerator="GPU")


def test_a_cpu_has_one_device():
    X, y = _data(6, n=80, inputs=1)
    with pytest.raises(ValueError, match="device 1 asked for, but accelerator 'cpu' trains on the CPU"):
        train_probe_bank(X[:, :60], y[:60], X[:, 60:], y[60:], C, [0.0], [0.0],
                         options=TrainingOptions(accelerator="cpu", device=1))


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_on_a_machine_without_one_is_a_one_line_value_error(accelerator):
    X, y = _data(6, n=80, inputs=1)
    with pytest.raises(ValueError) as raised:
        train_probe_bank(X[:, :60], y[:60], X[:, 60:], y[60:], C, [0.0], [0.0],
                         options=TrainingOptions(max_epochs=1, accelerator=accelerator))
    message = str(raised.value)
    assert "\n" not in message
    assert f"accelerator {accelerator!r}" in message and message.endswith("(available here: auto, cpu)")


def test_the_trained_bank_comes_back_on_the_cpu():
    X, y = _data(7, n=100, inputs=1)
    bank = train_probe_bank(X[:, :80], y[:80], X[:, 80:], y[80:], C, [1e-3, 0.0], [0.0, 1e-3],
                            options=TrainingOptions(max_epochs=2))
    assert {t.device.type for t in _all_tensors(bank).values()} == {"cpu"}


def _train_both(accelerator: str, device):
    """The same banks (a plain bank on two inputs, a ragged bank of nested masks) on the CPU and on a GPU."""
    rng = np.random.default_rng(11)
    X, y = _data(12, n=1200)
    masks = _nested_masks(rng.permutation(D), KS)
    split = (X[:, :1000], y[:1000], X[:, 1000:], y[1000:], C)
    runs = {}
    for where, placement in (("cpu", {"accelerator": "cpu"}), ("gpu", {"accelerator": accelerator, "device": device})):
        options = TrainingOptions(max_epochs=20, batch_size=32, lr=1e-2, patience=3, **placement)
        runs[where] = [
            train_probe_bank(*split, [1e-3, 1e-4, 0.0, 1e-2], [1e-4, 1e-3, 1e-2, 0.0], input_index=[0, 0, 1, 1],
                             options=options),
            train_probe_bank(X[:1, :1000], y[:1000], X[:1, 1000:], y[1000:], C, [1e-3] * len(KS), [1e-4] * len(KS),
                             feature_mask=masks, options=options),
        ]
    return runs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("accelerator, device", [("gpu", None), ("cuda", 0), ("auto", None)])
def test_a_bank_trained_on_a_gpu_agrees_with_the_cpu(accelerator, device):
    if torch.get_float32_matmul_precision() != "highest":
        pytest.skip("TF32 matrix products are on: float32 results then differ from the CPU's by more")
    runs = _train_both(accelerator, device)
    assert isinstance(runs["gpu"][1], RaggedProbeBank)
    for cpu, gpu in zip(runs["cpu"], runs["gpu"]):
        assert {t.device.type for t in _all_tensors(gpu).values()} == {"cpu"}  # handed back on the CPU
        same_epoch = (cpu.best_epoch == gpu.best_epoch).numpy()
        assert same_epoch.mean() >= 0.75, (cpu.best_epoch, gpu.best_epoch)
        torch.testing.assert_close(gpu.best_weight[same_epoch], cpu.best_weight[same_epoch], rtol=0, atol=1e-4)
        torch.testing.assert_close(gpu.best_bias[same_epoch], cpu.best_bias[same_epoch], rtol=0, atol=1e-4)
        torch.testing.assert_close(gpu.best_loss[same_epoch], cpu.best_loss[same_epoch], rtol=1e-4, atol=1e-6)
