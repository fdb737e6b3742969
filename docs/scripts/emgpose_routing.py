"""Can any routing of EMGPose's crops pay? (the routing table of weights/emgpose_t.md)

Per person of the corpus hold-out (the last 500 people of human-dataset, as ``train --holdout 500`` and
``calibrate --last 500`` take them), the coarse and the fine stage's OKS from one pass at eta 1; then the mean
OKS when a share of the people run the fine stage, chosen by the quality predictor (lowest Q first, as EMGPose
routes), by the coarse heatmaps' mean peak over the 17 COCO joints (least confident first), by the true coarse
OKS (lowest first) or by an oracle that knows each person's gain.

    python docs/scripts/emgpose_routing.py weights/emgpose_t.safetensors
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.stats import spearmanr

from poseapp.data import PoseDataset, load_people, split_people
from poseapp.engine.evaluate import person_oks, predict_batches
from poseapp.models import load_model
from poseapp.runtime.inference import image_keypoints
from poseapp.runtime.predictor import TopDownPredictor

SHARES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def main(weights: str) -> None:
    model = load_model(weights)
    people = split_people(load_people("runs/corpus/human-dataset.json", "runs/data/human-dataset"), 500)[1]
    dataset = PoseDataset(people, train=False, input_size=model.input_size)
    model.coarse_for_all = True
    coarse, fine, quality, confidence = [], [], [], []
    for posed in predict_batches(TopDownPredictor(model, "cpu", "fp32"), dataset, model.knob.high, 32):
        coarse_xy, coarse_scores = image_keypoints(posed.output.coarse_heatmaps, posed.matrices)
        coarse.append(coarse_xy)
        confidence.append(np.asarray(coarse_scores)[:, :17].mean(axis=1))
        fine.append(posed.keypoints)
        quality.append(posed.output.quality.float().numpy())
    truth = np.stack([p.xy for p in people]), np.stack([p.visibility for p in people])
    boxes = np.stack([p.box_xywh for p in people])
    oks_coarse = person_oks(np.concatenate(coarse), *truth, boxes)
    oks_fine = person_oks(np.concatenate(fine), *truth, boxes)
    labelled = ~np.isnan(oks_coarse)
    oks_coarse, oks_fine, q = oks_coarse[labelled], oks_fine[labelled], np.concatenate(quality)[labelled]
    sure = np.concatenate(confidence)[labelled]
    gain = oks_fine - oks_coarse
    print(
        f"{labelled.sum()} people: mean OKS coarse {oks_coarse.mean():.3f}, fine {oks_fine.mean():.3f}; "
        f"the fine stage better for {(gain > 0).mean():.0%}"
    )
    rank = {
        name: spearmanr(a, b)[0]
        for name, (a, b) in {
            "Q / coarse OKS": (q, oks_coarse),
            "Q / gain": (q, gain),
            "coarse confidence / gain": (sure, gain),
        }.items()
    }
    print(
        "Spearman: " + ", ".join(f"{name} {r:.2f}" for name, r in rank.items()) + ", "
        f"coarse OKS / gain {spearmanr(oks_coarse, gain)[0]:.2f}"
    )
    print(
        "fine share | lowest Q first | lowest coarse confidence first | lowest coarse OKS first | "
        "largest gain first (oracle)"
    )
    for share in SHARES:
        rows = []
        for order in (np.argsort(q), np.argsort(sure), np.argsort(oks_coarse), np.argsort(-gain)):
            fine_stage = np.zeros(len(gain), bool)
            fine_stage[order[: round(share * len(gain))]] = True
            rows.append(np.where(fine_stage, oks_fine, oks_coarse).mean())
        print(f"{share:10.0%} | " + " | ".join(f"{r:.3f}" for r in rows))


if __name__ == "__main__":
    main(sys.argv[1])
