"""Choosing EMGPose's default threshold eta on validation people.

The quality predictor learns the OKS of the coarse result, so where eta falls in that distribution, and with
it the share of crops that get the fine stage, belongs to each checkpoint: eta 0.5 sends almost nothing to the
fine stage once the coarse poses score OKS 0.6-0.8. One pass at eta 1 gives both stages' poses and Q for every
person; any eta's result is then a choice per person, so the whole curve costs one pass.

The default is judged by mean OKS, the per-person score COCO's AP thresholds, not by PCK@0.2: on the corpus
hold-out, PCK@0.2 moved 0.006 where coco_dev AP lost 0.022 (`weights/emgpose_t.md`), because a joint within
0.2 torso lengths counts as found however imprecisely it is placed, and the fine stage's gain is precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data import PoseDataset
from ..models import EMGPose, load_model, save_model
from ..models.knob import Knob
from ..models.zoo import read_metadata
from ..runtime.flops import count_macs
from ..runtime.inference import image_keypoints
from ..runtime.predictor import TopDownPredictor
from .evaluate import mean_oks, pck, predict_batches

ETA_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
TOLERANCE = 0.005
"""Default eta: the cheapest whose mean OKS is within this of running the fine stage for everyone."""


@dataclass(frozen=True)
class EtaPoint:
    eta: float
    pck: float
    oks: float
    """Mean object keypoint similarity (``evaluate.mean_oks``)."""
    fine_share: float
    """Share of the people that go through the fine stage."""
    gflops: float
    """Mean 10^9 multiply-adds per person."""


def eta_curve(
    model: EMGPose,
    dataset: PoseDataset,
    etas: np.ndarray = ETA_GRID,
    batch: int = 32,
    device: str | torch.device | None = None,
) -> list[EtaPoint]:
    """PCK@0.2, fine-stage share and GFLOPs of ``model`` on ``dataset``'s people (eval crops) at each eta,
    on ``device`` (None: where the model's parameters are), in float32."""
    device = next(model.parameters()).device if device is None else device
    predictor = TopDownPredictor(model, device, "fp32")
    coarse, fine, quality, macs_coarse, macs_fine = [], [], [], [], []
    previous, model.coarse_for_all = model.coarse_for_all, True
    try:
        for posed in predict_batches(predictor, dataset, model.knob.high, batch):
            out = posed.output
            coarse.append(image_keypoints(out.coarse_heatmaps, posed.matrices)[0])
            fine.append(posed.keypoints)
            quality.append(out.quality.float().cpu().numpy())
            # What each stage costs at inference, where the coarse head runs only for the crops that stop.
            macs_fine.append(count_macs(model, replace(out, coarse_heatmaps=None)).cpu().numpy())
            coarse_only = replace(out, fine_stage=torch.zeros_like(out.fine_stage))
            macs_coarse.append(count_macs(model, coarse_only).cpu().numpy())
    finally:
        model.coarse_for_all = previous
    coarse_xy, fine_xy, q = np.concatenate(coarse), np.concatenate(fine), np.concatenate(quality)
    cost = np.stack([np.concatenate(macs_coarse), np.concatenate(macs_fine)]) / 1e9
    truth = np.stack([p.xy for p in dataset.people])
    visible = np.stack([p.visibility for p in dataset.people])
    boxes = np.stack([p.box_xywh for p in dataset.people])
    points = []
    for eta in etas:
        runs_fine = q <= eta  # as EMGPose.forward decides
        xy = np.where(runs_fine[:, None, None], fine_xy, coarse_xy)
        gflops = np.where(runs_fine, cost[1], cost[0]).mean()
        accuracy = pck(xy, truth, visible), mean_oks(xy, truth, visible, boxes)
        points.append(EtaPoint(float(eta), *accuracy, float(runs_fine.mean()), float(gflops)))
    return points


def choose_eta(points: list[EtaPoint], tolerance: float = TOLERANCE) -> EtaPoint:
    """The cheapest point whose mean OKS is within ``tolerance`` of the point with the largest eta."""
    full = max(points, key=lambda p: p.eta)
    good = [p for p in points if p.oks >= full.oks - tolerance]
    return min(good, key=lambda p: (p.gflops, p.eta))


def set_default_eta(model: EMGPose, eta: float) -> None:
    """Make ``eta`` the model's default (stored in its config, so ``save_model`` keeps it)."""
    model.knob = Knob(model.knob.name, model.knob.low, model.knob.high, float(eta))
    model.config = {**getattr(model, "config", {}), "eta": float(eta)}


def calibrate_checkpoint(
    path: str | Path, dataset: PoseDataset, device: torch.device | str = "cpu", out: str | Path | None = None
) -> tuple[EtaPoint, list[EtaPoint]]:
    """Choose the EMGPose checkpoint ``path``'s default eta on ``dataset``'s people and store it, with the
    whole curve in the file's metadata, in ``out`` (default: ``path`` itself). Returns (chosen, curve)."""
    model = load_model(path).to(device)
    if not isinstance(model, EMGPose):
        raise ValueError(f"{path}: {type(model).__name__} has no eta to calibrate (EMGPose only)")
    info = read_metadata(path)["info"]
    curve = eta_curve(model, dataset)
    chosen = choose_eta(curve)
    set_default_eta(model, chosen.eta)
    info = {**info, "eta_curve": [asdict(p) for p in curve], "default_eta": asdict(chosen)}
    save_model(model, out or path, **info)
    return chosen, curve


def curve_table(curve: list[EtaPoint], chosen: EtaPoint) -> str:
    """The curve as a text table, the chosen eta marked."""
    rows = ["   eta  PCK@0.2  mean OKS  fine stage  GFLOPs"]
    for p in curve:
        mark = "  <- default" if p.eta == chosen.eta else ""
        rows.append(f"{p.eta:6.2f}  {p.pck:7.3f}  {p.oks:8.3f}  {p.fine_share:10.0%}  {p.gflops:6.2f}{mark}")
    return "\n".join(rows)
