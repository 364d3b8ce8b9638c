"""Every private API of torch, transformers and captum that speechprobe uses, each behind one function.

Why one module: a private name can change or vanish in any release of its library. Here each one sits
behind a small function with a fallback written with public APIs only, and ``tests/test_compat.py``
checks that both paths agree, so an upgrade that drops a private name costs speed or breadth, never a
wrong result, and the lead knows where to look. This module sits outside the four layers (tasks ->
encoders -> probing -> experiments), so any of them may import it; it imports none of them.

- :func:`adam_update_`: torch's fused Adam kernel ``torch._fused_adam_`` (probing.training's probe banks).
- :func:`feat_extract_output_lengths`: transformers' ``model._get_feat_extract_output_lengths``
  (encoders.hf: frames per utterance after the wav2vec2-family CNN).
- :func:`lrp_supported_layers`: captum's ``captum.attr._core.lrp`` rule tables
  (experiments.attribution: which modules LRP can pass through).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["LRP_SUPPORTED_FALLBACK", "adam_update_", "conv_output_lengths", "feat_extract_output_lengths",
           "lrp_supported_layers", "reference_adam_update_"]


# --------------------------------------------------------------------------------------------------
# torch: the fused Adam kernel


def reference_adam_update_(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
                           exp_avg_sqs: Sequence[Tensor], state_steps: Sequence[Tensor], *, lr: float,
                           beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """:func:`adam_update_`'s fallback: torch.optim.Adam's single-tensor update written out in public ops
    (ten elementwise passes per tensor instead of the kernel's one; same numbers to float rounding)."""
    for param, grad, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, state_steps):
        t = float(step)
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = (v.sqrt() / math.sqrt(1.0 - beta2 ** t)).add_(eps)
        param.addcdiv_(m, denom, value=-lr / (1.0 - beta1 ** t))


def _fused_kernel() -> Optional[Any]:
    return getattr(torch, "_fused_adam_", None)


def adam_update_(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
                 exp_avg_sqs: Sequence[Tensor], state_steps: Sequence[Tensor], *, lr: float, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, fused: Optional[bool] = None) -> None:
    """One Adam step in place (no weight decay, no amsgrad), as ``torch.optim.Adam`` makes it.

    ``state_steps`` hold each tensor's step number *after* this step (1 on the first step): they are
    read, not incremented, as the kernel does. ``exp_avgs``/``exp_avg_sqs`` are Adam's moments, updated too.

    Private API: ``torch._fused_adam_``, the kernel behind ``torch.optim.Adam(fused=True)``; why: one
    pass over each tensor instead of ten elementwise ops, 0.05 ms against 0.27 ms a step for a bank of
    40 probes of 384 x 8 (a fifth of a whole training step). Fallback (``fused=False``, a torch without
    the kernel, or one whose kernel no longer takes these arguments): :func:`reference_adam_update_`.
    ``fused=None`` uses the kernel when torch has it.
    """
    kernel = _fused_kernel() if fused is not False else None
    if fused and kernel is None:
        raise RuntimeError("this torch has no torch._fused_adam_ kernel; use fused=None or False")
    if kernel is not None:
        try:
            kernel(list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), [], list(state_steps), lr=lr,
                   beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
            return
        except TypeError:  # a changed signature fails while binding arguments, before touching a tensor
            if fused:
                raise
    reference_adam_update_(params, grads, exp_avgs, exp_avg_sqs, state_steps, lr=lr, beta1=beta1, beta2=beta2,
                           eps=eps)


# --------------------------------------------------------------------------------------------------
# transformers: frames after the wav2vec2-family CNN


def conv_output_lengths(config: Any, lengths: Tensor) -> Tensor:
    """:func:`feat_extract_output_lengths`' fallback: the frames after each 1-D convolution of the
    feature encoder, ``floor((n - kernel) / stride) + 1`` per layer of ``config.conv_kernel`` and
    ``config.conv_stride`` (no padding, as every wav2vec2-family CNN is built)."""
    try:
        layers = list(zip(config.conv_kernel, config.conv_stride, strict=True))
    except AttributeError:
        raise ValueError(f"{type(config).__name__} has no conv_kernel/conv_stride: not a wav2vec2-family config") from None
    for kernel, stride in layers:
        lengths = torch.div(lengths - int(kernel), int(stride), rounding_mode="floor") + 1
    return lengths


def feat_extract_output_lengths(model: nn.Module, lengths: Tensor) -> Tensor:
    """Frames per utterance after a wav2vec2-family model's CNN feature encoder, for lengths in samples.

    An adapter after the encoder (``config.add_adapter``) is left out: its frames are not the layers read.

    Private API: transformers' ``model._get_feat_extract_output_lengths`` (wav2vec2, HuBERT, WavLM,
    data2vec-audio); why: it is transformers' own answer for each architecture, the same count its
    attention masks use. Fallback (a model without the method, or whose method no longer takes these
    arguments): :func:`conv_output_lengths` from the config's conv_kernel and conv_stride.
    """
    method = getattr(model, "_get_feat_extract_output_lengths", None)
    if method is not None:
        try:
            if getattr(model.config, "add_adapter", False):  # HuBERT's method has no add_adapter argument
                return method(lengths, add_adapter=False)
            return method(lengths)
        except TypeError:
            pass
    return conv_output_lengths(model.config, lengths)


# --------------------------------------------------------------------------------------------------
# captum: the module types LRP has rules for

# captum 0.9's tables (captum/attr/_core/lrp.py), less its own internal Addition_Module: layers with the
# epsilon rule, then the non-linearities LRP passes relevance through unchanged.
LRP_SUPPORTED_FALLBACK: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Linear,
    nn.BatchNorm2d,
    nn.ReLU, nn.Dropout, nn.Tanh,
)


def lrp_supported_layers(*, private: bool = True) -> tuple[type[nn.Module], ...]:
    """The module types captum's LRP can run through without a rule set by hand (matched by exact type).

    Private API: ``captum.attr._core.lrp.SUPPORTED_LAYERS_WITH_RULES`` and ``SUPPORTED_NON_LINEAR_LAYERS``;
    why: captum publishes no list, and its LRP raises a TypeError on the first unsupported module it
    meets, naming only that one: speechprobe checks first and names them all in one clear error. Fallback (``private=False``, or captum moved
    them): :data:`LRP_SUPPORTED_FALLBACK`, captum 0.9's tables written out.
    """
    if private:
        try:
            from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
        except ImportError:
            pass
        else:
            return (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS)
    return LRP_SUPPORTED_FALLBACK
