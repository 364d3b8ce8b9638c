"""speechprobe.compat: each private API and its public fallback give the same answer as the reference."""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AutoModel

from speechprobe import compat
from speechprobe.encoders.hf import random_config

# --------------------------------------------------------------------------------------------------
# torch._fused_adam_ and its fallback, against torch.optim.Adam

HAS_KERNEL = hasattr(torch, "_fused_adam_")


def _adam_run(fused: Any, steps: int = 4, lr: float = 3e-3) -> list[torch.Tensor]:
    """``steps`` updates of two tensors through compat.adam_update_, from a seeded start and gradients."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 3, 2, generator=generator), torch.randn(4, 2, generator=generator)]
    moments = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    counts = [torch.zeros(()), torch.zeros(())]
    for step in range(1, steps + 1):
        grads = [torch.randn(p.shape, generator=generator) for p in params]
        for count in counts:
            count.fill_(float(step))
        compat.adam_update_(params, grads, *moments, counts, lr=lr, fused=fused)
    return params


def _torch_adam(steps: int = 4, lr: float = 3e-3) -> list[torch.Tensor]:
    """The same run through torch.optim.Adam (single-tensor implementation: the public reference)."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 3, 2, generator=generator).requires_grad_(True),
              torch.randn(4, 2, generator=generator).requires_grad_(True)]
    optimiser = torch.optim.Adam(params, lr=lr, foreach=False)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimiser.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("fused", [
    pytest.param(True, marks=pytest.mark.skipif(not HAS_KERNEL, reason="this torch has no _fused_adam_")),
    False,
])
def test_adam_update_equals_torch_adam(fused: bool) -> None:
    expected = _torch_adam()
    start = _adam_run(fused, steps=0)
    got = _adam_run(fused)
    for before, after, reference in zip(start, got, expected):
        assert not torch.equal(after, before)       # the run moved the weights ...
        torch.testing.assert_close(after, reference, rtol=1e-5, atol=1e-7)   # ... exactly as torch's Adam


def test_adam_update_falls_back_without_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _torch_adam()
    monkeypatch.delattr(torch, "_fused_adam_", raising=False)
    for got, reference in zip(_adam_run(None), expected):
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="no torch._fused_adam_"):
        _adam_run(True)


def test_adam_update_falls_back_when_the_kernel_signature_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed_arguments(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, learning_rate):
        raise AssertionError("never reached: binding the arguments fails first")

    expected = _torch_adam()
    monkeypatch.setattr(torch, "_fused_adam_", renamed_arguments, raising=False)
    for got, reference in zip(_adam_run(None), expected):
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError):  # forced fused: the change is reported, not hidden
        _adam_run(True)


# --------------------------------------------------------------------------------------------------
# transformers' _get_feat_extract_output_lengths and the config formula

LENGTHS = torch.tensor([400, 719, 720, 16000, 16001])


def _tiny(architecture: str, **overrides: Any) -> nn.Module:
    config = random_config(architecture, "tiny")
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return AutoModel.from_config(config).eval()


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {
        "wav2vec2": _tiny("wav2vec2"),
        "hubert": _tiny("hubert"),     # its private method takes no add_adapter argument
        "wav2vec2-adapter": _tiny("wav2vec2", add_adapter=True, num_adapter_layers=2, adapter_stride=2,
                                  output_hidden_size=32),
        # another CNN layout: the fallback must read the config, not assume the base one
        "wav2vec2-short-cnn": _tiny("wav2vec2", conv_dim=(16, 16), conv_kernel=(4, 3), conv_stride=(3, 2),
                                    num_feat_extract_layers=2),
    }


@pytest.mark.parametrize("name", ["wav2vec2", "hubert", "wav2vec2-adapter", "wav2vec2-short-cnn"])
def test_output_lengths_private_and_fallback_agree(models: dict[str, nn.Module], name: str) -> None:
    model = models[name]
    private = compat.feat_extract_output_lengths(model, LENGTHS)
    without_method = compat.feat_extract_output_lengths(SimpleNamespace(config=model.config), LENGTHS)
    assert private.tolist() == without_method.tolist() == compat.conv_output_lengths(model.config, LENGTHS).tolist()
    # and both are the frames the CNN really gives
    with torch.no_grad():
        frames = [model.feature_extractor(torch.zeros(1, int(n))).shape[-1] for n in LENGTHS]
    assert private.tolist() == frames


def test_output_lengths_known_values(models: dict[str, nn.Module]) -> None:
    base = [1 + (int(n) - 400) // 320 for n in LENGTHS]    # 25 ms receptive field, 20 ms hop at 16 kHz
    assert compat.feat_extract_output_lengths(models["wav2vec2"], LENGTHS).tolist() == base
    # the adapter's strided layers are not counted: the encoder's layers are read before it
    assert compat.feat_extract_output_lengths(models["wav2vec2-adapter"], LENGTHS).tolist() == base
    assert models["wav2vec2-adapter"]._get_feat_extract_output_lengths(LENGTHS).tolist() != base
    short = [((int(n) - 4) // 3 + 1 - 3) // 2 + 1 for n in LENGTHS]
    assert compat.feat_extract_output_lengths(models["wav2vec2-short-cnn"], LENGTHS).tolist() == short


def test_output_lengths_fallback_after_a_signature_change(models: dict[str, nn.Module]) -> None:
    model = models["wav2vec2-adapter"]
    changed = SimpleNamespace(config=model.config, _get_feat_extract_output_lengths=lambda lengths: lengths * 0)
    assert compat.feat_extract_output_lengths(changed, LENGTHS).tolist() == [1 + (int(n) - 400) // 320 for n in LENGTHS]


def test_output_lengths_fallback_needs_a_cnn_config() -> None:
    with pytest.raises(ValueError, match="no conv_kernel/conv_stride"):
        compat.conv_output_lengths(SimpleNamespace(), LENGTHS)


# --------------------------------------------------------------------------------------------------
# captum's LRP tables and the documented list


def test_lrp_private_tables_are_read() -> None:
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

    assert set(compat.lrp_supported_layers()) == {*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS}


def test_lrp_fallback_is_captums_list_less_its_internals() -> None:
    private, fallback = set(compat.lrp_supported_layers()), set(compat.lrp_supported_layers(private=False))
    assert fallback == set(compat.LRP_SUPPORTED_FALLBACK)
    assert fallback <= private                          # never claims a rule captum lacks
    assert all(t.__module__.startswith("captum.") for t in private - fallback)


def test_lrp_fallback_when_captum_moves_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "captum.attr._core.lrp", None)    # importing it now raises ImportError
    assert compat.lrp_supported_layers() == compat.LRP_SUPPORTED_FALLBACK


@pytest.mark.parametrize("private", [True, False])
def test_lrp_unsupported_with_either_list(monkeypatch: pytest.MonkeyPatch, private: bool) -> None:
    from captum.attr import LRP

    from speechprobe.experiments.studies.attribution.attribute import lrp_unsupported

    if not private:
        monkeypatch.setitem(sys.modules, "captum.attr._core.lrp", None)
    supported = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.1), nn.Tanh(), nn.Linear(5, 3)).eval()
    unsupported = nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.LayerNorm(5), nn.GELU(), nn.Linear(5, 3)).eval()
    assert lrp_unsupported(supported) == []
    assert lrp_unsupported(unsupported) == ["GELU", "LayerNorm"]
    inputs = torch.randn(2, 6, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    assert LRP(supported).attribute(inputs, target=0).shape == inputs.shape   # what "supported" promises
    with pytest.raises(TypeError, match="no rule defined"):
        LRP(unsupported).attribute(inputs, target=0)


def test_compat_imports_no_layer() -> None:
    """It sits outside tasks -> encoders -> probing -> experiments, so every layer may import it."""
    tree = ast.parse((Path(compat.__file__)).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert modules and not {m for m in modules if m and m.startswith("speechprobe")}
