"""A pose model exported to ONNX (``poseapp.onnx_export``), run by onnxruntime behind the torch model's face.

The graph holds one knob value, so its knob is fixed at it. Its outputs are the heatmaps and the run record
(``PoseOutput``'s tensors, named by ``record_tensors``), so the pipeline, the overlays, ``evaluate`` and
``bench`` take it like any PoseApp model. Its cost per crop does not depend on the input at a fixed knob;
the exporter measured it on the source model and stored it with the rest of what the library reads in the
file's metadata (``METADATA_KEY``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .knob import Knob
from .record import PoseOutput

METADATA_KEY = "poseapp"
INPUT_NAME = "crops"
_SKIPPED = ("knob", "grid", "coarse_heatmaps")
"""``PoseOutput`` fields that are not exported: the two the metadata holds, and the training-only maps."""


def record_tensors(out: PoseOutput) -> list[tuple[str, torch.Tensor]]:
    """The tensors of ``out`` in a fixed order with their names: a field's own name, ``field.i`` for the
    i-th tensor of a list field. Fields that are None or empty lists are left out."""
    named = []
    for f in fields(PoseOutput):
        value = getattr(out, f.name)
        if f.name in _SKIPPED or value is None:
            continue
        if isinstance(value, list):
            named += [(f"{f.name}.{i}", tensor) for i, tensor in enumerate(value)]
        else:
            named.append((f.name, value))
    return named


def record_from_tensors(named: dict[str, torch.Tensor], knob: float, grid: tuple[int, int]) -> PoseOutput:
    """The inverse of ``record_tensors``."""
    values: dict[str, Any] = {}
    lists: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, tensor in named.items():
        field_name, _, index = name.partition(".")
        if index:
            lists.setdefault(field_name, []).append((int(index), tensor))
        else:
            values[field_name] = tensor
    for field_name, items in lists.items():
        values[field_name] = [tensor for _, tensor in sorted(items, key=lambda item: item[0])]
    return PoseOutput(knob=knob, grid=grid, **values)


@dataclass(frozen=True)
class OnnxMetadata:
    """What the library needs to know of an exported model (stored as JSON in the ONNX metadata)."""

    arch: str
    config: dict
    knob_name: str
    knob: float
    input_size: tuple[int, int]
    """(w, h) of the crops."""
    grid: tuple[int, int]
    patch: int
    num_joints: int
    macs_per_crop: int
    outputs: tuple[str, ...]
    """Names of the graph's outputs, in order (``record_tensors``)."""
    source: str
    """File name and SHA-256 of the checkpoint it was exported from."""
    info: dict
    precision: str = "fp32"
    """What the graph computes in: ``fp32``, or ``int8`` for a quantized graph (``export --int8``)."""

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> OnnxMetadata:
        data = json.loads(text)
        data["input_size"], data["grid"] = tuple(data["input_size"]), tuple(data["grid"])
        data["outputs"] = tuple(data["outputs"])
        return cls(**data)


class OnnxPoseModel(nn.Module):
    """An exported PoseApp model on onnxruntime's CPU provider, called like the model it came from."""

    def __init__(self, path: str | Path, metadata: OnnxMetadata, session: Any) -> None:
        super().__init__()
        self.path, self.meta, self.session = Path(path), metadata, session
        self.arch = metadata.arch
        self.config = {**metadata.config, "runtime": "onnxruntime", "knob": metadata.knob}
        self.info = metadata.info
        self.knob = Knob(metadata.knob_name, metadata.knob, metadata.knob, metadata.knob)
        self.input_size = metadata.input_size
        self.grid, self.patch, self.num_joints = metadata.grid, metadata.patch, metadata.num_joints
        self.macs_per_crop = metadata.macs_per_crop
        self.precision = metadata.precision
        """The graph's own precision: autocast does not reach it."""

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OnnxPoseModel:
        """Open an exported file; ``threads``: onnxruntime's intra-op threads (default torch's count)."""
        import onnxruntime as ort

        from .zoo import WeightsError

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            text = session.get_modelmeta().custom_metadata_map[METADATA_KEY]
            metadata = OnnxMetadata.from_json(text)
        except Exception as exc:  # onnxruntime's errors (bad protobuf, bad graph) derive from Exception alone
            raise WeightsError(
                f"{path} is not a PoseApp ONNX export (expected one written by `main.py export`): {exc}"
            ) from exc
        names = tuple(o.name for o in session.get_outputs())
        if names != metadata.outputs:
            raise WeightsError(f"{path}: its outputs {names} are not the ones its metadata lists")
        return cls(path, metadata, session)

    def forward(self, crops: torch.Tensor, knob: float | None = None) -> PoseOutput:
        """``knob`` is ignored beyond the value the graph was exported at (``self.knob``)."""
        feed = {INPUT_NAME: crops.detach().float().cpu().contiguous().numpy()}
        arrays = self.session.run(None, feed)
        named = {
            name: torch.from_numpy(np.ascontiguousarray(array)).to(crops.device)
            for name, array in zip(self.meta.outputs, arrays, strict=True)
        }
        return record_from_tensors(named, self.meta.knob, self.grid)
