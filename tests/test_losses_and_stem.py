"""Loss masking, OKS, the inference decode, and the pose-trained stem's initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from poseapp.engine.losses import heatmap_cross_entropy, heatmap_mse, object_keypoint_similarity
from poseapp.models.stem import YoloStem
from poseapp.runtime.inference import keypoints_from_logits
from poseapp.runtime.transforms import INPUT_SIZE, encode_heatmaps, heatmap_size


def targets_for(xy: np.ndarray, input_size: tuple[int, int] = INPUT_SIZE) -> torch.Tensor:
    target, _ = encode_heatmaps(xy, np.ones(len(xy)), 2.0, heatmap_size(input_size), input_size)
    return torch.from_numpy(target)[None]


def test_cross_entropy_ignores_zero_weight_joints() -> None:
    target = targets_for(np.array([[50.0, 60.0], [100.0, 200.0], [20.0, 30.0]]))
    logits = torch.randn(1, 3, 64, 48)
    weight = torch.tensor([[1.0, 1.0, 0.0]])
    base = heatmap_cross_entropy(logits, target, weight)
    spoiled = logits.clone()
    spoiled[0, 2] = torch.randn(64, 48) * 50  # an unlabelled joint's prediction must not matter
    torch.testing.assert_close(heatmap_cross_entropy(spoiled, target, weight), base)
    spoiled[0, 1] = torch.randn(64, 48) * 50
    assert heatmap_cross_entropy(spoiled, target, weight) != base
    assert heatmap_mse(spoiled, target, weight) != heatmap_mse(logits, target, weight)
    assert heatmap_cross_entropy(logits, target, torch.zeros(1, 3)) == 0


def test_cross_entropy_is_lowest_at_the_target() -> None:
    target = targets_for(np.array([[70.0, 90.0]]))
    weight = torch.ones(1, 1)
    at_target = heatmap_cross_entropy(torch.log(target.clamp_min(1e-9)), target, weight)
    other = targets_for(np.array([[120.0, 40.0]]))
    elsewhere = heatmap_cross_entropy(torch.log(other.clamp_min(1e-9)), target, weight)
    assert at_target < elsewhere


@pytest.mark.parametrize("input_size", [INPUT_SIZE, (144, 192)])
def test_logits_decode_to_the_target_location_with_full_confidence(input_size) -> None:
    xy = np.array([[70.3, 90.6], [10.0, input_size[1] - 6.0]])
    target = targets_for(xy, input_size)
    assert target.shape[-2:] == (input_size[1] // 4, input_size[0] // 4)
    logits = torch.log((target / target.flatten(2).sum(-1)[..., None, None]).clamp_min(1e-12))
    coords, scores = keypoints_from_logits(logits)
    np.testing.assert_allclose(coords[0].numpy(), xy, atol=0.1)
    assert scores.min() > 0.9
    flat = keypoints_from_logits(torch.zeros(1, 2, 64, 48))[1]
    assert flat.max() < 0.01


def test_oks_is_one_when_exact_and_falls_with_distance() -> None:
    truth = torch.rand(2, 19, 2) * 100
    visible = torch.ones(2, 19)
    area = torch.full((2,), 5000.0)
    sigmas = torch.full((19,), 0.079)
    torch.testing.assert_close(object_keypoint_similarity(truth, truth, visible, area, sigmas), torch.ones(2))
    near = object_keypoint_similarity(truth + 2, truth, visible, area, sigmas)
    far = object_keypoint_similarity(truth + 10, truth, visible, area, sigmas)
    assert (far < near).all() and (near < 1).all()
    expected = math.exp(-8 / (2 * 5000 * (2 * 0.079) ** 2))
    torch.testing.assert_close(near, torch.full((2,), expected))


def test_stem_initialised_from_yolo_equals_the_teachers_layers(yolo_pose_weights) -> None:
    from ultralytics.nn.tasks import load_checkpoint

    stem = YoloStem(64)
    stem.init_from_yolo(yolo_pose_weights)
    stem.freeze_body()
    stem.train()
    teacher, _ = load_checkpoint(str(yolo_pose_weights), device="cpu")
    x = torch.rand(2, 3, 256, 192)
    with torch.no_grad():
        expected = x
        for layer in teacher.model[:7]:
            expected = layer(expected)
        torch.testing.assert_close(stem.features(x), expected, atol=1e-5, rtol=1e-5)
    assert expected.shape == (2, 128, 16, 12)
    assert not stem.body.training and not any(p.requires_grad for p in stem.body.parameters())
    assert stem(x).shape == (2, 16 * 12, 64)


def test_a_stem_released_with_its_statistics_kept_learns_but_leaves_batchnorm_alone() -> None:
    stem = YoloStem(16)
    stem.freeze_body(False, keep_statistics=True)
    stem.train()
    before = {k: v.clone() for k, v in stem.body.state_dict().items() if "running" in k}
    stem(torch.rand(2, 3, 64, 48) * 5).sum().backward()
    assert all(p.grad is not None for p in stem.body.parameters())
    assert all(torch.equal(v, stem.body.state_dict()[k]) for k, v in before.items())
    stem.freeze_body(False)
    stem.train()
    stem(torch.rand(2, 3, 64, 48) * 5)
    assert not all(torch.equal(v, stem.body.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("hw", [(256, 192), (192, 144)])
def test_neck_stem_gives_the_teachers_stride16_neck_output(yolo_pose_weights, hw) -> None:
    """``yolo_neck`` equals layer 19 of yolo11n-pose run by Ultralytics itself (its skip connections
    routed by its own forward); sides that are not multiples of 32 are padded and cut back to H/16 x W/16."""
    from ultralytics.nn.tasks import load_checkpoint

    stem = YoloStem(64, "yolo_neck")
    stem.init_from_yolo(yolo_pose_weights)
    stem.eval()
    teacher, _ = load_checkpoint(str(yolo_pose_weights), device="cpu")
    teacher = teacher.float().eval()
    captured = {}
    teacher.model[19].register_forward_hook(lambda _m, _i, out: captured.update(out=out))
    x = torch.rand(2, 3, *hw)
    padded = torch.nn.functional.pad(x, (0, -hw[1] % 32, 0, -hw[0] % 32))
    with torch.no_grad():
        teacher(padded)
        features = stem.features(x)
    expected = captured["out"][..., : hw[0] // 16, : hw[1] // 16]
    assert features.shape == (2, 128, hw[0] // 16, hw[1] // 16)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)
    assert stem(x).shape == (2, hw[0] // 16 * hw[1] // 16, 64)


def test_preparing_for_inference_keeps_the_output() -> None:
    from poseapp.models import create_model, prepare_for_inference

    model = create_model("evitpose_t", stem="yolo").eval()
    x = torch.rand(2, 3, 256, 192)
    with torch.no_grad():
        for bn in (m for m in model.head.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # as if trained
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        before = model(x, 0.7).heatmaps
        prepare_for_inference(model)
        after = model(x, 0.7).heatmaps
        after_channels_last = model(x.contiguous(memory_format=torch.channels_last), 0.7).heatmaps
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.head.up[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after_channels_last, before, atol=1e-4, rtol=1e-4)
