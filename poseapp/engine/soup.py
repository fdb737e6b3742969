"""A uniform model soup: the mean of the weights of several checkpoints of one model.

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time" (ICML 2022): models fine-tuned from one common checkpoint lie in one basin of the
loss, and the mean of their weights is typically at least as accurate as the best of them, at the cost of one
model at inference. PoseApp's runs that continue the shipped default (``train --init``) are such a family.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..models import create_model, load_model
from .train import seed_from


def _with_lateral_head(model: nn.Module) -> nn.Module:
    """``model`` (a ViTPose or EViTPose without lateral connections) as the same function with them: its
    every tensor, the head's lateral convolutions at zero (``DeconvHead``'s init)."""
    lateral = create_model(model.arch, **{**model.config, "head_lateral": True})
    seed_from(lateral, model)
    return lateral.eval()


def average_checkpoints(paths: Sequence[str | Path]) -> nn.Module:
    """The model whose floating-point tensors (weights and BatchNorm statistics) are the mean of those in
    ``paths``; integer tensors (BatchNorm's step counters) are the first checkpoint's.

    A checkpoint without a head's lateral connections joins a soup of ones with them (a run continued from it
    with ``--head-lateral``) as the same function with them at zero. ValueError unless there are at least two
    checkpoints, all of the same model with the same configuration otherwise (``WeightsError``, a ValueError,
    for a file that is not a checkpoint).
    """
    if len(paths) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    models = [load_model(path) for path in paths]
    if any(model.config.get("head_lateral") for model in models):
        models = [
            model if model.config.get("head_lateral") else _with_lateral_head(model) for model in models
        ]
    first = models[0]
    for path, model in zip(paths[1:], models[1:], strict=True):
        if model.arch != first.arch or model.config != first.config:
            raise ValueError(
                f"{path} holds {model.arch} {model.config}, not {first.arch} {first.config} like {paths[0]}"
            )
    states = [model.state_dict() for model in models]
    mean = {
        name: (
            torch.stack([state[name] for state in states]).mean(dim=0)
            if tensor.is_floating_point()
            else tensor
        )
        for name, tensor in states[0].items()
    }
    first.load_state_dict(mean)
    return first
