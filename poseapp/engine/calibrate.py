"""Choosing EMGPose's default threshold eta on validation people.

The quality predictor learns the OKS of the coarse result, so where eta falls in that distribution, and with
it the share of crops that get the fine stage, belongs to each checkpoint: eta 0.5 sends almost nothing to the
fine stage once the coarse poses score OKS 0.6-0.8. One pass at eta 1 gives both stages' poses and Q for every
person; any eta's result is then a choice per person, so the whole curve costs one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data import PoseDataset
from ..models import EMGPose
from ..models.knob import Knob
from ..runtime.flops import count_macs
from ..runtime.inference import image_keypoints
from ..runtime.predictor import TopDownPredictor
from .evaluate import pck, predict_batches

ETA_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
TOLERANCE = 0.01
"""Default eta: the cheapest whose PCK@0.2 is within this of running the fine stage for everyone."""


@dataclass(frozen=True)
class EtaPoint:
    eta: float
    pck: float
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
    points = []
    for eta in etas:
        runs_fine = q <= eta  # as EMGPose.forward decides
        xy = np.where(runs_fine[:, None, None], fine_xy, coarse_xy)
        gflops = np.where(runs_fine, cost[1], cost[0]).mean()
        points.append(EtaPoint(float(eta), pck(xy, truth, visible), float(runs_fine.mean()), float(gflops)))
    return points


def choose_eta(points: list[EtaPoint], tolerance: float = TOLERANCE) -> EtaPoint:
    """The cheapest point whose PCK is within ``tolerance`` of the point with the largest eta."""
    full = max(points, key=lambda p: p.eta)
    good = [p for p in points if p.pck >= full.pck - tolerance]
    return min(good, key=lambda p: (p.gflops, p.eta))


def set_default_eta(model: EMGPose, eta: float) -> None:
    """Make ``eta`` the model's default (stored in its config, so ``save_model`` keeps it)."""
    model.knob = Knob(model.knob.name, model.knob.low, model.knob.high, float(eta))
    model.config = {**getattr(model, "config", {}), "eta": float(eta)}
