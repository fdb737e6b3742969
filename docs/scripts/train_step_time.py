"""Seconds a training step of each model takes on this machine: forward and backward of one batch, the
yolo11n-pose stem frozen as training keeps it, in the precision ``train`` picks (``--precision auto``: bf16
autocast where the CPU has native bf16, else fp32), best of ``--repeats`` after a warm-up step.

    python docs/scripts/train_step_time.py unitranspose_t:yolo_pyramid evitpose_t:yolo_neck --threads 1

The cards' equal-hours comparisons turn steps of one model into steps of another with these ratios. A
model with a knob runs at keep 1.0 / eta 1.0 (its most expensive setting; training samples the knob).
"""

from __future__ import annotations

import argparse
import time

import torch

from poseapp.models import create_model
from poseapp.models.stem import YoloStem
from poseapp.runtime.precision import PRECISIONS, autocast, resolve_precision


def step_seconds(
    name: str, stem: str, batch: int, hw: tuple[int, int], repeats: int, precision: str
) -> float:
    model = create_model(name, stem=stem).train()
    if isinstance(model.patch_embed, YoloStem):
        model.patch_embed.freeze_body(True)
    x = torch.rand(batch, 3, *hw)
    knob = None if model.knob.name == "none" else 1.0
    best = float("inf")
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast(precision, x.device):
            loss = model(x, knob).heatmaps.float().square().mean()
        loss.backward()
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model:stem, e.g. evitpose_t:yolo_neck")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--input-size", default="256x192", help="HxW")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    hw = tuple(int(v) for v in args.input_size.split("x"))
    for spec in args.models:
        name, _, stem = spec.partition(":")
        seconds = step_seconds(name, stem or "patch", args.batch, hw, args.repeats, precision)
        print(
            f"{spec}: {seconds:.2f} s a step of {args.batch} at {args.input_size}, "
            f"{precision}, threads {args.threads}"
        )


if __name__ == "__main__":
    main()
