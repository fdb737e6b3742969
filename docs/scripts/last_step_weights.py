"""The weights of a training run's last step as a PoseApp checkpoint.

``train`` keeps ``best.safetensors`` at the epoch with the best hold-out PCK, which in a run annealed with
``--steps`` may be an earlier epoch than the last; the last step's weights are in ``last.pt`` (what
``--resume`` reads). This writes them with the run's configuration and its last validation line as the
checkpoint's info.

    PYTHONPATH=. python docs/scripts/last_step_weights.py runs/evit192_latstem runs/evit192_latstem.log \
        runs/evit192_latstem/last_step.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from poseapp.models.zoo import load_model, read_metadata, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's --out folder (best.safetensors and last.pt)")
    parser.add_argument("log", type=Path, help="the run's printed log, whose last validation line is kept")
    parser.add_argument("out", type=Path, help="the checkpoint to write")
    args = parser.parse_args()
    model = load_model(args.run / "best.safetensors")  # the run's architecture and configuration
    state = torch.load(args.run / "last.pt", weights_only=False, map_location="cpu")
    model.load_state_dict(state["model"], strict=True)
    lines = args.log.read_text().replace("\r", "\n").splitlines()
    last = [json.loads(line) for line in lines if line.startswith('{"epoch"')][-1]
    save_model(model, args.out, config=read_metadata(args.run / "best.safetensors")["info"]["config"], **last)
    print(f"wrote {args.out}: step {last['step']}, hold-out PCK@0.2 {last['val_pck@0.2']:.4f}")


if __name__ == "__main__":
    main()
