"""``main.py export``: a PoseApp checkpoint as an ONNX graph at one knob value, checked against its source.

The graph takes crops (B, 3, h, w) in [0, 1], any batch size, and returns the heatmap logits and the run
record (``models.onnx_model.record_tensors``); ``load_model`` opens it as an ``OnnxPoseModel``. EViTPose's
pruning at a fixed keep ratio is a static graph (top-k of a known size). EMGPose's per-person choice of
stage is not, so it exports one of its two routes: eta 0 (the coarse stage only) or eta 1 (both stages for
every person).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models import EMGPose, prepare_for_inference
from ..models.onnx_model import INPUT_NAME, METADATA_KEY, OnnxMetadata, OnnxPoseModel, record_tensors
from ..runtime.flops import count_macs
from ..runtime.inference import keypoints_from_logits

OPSET = 18
MAX_KEYPOINT_ERROR_PX = 0.5
"""An export whose keypoints move more than this (crop pixels) from the source model's is refused."""
CHECK_BATCHES = (1, 3)
"""Batch sizes the check runs: neither is the example's, so the batch axis is proven dynamic."""


class ExportError(ValueError):
    """A model that cannot be exported as asked, or an export that does not reproduce its source."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    megabytes: float
    knob_name: str
    knob: float
    gflops: float
    """10^9 multiply-adds per crop."""
    max_logit_error: float
    """Largest difference of a heatmap logit from the source model's, over the check batches."""
    max_keypoint_error_px: float
    """Largest distance of a decoded joint from the source model's, in crop pixels."""
    seconds: float

    def summary(self, name: str | None = None) -> str:
        """One line: what was written (``name``, default the path), its cost and its check."""
        knob = "" if self.knob_name == "none" else f" at {self.knob_name} {self.knob:g}"
        return (
            f"wrote {name or self.path} ({self.megabytes:.1f} MB){knob}: GFLOPs/person {self.gflops:.3f}; "
            f"against the checkpoint, logits within {self.max_logit_error:.1e} and joints within "
            f"{self.max_keypoint_error_px:.1e} px ({self.seconds:.0f} s)"
        )


def static_route(model: nn.Module, knob: float) -> bool | None:
    """The EMGPose route an export at ``knob`` holds (False: coarse only, True: both stages); None for the
    other models, whose graph at a fixed knob is static anyway."""
    if not isinstance(model, EMGPose):
        return None
    if knob not in (model.knob.low, model.knob.high):
        raise ExportError(
            f"EMGPose picks each person's stage at run time (quality <= eta), which a graph cannot hold: "
            f"export it at eta {model.knob.low:g} (coarse stage only) or {model.knob.high:g} (both stages)"
        )
    return knob == model.knob.high


class _Graph(nn.Module):
    """The model at one knob value, returning its record's tensors as a tuple (what the exporter traces)."""

    def __init__(self, model: nn.Module, knob: float, route: bool | None) -> None:
        super().__init__()
        self.model, self.knob, self.route = model, knob, route

    def run(self, crops: torch.Tensor):
        if self.route is None:
            return self.model(crops, self.knob)
        return self.model(crops, self.knob, route=self.route)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tensor for _, tensor in record_tensors(self.run(crops)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _crops(model: nn.Module, n: int, seed: int) -> torch.Tensor:
    w, h = model.input_size
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _write(graph: _Graph, example: torch.Tensor, names: list[str], path: Path, opset: int) -> None:
    """Trace ``graph`` into ``path`` with a dynamic batch axis (the exporter's progress lines silenced)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (example,), str(path), dynamo=True, input_names=[INPUT_NAME], output_names=names,
            dynamic_shapes=({0: batch},), opset_version=opset, verbose=False,
        )  # fmt: skip


def write_metadata(path: Path, metadata: OnnxMetadata) -> None:
    """Store ``metadata`` in the ONNX file at ``path``, replacing what it held under ``METADATA_KEY``."""
    import onnx

    proto = onnx.load(str(path))
    held = [e for e in proto.metadata_props if e.key == METADATA_KEY]
    entry = held[0] if held else proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    onnx.save(proto, str(path))


def _check(model: nn.Module, graph: _Graph, exported: OnnxPoseModel) -> tuple[float, float]:
    """Largest logit and keypoint differences of ``exported`` from ``graph`` on fresh random crops, and the
    integer record (kept patches, merges, token counts) exactly equal."""
    logit_error = keypoint_error = 0.0
    for n in CHECK_BATCHES:
        crops = _crops(model, n, seed=n)
        with torch.no_grad():
            want = dict(record_tensors(graph.run(crops)))
        got = dict(record_tensors(exported(crops)))
        if list(got) != list(want):
            raise ExportError(f"the export returns {list(got)}, the model {list(want)}")
        for name, tensor in want.items():
            if not tensor.is_floating_point() and not torch.equal(tensor.to(got[name].dtype), got[name]):
                raise ExportError(f"the export's {name} differs from the model's at batch {n}")
        logit_error = max(logit_error, float((want["heatmaps"] - got["heatmaps"]).abs().max()))
        want_xy, got_xy = (keypoints_from_logits(record["heatmaps"])[0] for record in (want, got))
        keypoint_error = max(keypoint_error, float((want_xy - got_xy).norm(dim=-1).max()))
    return logit_error, keypoint_error


def export_onnx(
    model: nn.Module,
    path: str | Path,
    knob: float | None = None,
    source: str | Path | None = None,
    opset: int = OPSET,
) -> ExportReport:
    """Export ``model`` (as ``load_model`` returns it) at ``knob`` (default: its own) to ``path``, then run
    the file on onnxruntime against the model and refuse it (deleted, ``ExportError``) if it differs.

    ``source``: the checkpoint the model came from, named with its SHA-256 in the file's metadata."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"export needs the onnx and onnxscript packages ({exc.name} is missing)") from exc
    start = time.perf_counter()
    path = Path(path)
    model = prepare_for_inference(model).cpu().float()
    knob = model.knob.clamp(knob)
    graph = _Graph(model, knob, static_route(model, knob)).eval()
    example = _crops(model, 2, seed=0)
    with torch.no_grad():
        reference = graph.run(example)
    macs = count_macs(model, reference)
    if not bool((macs == macs[0]).all()):
        raise ExportError("the cost differs between crops at this knob: a static graph cannot hold it")
    names = [name for name, _ in record_tensors(reference)]
    source_name = "" if source is None else f"{Path(source).name} sha256:{_sha256(Path(source))}"
    metadata = OnnxMetadata(
        arch=model.arch, config=model.config, knob_name=model.knob.name, knob=knob,
        input_size=tuple(model.input_size), grid=tuple(reference.grid), patch=model.patch,
        num_joints=model.num_joints, macs_per_crop=int(macs[0]), outputs=tuple(names), source=source_name,
        info=getattr(model, "info", {}),
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write(graph, example, names, path, opset)
        write_metadata(path, metadata)
        logit_error, keypoint_error = _check(model, graph, OnnxPoseModel.load(path))
        if keypoint_error > MAX_KEYPOINT_ERROR_PX:
            raise ExportError(
                f"the export's joints differ from the model's by up to {keypoint_error:.2f} px "
                f"(at most {MAX_KEYPOINT_ERROR_PX} allowed)"
            )
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return ExportReport(
        path, path.stat().st_size / 1e6, model.knob.name, knob, int(macs[0]) / 1e9, logit_error,
        keypoint_error, time.perf_counter() - start,
    )  # fmt: skip
