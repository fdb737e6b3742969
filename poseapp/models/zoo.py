"""Model names -> constructors, and checkpoints (safetensors, half precision, config in the metadata)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..skeleton import NUM_JOINTS
from .emgpose import EMGPose
from .evitpose import EViTPose
from .heads import DeconvHead
from .onnx_model import OnnxPoseModel
from .stem import YoloStem
from .unitranspose import SIZES as UNITRANSPOSE_SIZES
from .unitranspose import UniTransPose
from .vit import SIZES
from .vitpose import ViTPose

FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "vitpose": ViTPose, "evitpose": EViTPose, "emgpose": EMGPose, "unitranspose": UniTransPose,
}  # fmt: skip
FAMILY_SIZES: dict[str, Mapping[str, Any]] = {"unitranspose": UNITRANSPOSE_SIZES}
"""A family's own size table; the others are plain ViTs of ``vit.SIZES``."""
MODEL_NAMES: tuple[str, ...] = tuple(
    f"{family}_{size}" for family in FAMILIES for size in FAMILY_SIZES.get(family, SIZES)
)


class WeightsError(ValueError):
    """A checkpoint that is missing, unreadable, or of another model."""


def create_model(name: str, num_joints: int = NUM_JOINTS, **config: Any) -> nn.Module:
    """Build ``family_size`` (e.g. ``evitpose_t``) with random weights; ``config`` overrides defaults."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    family, _, size = name.partition("_")
    model = FAMILIES[family](FAMILY_SIZES.get(family, SIZES)[size], num_joints, **config)
    model.arch = name
    model.config = {"num_joints": num_joints, **config}
    return model


def save_model(model: nn.Module, path: str | Path, **info: Any) -> None:
    """Write ``model`` as half-precision safetensors; ``info`` (data, epochs, metrics) goes in metadata."""
    tensors = {
        k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()
    }
    meta = {"arch": model.arch, "config": json.dumps(model.config), "info": json.dumps(info)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The arch, config and info stored in a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return {
            "arch": meta["arch"],
            "config": json.loads(meta["config"]),
            "info": json.loads(meta.get("info", "{}")),
        }
    except (SafetensorError, KeyError, OSError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"{path} is not a PoseApp checkpoint (expected safetensors with an arch): {exc}"
        ) from exc


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Eval mode, with BatchNorms folded into the convolutions before them (stem, head), and the convolutions
    (stem, deconvolution head) channels-last, the layout crops arrive in (``crop_batch``) and the faster one
    for oneDNN on x86 CPUs and for GPUs."""
    model.eval()
    if isinstance(getattr(model, "patch_embed", None), YoloStem):
        model.patch_embed.fuse()
        model.patch_embed.to(memory_format=torch.channels_last)
    if isinstance(getattr(model, "head", None), DeconvHead):
        model.head.fuse()
        model.head.to(memory_format=torch.channels_last)
    return model


def describe_weights(path: str | Path) -> str:
    """The model a checkpoint holds (``evitpose_t``), or an ONNX export's with the knob it holds (and
    ``int8`` for a quantized one)."""
    if Path(path).suffix.lower() == ".onnx":
        model = OnnxPoseModel.load(path)
        knob = "" if model.knob.name == "none" else f", {model.knob.name} {model.knob.default:g}"
        precision = "" if model.precision == "fp32" else f" {model.precision}"
        return f"{model.arch} ONNX{precision}{knob}"
    return read_metadata(path)["arch"]


def _check_arch(path: str | Path, arch: str, expect: str | None) -> None:
    if expect and arch != expect and arch.partition("_")[0] != expect:
        raise WeightsError(f"{path} holds a {arch} model, not {expect}")


def load_model(path: str | Path, expect: str | None = None) -> nn.Module:
    """Rebuild the model a checkpoint holds, in float32 and eval mode; a ``.onnx`` file (``main.py export``)
    opens as an ``OnnxPoseModel``, which infers like it but cannot be trained.

    ``expect`` names the family or model the caller wants (``evitpose`` or ``evitpose_t``); another
    model's checkpoint is refused with a clear message.
    """
    if Path(path).suffix.lower() == ".onnx":
        model = OnnxPoseModel.load(path)
        _check_arch(path, model.arch, expect)
        return model
    meta = read_metadata(path)
    arch = meta["arch"]
    _check_arch(path, arch, expect)
    try:
        model = create_model(arch, **meta["config"])
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path} does not match the {arch} model it names: {exc}") from exc
    model.info = meta["info"]
    return model.eval()
