"""``main.py export --int8``: an exported graph in 8-bit integers, calibrated on people.

Static post-training quantization (Jacob et al., CVPR 2018), in onnxruntime's QDQ form: the weights of every
convolution and matrix product as int8 per output channel, and the activations of every operator onnxruntime
can quantize (the products and most elementwise operators between them, so that activations stay 8-bit from
one product to the next) as uint8 with a range measured on calibration crops (the min-max of each). On CPUs
with 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI, ARM's dot product) onnxruntime runs the products
in integer arithmetic. Quantizing the products alone was slower on this project's CPU (each product then
converts its input from float and back).

Calibration crops are people of a COCO keypoint file, cropped exactly as inference crops them
(``runtime.inference.crop_batch``): the ranges then are those of the photos the model will see. Training
people are the natural choice; a split the model is judged on is not (the ranges would be tuned on it). The
result is checked against the float graph on people kept apart from the calibration ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from ..models.onnx_model import INPUT_NAME, OnnxPoseModel
from ..runtime.inference import crop_batch, keypoints_from_logits
from .onnx_export import ExportError, write_metadata

CALIBRATION_PEOPLE = 256
CHECK_PEOPLE = 64
"""People kept apart from the calibration ones: the quantized graph is compared with the float one on them."""
MAX_MEDIAN_KEYPOINT_SHIFT = 0.01
"""A quantized graph whose median joint moves further than this share of the crop's height from the float
graph's is refused: its ranges do not fit the people it was calibrated on. The median, because a joint hidden
or out of the crop has a flat or two-peaked heatmap that a small change can send far."""


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    megabytes: float
    calibration_people: int
    check_people: int
    median_shift_px: float
    """Median distance of a decoded joint from the float graph's, in crop pixels, over the check people."""
    p95_shift_px: float
    seconds: float

    def summary(self) -> str:
        return (
            f"wrote {self.path} ({self.megabytes:.1f} MB), int8 calibrated on {self.calibration_people} "
            f"people: against the float graph on {self.check_people} other people, a joint moves "
            f"{self.median_shift_px:.2f} px at the median (p95 {self.p95_shift_px:.2f}) "
            f"({self.seconds:.0f} s)"
        )


def calibration_crops(
    ann_file: str | Path, images: str | Path, input_size: tuple[int, int], people: int, seed: int = 0
) -> np.ndarray:
    """Crops (N, 3, h, w) in [0, 1] of up to ``people`` people of a COCO keypoint file, drawn at random
    (``seed``) among those with a box and at least one labelled joint, cropped as inference crops them;
    ``input_size`` is (w, h)."""
    try:
        data = json.loads(Path(ann_file).read_text())
        files = {image["id"]: image["file_name"] for image in data["images"]}
        annotations = [
            a for a in data["annotations"]
            if not a.get("iscrowd") and a.get("num_keypoints", 1) > 0 and min(a["bbox"][2:4]) > 1
        ]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{ann_file} is not a readable COCO keypoint file: {exc}") from exc
    if not annotations:
        raise ExportError(f"{ann_file} holds no person with a box and a labelled joint to calibrate on")
    random.Random(seed).shuffle(annotations)
    chosen = annotations[:people]
    crops = []
    for image_id in dict.fromkeys(a["image_id"] for a in chosen):
        path = Path(images) / files[image_id]
        image = cv2.imread(str(path))
        if image is None:
            raise ExportError(f"cannot read image {path} (of {ann_file})")
        boxes = np.array([a["bbox"] for a in chosen if a["image_id"] == image_id], dtype=np.float64)
        crops.append(crop_batch(image, boxes, input_size)[0].numpy())
    return np.concatenate(crops)


class _Crops:
    """onnxruntime's calibration data reader: one crop a call, then None."""

    def __init__(self, name: str, crops: np.ndarray) -> None:
        self.feeds = iter([{name: crop[None]} for crop in crops])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _keypoints(model: OnnxPoseModel, crops: np.ndarray) -> torch.Tensor:
    return keypoints_from_logits(model(torch.from_numpy(crops)).heatmaps)[0]


def quantize_export(float_path: str | Path, path: str | Path, crops: np.ndarray) -> QuantizeReport:
    """Quantize the export at ``float_path`` (``export_onnx``'s file) into ``path``, calibrated on all but the
    last ``CHECK_PEOPLE`` of ``crops`` (fewer when there are few) and checked on those; the file is refused
    (deleted, ``ExportError``) if its median joint moves more than ``MAX_MEDIAN_KEYPOINT_SHIFT``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start = time.perf_counter()
    path = Path(path)
    check = min(CHECK_PEOPLE, len(crops) // 4)
    calibration, held_out = crops[: len(crops) - check], crops[len(crops) - check :]
    if check == 0:
        raise ExportError(f"{len(crops)} calibration people are too few: give at least 4")
    reference = OnnxPoseModel.load(float_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as work:
            prepared = Path(work) / "prepared.onnx"
            # The exporter's graph has symbolic batch shapes that onnxruntime's symbolic inference cannot
            # complete; ONNX's own shape inference is enough for the quantizer.
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            with _quiet_root_logger():  # the quantizer logs a line per 1-D weight it keeps per tensor
                quantize_static(
                    str(prepared), str(path), _Crops(INPUT_NAME, calibration),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                )  # fmt: skip
        info = {**reference.meta.info, "int8_calibration_people": len(calibration)}
        write_metadata(path, replace(reference.meta, precision="int8", info=info))
        quantized = OnnxPoseModel.load(path)
        shift = (_keypoints(quantized, held_out) - _keypoints(reference, held_out)).norm(dim=-1)
        median_shift, allowed = float(shift.median()), MAX_MEDIAN_KEYPOINT_SHIFT * held_out.shape[-2]
        if median_shift > allowed:
            raise ExportError(
                f"the int8 graph's joints move {median_shift:.2f} px from the float graph's at the median "
                f"(at most {allowed:.2f} allowed, {MAX_MEDIAN_KEYPOINT_SHIFT:.0%} of the crop's height)"
            )
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return QuantizeReport(
        path, path.stat().st_size / 1e6, len(calibration), check, median_shift, float(shift.quantile(0.95)),
        time.perf_counter() - start,
    )  # fmt: skip
