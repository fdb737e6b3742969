"""The MAC counter against torch's own FlopCounterMode on the explicit-attention path."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from poseapp.models import create_model
from poseapp.models.vit import explicit_attention
from poseapp.runtime.flops import count_macs
from poseapp.runtime.precision import autocast, bf16_weights


def counted(model: torch.nn.Module, x: torch.Tensor, knob: float | None) -> tuple[float, float]:
    with torch.no_grad(), explicit_attention():
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(x, knob)
    return float(count_macs(model, out).sum()), counter.get_total_flops() / 2


@pytest.mark.parametrize(
    ("name", "knobs", "config"),
    [
        ("vitpose_t", [None], {}),
        ("evitpose_t", [1.0, 0.7, 0.5, 0.25], {}),
        ("evitpose_t", [1.0, 0.5], {"stem": "yolo"}),
        ("evitpose_t", [1.0, 0.5], {"head": "tokens"}),
        ("evitpose_t", [1.0, 0.5], {"stem": "yolo_neck", "head_lateral": True}),
        ("vitpose_t", [None], {"stem": "yolo", "head_lateral": True}),
        ("emgpose_t", [0.0, 1.0], {}),
        ("emgpose_t", [0.0, 1.0], {"head": "tokens"}),
        ("emgpose_t", [0.0, 1.0], {"stem": "yolo"}),
    ],
)
def test_counter_matches_torch(name: str, knobs: list[float | None], config: dict) -> None:
    model = create_model(name, **config).eval()
    x = torch.randn(2, 3, 256, 192)
    for knob in knobs:
        mine, reference = counted(model, x, knob)
        print(f"{name} knob={knob}: {mine / 2e9:.3f} GMACs/crop (torch {reference / 2e9:.3f})")
        assert abs(mine - reference) <= 0.03 * reference


@pytest.mark.parametrize("coarse_for_all", [False, True])
def test_emgpose_mixed_batch_counts_only_what_ran(coarse_for_all: bool) -> None:
    """The coarse head runs for the crops that stop at the coarse stage, or for every crop when asked."""
    model = create_model("emgpose_t").eval()
    model.coarse_for_all = coarse_for_all
    x = torch.randn(4, 3, 256, 192)
    with torch.no_grad():
        quality = model(x, 0.0).quality
    mine, reference = counted(model, x, quality.median().item())
    assert abs(mine - reference) <= 0.03 * reference
    coarse, _ = counted(model, x, 0.0)
    full, _ = counted(model, x, 1.0)
    assert coarse < mine < full


def test_vitpose_s_matches_the_papers_figure() -> None:
    model = create_model("vitpose_s", num_joints=17).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 192))
    gmacs = count_macs(model, out).item() / 1e9
    print(f"ViTPose-S: {gmacs:.2f} GFLOPs (paper: 5.7)")
    assert abs(gmacs - 5.7) / 5.7 < 0.03


def test_evitpose_s_half_keep_saves_30_to_44_percent() -> None:
    """The paper's setting: the joint-token head, whose cost does not hide the pruning."""
    model = create_model("evitpose_s", head="tokens").eval()
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        full = count_macs(model, model(x, 1.0)).item()
        half = count_macs(model, model(x, 0.5)).item()
    saving = 1 - half / full
    print(f"EViTPose-S: {full / 1e9:.2f} -> {half / 1e9:.2f} GFLOPs at keep 0.5 ({saving:.1%} less)")
    assert 0.30 <= saving <= 0.44


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("unitranspose_t", {"stem": "yolo_pyramid"}),
        ("unitranspose_t", {"stem": "yolo"}),
        ("evitpose_t", {"stem": "yolo_neck"}),
    ],
)
def test_a_copy_with_bf16_weights_counts_as_its_model(name: str, config: dict) -> None:
    """The pipeline runs ``bf16_weights`` copies, whose float32 norms and embeddings sit beside bfloat16
    convolutions: the counter's dry run of them runs as inference does, and counts the same."""
    model = create_model(name, **config).eval()
    low = bf16_weights(model)
    x = torch.rand(1, 3, 256, 192)
    with torch.no_grad():
        reference = float(count_macs(model, model(x, 1.0 if name == "evitpose_t" else None)).sum())
        with autocast("bf16", x.device):
            out = low(x, 1.0 if name == "evitpose_t" else None)
    assert float(count_macs(low, out).sum()) == reference
