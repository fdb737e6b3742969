"""Accuracy: top-down predictions on a dataset's people, PCK, and COCO keypoint AP.

``evaluate`` runs anything with the ``results.PoseEstimator`` interface (a PoseApp model through
``ModelEstimator``, or a teacher from ``engine.teachers``) on a COCO keypoint file, with the ground-truth
boxes or with a person detector's, and scores it on the joints the dataset and the estimator share.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import Person, PoseDataset, load_people, read_bgr
from ..geometry import iou_matrix, keypoint_similarity, points_extent, xywh_to_xyxy, xyxy_to_xywh
from ..results import PosedPeople, PoseEstimator, Predictions
from ..runtime.inference import macs_per_crop
from ..runtime.predictor import TopDownOutput, TopDownPredictor
from ..skeleton import INDEX, JOINTS, NUM_JOINTS, SIGMAS, joint_mapping

AP_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR")
"""The first six of ``COCOeval.stats`` for keypoints, in that order."""
PCK_THRESHOLD = 0.2
MATCH_IOU = 0.5
"""With detected boxes, a ground-truth person is found by the prediction whose box overlaps it most, if
at least this much; PCK counts every joint of a person not found as wrong."""


Detector = Callable[[np.ndarray], Sequence[Any]]
"""``image_bgr -> [(box_xyxy, score), ...]``, or objects with ``.box`` and ``.score`` (``Detection``)."""


class ModelEstimator:
    """A PoseApp model as a ``PoseEstimator``: eval crops of the boxes, one batch per image.

    ``flip=True`` runs the flip test (``pose_logits``): twice the GFLOPs, counted as such."""

    joints = JOINTS

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        flip: bool = False,
    ) -> None:
        if model.num_joints != NUM_JOINTS:
            raise ValueError(f"model predicts {model.num_joints} joints, the skeleton has {NUM_JOINTS}")
        self.predictor = TopDownPredictor(model, device, precision)
        self.model, self.device, self.precision = model, self.predictor.device, self.predictor.precision
        self.flip = flip

    def predict(
        self, image_bgr: np.ndarray, boxes_xywh: np.ndarray, knob: float | None = None
    ) -> Predictions:
        if len(boxes_xywh) == 0:
            return Predictions.empty()
        posed = self.predictor(image_bgr, boxes_xywh, knob, self.flip)
        macs = macs_per_crop(self.model, posed.output, len(boxes_xywh))
        return Predictions(posed.keypoints, posed.scores, macs.cpu().numpy() / 1e9)


@dataclass
class EvalReport:
    ap: dict[str, float]
    """``AP_KEYS`` -> COCO keypoint value on the shared joints (NaN: nothing to score)."""
    pck: float
    """PCK@0.2 of the torso (left shoulder - right hip) over the shared joints; NaN without a torso."""
    gflops: float
    """Mean 10^9 multiply-adds per person posed (NaN for teachers)."""
    knob: float | None
    flip: bool
    """Whether the flip test ran (``ModelEstimator``)."""
    people: int
    """Ground-truth people scored."""
    joints: dict[str, JointError]
    """Per-joint PCK@0.2 and bias, over the joints the dataset and the model share."""
    results: list[dict] = field(repr=False)
    """COCO keypoint results, keypoints in the dataset's joint order."""

    def joint_table(self) -> str:
        """One line per joint: PCK@0.2, the mean signed offset in torso lengths over every prediction and
        over the hits alone (those within PCK@0.2)."""
        lines = [f"{'joint':<16}{'PCK@0.2':>8}{'dx':>8}{'dy':>8}{'hit dx':>8}{'hit dy':>8}{'labels':>8}"]
        for name, e in self.joints.items():
            offsets = "".join(f"{v:>+8.3f}" for v in (*e.bias, *e.hit_bias))
            lines.append(f"{name:<16}{e.pck:>8.3f}{offsets}{e.count:>8d}")
        return "\n".join(lines)

    def summary(self) -> str:
        ap = " ".join(f"{key} {self.ap[key]:.3f}" for key in AP_KEYS)
        knob = "" if self.knob is None else f" knob {self.knob:g}"
        flip = " flip test" if self.flip else ""
        cost = f"GFLOPs/person {self.gflops:.3f}{knob}{flip}"
        return f"{ap} PCK@0.2 {self.pck:.3f} {cost} ({self.people} people)"


def predict_batches(
    predictor: TopDownPredictor, dataset: PoseDataset, knob: float | None = None, batch: int = 32
) -> Iterator[TopDownOutput]:
    """The top-down step on the eval crops of ``dataset`` (made as ``runtime.inference.crop_batch`` makes
    them), ``batch`` people per model call, in the dataset's order."""
    for sample in DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0):
        yield predictor.pose_crops(sample.image, sample.matrix.numpy(), knob)


def predict_dataset(
    model: nn.Module,
    dataset: PoseDataset,
    knob: float | None = None,
    batch: int = 32,
    device: str | torch.device = "cpu",
) -> Predictions:
    """Run ``model`` (in float32) on every person crop of ``dataset`` (eval crops) and map keypoints to
    the image."""
    predictor = TopDownPredictor(model, device, "fp32")
    xy, scores, macs = [], [], []
    for posed in predict_batches(predictor, dataset, knob, batch):
        xy.append(posed.keypoints)
        scores.append(posed.scores)
        macs.append(macs_per_crop(model, posed.output, len(posed.keypoints)).cpu().numpy())
    return Predictions(np.concatenate(xy), np.concatenate(scores), np.concatenate(macs) / 1e9)


def _torso_offsets(pred: np.ndarray, truth: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pred - truth) / torso`` (N, J, 2), the torso being left shoulder to right hip, and the mask (N, J)
    of labelled joints of people whose torso is labelled."""
    ls, rh = INDEX["left_shoulder"], INDEX["right_hip"]
    has_torso = (visible[:, ls] > 0) & (visible[:, rh] > 0)
    torso = np.linalg.norm(truth[:, ls] - truth[:, rh], axis=-1)
    mask = (visible > 0) & has_torso[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (pred - truth) / torso[:, None, None], mask


def person_oks(
    pred: np.ndarray, truth: np.ndarray, visible: np.ndarray, boxes_xywh: np.ndarray
) -> np.ndarray:
    """COCO object keypoint similarity (N,) of each person of ``pred`` against ``truth`` (N, J, 2) over their
    labelled joints (``visible`` (N, J)), the box area standing in for the segment area; NaN for a person
    with no labelled joint."""
    area = np.maximum(boxes_xywh[:, 2] * boxes_xywh[:, 3], 1.0)[:, None]
    similarity = keypoint_similarity(pred, truth, area, SIGMAS[: pred.shape[1]])
    labelled = visible > 0
    count = labelled.sum(axis=1)
    with np.errstate(invalid="ignore"):
        similarity = np.where(labelled, np.nan_to_num(similarity, nan=0.0), 0.0)
    return np.where(count > 0, similarity.sum(axis=1) / np.maximum(count, 1), np.nan)


def mean_oks(pred: np.ndarray, truth: np.ndarray, visible: np.ndarray, boxes_xywh: np.ndarray) -> float:
    """Mean ``person_oks``: the per-person score whose thresholds COCO's AP averages over, so it moves where
    AP does and PCK@0.2 does not (a joint within 0.2 torso lengths can still be imprecise). People with no
    labelled joint are left out."""
    return float(np.nanmean(person_oks(pred, truth, visible, boxes_xywh)))


def pck(pred: np.ndarray, truth: np.ndarray, visible: np.ndarray, threshold: float = PCK_THRESHOLD) -> float:
    """PCK@threshold of the torso size (left shoulder to right hip), over labelled joints of people whose
    torso is labelled. pred, truth: (N, J, 2); visible: (N, J). A NaN prediction counts as wrong."""
    offsets, mask = _torso_offsets(pred, truth, visible)
    if not mask.any():
        return float("nan")
    return float((np.linalg.norm(offsets, axis=-1) <= threshold)[mask].mean())


@dataclass(frozen=True)
class JointError:
    """How one joint is predicted, in torso lengths (see ``pck``)."""

    pck: float
    """PCK@0.2 of this joint alone."""
    bias: tuple[float, float]
    """Mean signed (dx, dy) of prediction minus truth over every prediction (image y points down). Gross
    misses weigh in it by their size, so a joint missed more often on one side shows an offset here too."""
    hit_bias: tuple[float, float]
    """The same over the hits (predictions within PCK@0.2) alone: a systematic offset where the joint was
    found, e.g. another dataset's convention for where the joint is."""
    count: int


def _mean_offset(offsets: np.ndarray) -> tuple[float, float]:
    return tuple(float(v) for v in offsets.mean(axis=0)) if len(offsets) else (float("nan"),) * 2


def joint_errors(pred: np.ndarray, truth: np.ndarray, visible: np.ndarray) -> dict[str, JointError]:
    """``JointError`` of every joint with at least one scored label, by name. A NaN prediction counts as
    wrong for the PCK and is left out of the bias."""
    offsets, mask = _torso_offsets(pred, truth, visible)
    errors = {}
    for j, name in enumerate(JOINTS):
        scored = offsets[mask[:, j], j]
        if len(scored) == 0:
            continue
        hit = np.linalg.norm(scored, axis=-1) <= PCK_THRESHOLD
        found = scored[np.isfinite(scored).all(axis=1)]
        bias, hit_bias = _mean_offset(found), _mean_offset(scored[hit])
        errors[name] = JointError(float(hit.mean()), bias, hit_bias, len(scored))
    return errors


def pck_on_people(
    model: nn.Module, dataset: PoseDataset, knob: float | None = None, device: str | torch.device = "cpu"
) -> float:
    """PCK@0.2 of ``model`` on the people of an eval-mode dataset."""
    preds = predict_dataset(model, dataset, knob, device=device)
    truth = np.stack([p.xy for p in dataset.people])
    visible = np.stack([p.visibility for p in dataset.people])
    return pck(preds.xy, truth, visible)


def _read_coco(ann_file: str | PathLike[str]) -> tuple[dict, dict, list[str]]:
    """The file's data, its person category (the first) and that category's joint names."""
    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    category = (data.get("categories") or [{}])[0]
    names = category.get("keypoints")
    if not names:
        raise ValueError(f"{ann_file}: categories[0]['keypoints'] (the joint names) is missing or empty")
    return data, category, list(names)


def shared_joints(
    names: Sequence[str], model_joints: Collection[str] = JOINTS
) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, unified)``: which of a dataset's joints (``names``, its order) are scored, and their
    indices in ``JOINTS``: those the unified skeleton knows (so they have an OKS sigma) and the model has."""
    unified = joint_mapping(names)
    positions = np.array(
        [i for i, u in enumerate(unified) if u >= 0 and JOINTS[u] in model_joints], dtype=np.int64
    )
    return positions, unified[positions]


def _coco(images: list[dict], category_id: int, annotations: list[dict]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "categories": [{"id": category_id}], "annotations": annotations}
    with redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _shared_truth(
    ann: dict, number: int, category_id: int, positions: np.ndarray, names: Sequence[str]
) -> dict:
    """A ground-truth annotation cut down to the shared joints. Ids are renumbered from 1 (COCOeval reads
    id 0 as "unmatched"); a missing bbox or area is taken from the labelled joints or the box."""
    keypoints = np.asarray(ann.get("keypoints") or np.zeros(3 * len(names)), dtype=np.float64)
    keypoints = keypoints.reshape(len(names), 3)[positions]
    labelled = keypoints[keypoints[:, 2] > 0, :2]
    box = ann.get("bbox") or points_extent(labelled).tolist()
    return {
        "id": number,
        "image_id": ann["image_id"],
        "category_id": category_id,
        "iscrowd": int(ann.get("iscrowd", 0)),
        "keypoints": keypoints.ravel().tolist(),
        "num_keypoints": len(labelled),
        "bbox": box,
        "area": float(ann.get("area") or box[2] * box[3]),
    }


def _shared_result(result: dict, number: int, positions: np.ndarray, joints: int) -> dict:
    keypoints = np.asarray(result["keypoints"], dtype=np.float64).reshape(joints, 3)[positions]
    box = points_extent(keypoints[:, :2]).tolist()  # as COCO.loadRes does for keypoint results
    return {
        "id": number,
        "image_id": result["image_id"],
        "category_id": result["category_id"],
        "keypoints": keypoints.ravel().tolist(),
        "score": float(result["score"]),
        "bbox": box,
        "area": box[2] * box[3],
    }


def coco_keypoint_ap(
    ann_file: str | PathLike[str], results: list[dict], model_joints: Collection[str] = JOINTS
) -> dict[str, float]:
    """COCO keypoint AP/AP50/AP75/APm/APl/AR (pycocotools) of ``results`` on the joints of ``ann_file``
    that the model predicts (``model_joints``, unified names), each with its ``skeleton.SIGMAS`` value.

    ``results`` are COCO keypoint results in the file's joint order. Only the file's first category
    is scored. Without people or shared joints to score, every value is NaN (with a warning).
    """
    from pycocotools.cocoeval import COCOeval

    data, category, names = _read_coco(ann_file)
    category_id = category.get("id", 1)
    positions, unified = shared_joints(names, model_joints)
    truth = [
        _shared_truth(ann, number, category_id, positions, names)
        for number, ann in enumerate(
            (a for a in data["annotations"] if a.get("category_id", category_id) == category_id), start=1
        )
    ]
    if len(positions) == 0 or not any(t["num_keypoints"] and not t["iscrowd"] for t in truth):
        warnings.warn(f"{ann_file}: no labelled people on joints the model shares; AP is NaN", stacklevel=2)
        return dict.fromkeys(AP_KEYS, float("nan"))
    image_ids = {image["id"] for image in data["images"]}
    unknown = {r["image_id"] for r in results} - image_ids
    if unknown:
        raise ValueError(f"results refer to images not in {ann_file}: {sorted(unknown)[:5]}")

    images = [{"id": image_id} for image_id in sorted(image_ids)]
    gt = _coco(images, category_id, truth)
    dt = _coco(
        images, category_id, [_shared_result(r, i, positions, len(names)) for i, r in enumerate(results, 1)]
    )
    coco_eval = COCOeval(gt, dt, iouType="keypoints")
    coco_eval.params.kpt_oks_sigmas = SIGMAS[unified]
    with redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {
        key: (float(v) if v >= 0 else float("nan"))
        for key, v in zip(AP_KEYS, coco_eval.stats[: len(AP_KEYS)], strict=True)
    }


def to_results(
    image_id: int,
    category_id: int,
    pose: Predictions,
    box_scores: np.ndarray,
    names: Sequence[str],
    model_joints: Collection[str] = JOINTS,
) -> list[dict]:
    """COCO keypoint results in the dataset's joint order (``names``); joints the model lacks are 0, 0, 0.
    The score is the box score times the mean score of the shared joints."""
    positions, unified = shared_joints(names, model_joints)
    results = []
    for xy, scores, box_score in zip(pose.xy, pose.scores, box_scores, strict=True):
        keypoints = np.zeros((len(names), 3))
        keypoints[positions] = np.column_stack([xy[unified], scores[unified]])
        joint_score = scores[unified].mean() if len(unified) else 0.0
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "keypoints": keypoints.ravel().tolist(),
                "score": float(box_score * joint_score),
            }
        )
    return results


@dataclass
class _Posed:
    """The people posed in one image."""

    image_id: int
    boxes_xywh: np.ndarray
    box_scores: np.ndarray
    pose: Predictions


def _detected(detector: Detector, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes_xywh, scores)`` of a detector's answer."""
    pairs = [(d.box, d.score) if hasattr(d, "box") else d for d in detector(image_bgr)]
    boxes = xyxy_to_xywh(np.array([box for box, _ in pairs], dtype=np.float64).reshape(-1, 4))
    return boxes, np.array([score for _, score in pairs], dtype=np.float64)


def _pose_image(
    estimator: PoseEstimator,
    image_bgr: np.ndarray,
    image_id: int,
    knob: float | None,
    truth_boxes: np.ndarray | None,
    detector: Detector | None,
) -> _Posed:
    if truth_boxes is not None:
        boxes, scores = truth_boxes, np.ones(len(truth_boxes))
    elif detector is not None:
        boxes, scores = _detected(detector, image_bgr)
    else:
        found: PosedPeople = estimator.detect_people(image_bgr)
        return _Posed(image_id, xyxy_to_xywh(found.boxes), found.box_scores, found.pose)
    return _Posed(image_id, boxes, scores, estimator.predict(image_bgr, boxes, knob))


def _matched_xy(people: list[Person], posed: dict[int, _Posed]) -> np.ndarray:
    """(N, J, 2) the pose of the prediction whose box overlaps each person's most (NaN if none does by
    ``MATCH_IOU``). With ground-truth boxes every person matches its own box."""
    xy = np.full((len(people), NUM_JOINTS, 2), np.nan)
    for i, person in enumerate(people):
        found = posed.get(person.image_id)
        if found is None or len(found.boxes_xywh) == 0:
            continue
        iou = iou_matrix(xywh_to_xyxy(person.box_xywh[None]), xywh_to_xyxy(found.boxes_xywh))[0]
        if iou.max() >= MATCH_IOU:
            xy[i] = found.pose.xy[iou.argmax()]
    return xy


def evaluate(
    estimator: nn.Module | PoseEstimator,
    ann_file: str | PathLike[str],
    image_dir: str | PathLike[str],
    knob: float | None = None,
    boxes: Literal["gt", "detect"] = "gt",
    detector: Detector | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    flip: bool = False,
) -> EvalReport:
    """Pose the people of a COCO keypoint file and score them (see ``EvalReport``).

    ``boxes="gt"``: top-down on every labelled person's box (``load_people``). ``boxes="detect"``: on
    every image, top-down on ``detector``'s boxes, or, without a detector, the estimator's own end-to-end
    ``detect_people``. A PoseApp model (``nn.Module``) runs through ``ModelEstimator`` on ``device``, in
    ``precision``, with the flip test if ``flip``.
    """
    if boxes not in ("gt", "detect"):
        raise ValueError(f"boxes must be 'gt' or 'detect', got {boxes!r}")
    if flip and not isinstance(estimator, nn.Module):
        raise ValueError("the flip test is for PoseApp models; this estimator is not one")
    knob_used = None
    if isinstance(estimator, nn.Module):
        estimator = ModelEstimator(estimator, device, precision, flip)
        knob_used = estimator.model.knob.clamp(knob)
    if boxes == "detect" and detector is None and not hasattr(estimator, "detect_people"):
        raise ValueError("boxes='detect' needs a detector: this estimator does not find people itself")
    data, category, names = _read_coco(ann_file)
    category_id = category.get("id", 1)
    people = load_people(ann_file, image_dir)
    by_image: dict[int, list[Person]] = {}
    for person in people:
        by_image.setdefault(person.image_id, []).append(person)
    files = {image["id"]: image["file_name"] for image in data["images"]}
    image_ids = sorted(by_image) if boxes == "gt" else sorted(files)

    posed: dict[int, _Posed] = {}
    for image_id in image_ids:
        image = read_bgr(str(Path(image_dir) / files[image_id]))
        truth = np.stack([p.box_xywh for p in by_image[image_id]]) if boxes == "gt" else None
        posed[image_id] = _pose_image(estimator, image, image_id, knob, truth, detector)

    results = [
        result
        for p in posed.values()
        for result in to_results(p.image_id, category_id, p.pose, p.box_scores, names, estimator.joints)
    ]
    model_mask = np.isin(np.array(JOINTS), estimator.joints)
    visible = np.array([p.visibility for p in people]).reshape(-1, NUM_JOINTS) * model_mask
    truth_xy = np.array([p.xy for p in people]).reshape(-1, NUM_JOINTS, 2)
    gflops = np.concatenate([p.pose.gflops for p in posed.values()] + [np.zeros(0)])
    matched_xy = _matched_xy(people, posed)
    return EvalReport(
        ap=coco_keypoint_ap(ann_file, results, estimator.joints),
        pck=pck(matched_xy, truth_xy, visible),
        gflops=float(gflops.mean()) if len(gflops) else float("nan"),
        knob=knob_used,
        flip=flip,
        people=len(people),
        joints=joint_errors(matched_xy, truth_xy, visible),
        results=results,
    )
