"""Which number format the models compute in: float32, or bfloat16 autocast where the hardware has it.

bf16 autocast runs matrix products and convolutions in bfloat16 with float32 accumulation; parameters,
the loss and the keypoint decoding stay float32. On a CPU with native bf16 instructions (AVX512-BF16 or
AMX), and on a GPU that has them, it is much faster than float32 for a forward pass and a training step; on
a CPU without them oneDNN emulates bf16 and is slower than float32, so ``auto`` only picks it where it is
native.
"""

from __future__ import annotations

import contextlib
import copy
from contextlib import AbstractContextManager

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (fast), not by emulation."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where ``device`` has native bf16, else ``fp32``; others as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def model_precision(model: torch.nn.Module, precision: str, device: torch.device) -> str:
    """What ``model`` computes in: its own fixed precision where it has one (an ONNX graph runs float32, or
    int8 where quantized, whatever autocast says), else ``resolve_precision``."""
    return getattr(model, "precision", None) or resolve_precision(precision, device)


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context for a resolved ``precision`` (``fp32``: none) on ``device``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


_AUTOCAST_WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def bf16_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose linear and convolution layers hold bfloat16 weights, for inference under
    bf16 autocast (the caller's model is left as it is).

    Autocast casts a float32 weight to bfloat16 on every call of its layer (it caches casts only for
    weights that require grad): a copy of every weight per forward pass, a sixth of a small batch's time on
    a CPU (``docs/speed.md``). Cast once here, the layers compute exactly what autocast computed;
    everything autocast keeps in float32 (normalisations, softmax, embeddings) keeps its float32
    parameters."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, _AUTOCAST_WEIGHTS):
            module.to(torch.bfloat16)
    return model
