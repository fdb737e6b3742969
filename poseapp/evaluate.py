"""Accuracy: top-down predictions on a dataset's people, PCK, and COCO keypoint AP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .data import PoseDataset
from .flops import count_macs
from .inference import keypoints_from_logits
from .skeleton import INDEX
from .transforms import heatmaps_to_image


@dataclass
class Predictions:
    xy: np.ndarray
    """(N, J, 2) image pixels."""
    scores: np.ndarray
    """(N, J) in [0, 1]."""
    gflops: np.ndarray
    """(N,) 10^9 multiply-adds spent on each person."""


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: PoseDataset,
    knob: float | None = None,
    batch: int = 32,
    device: str | torch.device = "cpu",
) -> Predictions:
    """Run ``model`` on every person crop of ``dataset`` (eval crops) and map keypoints to the image."""
    model = model.to(device).eval()
    xy, scores, macs = [], [], []
    for sample in DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0):
        out = model(sample.image.to(device), knob)
        coords, score = keypoints_from_logits(out.heatmaps)
        xy.append(heatmaps_to_image(coords.cpu().double(), sample.matrix.numpy()).numpy())
        scores.append(score.cpu().numpy())
        macs.append(count_macs(model, out).cpu().numpy())
    return Predictions(np.concatenate(xy), np.concatenate(scores), np.concatenate(macs) / 1e9)


def pck(pred: np.ndarray, truth: np.ndarray, visible: np.ndarray, threshold: float = 0.2) -> float:
    """PCK@threshold of the torso size (left shoulder to right hip), over labelled joints of people whose
    torso is labelled. pred, truth: (N, J, 2); visible: (N, J)."""
    ls, rh = INDEX["left_shoulder"], INDEX["right_hip"]
    has_torso = (visible[:, ls] > 0) & (visible[:, rh] > 0)
    torso = np.linalg.norm(truth[:, ls] - truth[:, rh], axis=-1)
    mask = (visible > 0) & has_torso[:, None]
    if not mask.any():
        return float("nan")
    dist = np.linalg.norm(pred - truth, axis=-1)
    correct = dist <= threshold * torso[:, None]
    return float(correct[mask].mean())


def pck_on_people(
    model: nn.Module, dataset: PoseDataset, knob: float | None = None, device: str | torch.device = "cpu"
) -> float:
    """PCK@0.2 of ``model`` on the people of an eval-mode dataset."""
    preds = predict_dataset(model, dataset, knob, device=device)
    truth = np.stack([p.xy for p in dataset.people])
    visible = np.stack([p.visibility for p in dataset.people])
    return pck(preds.xy, truth, visible)
