"""Crop geometry and heatmap encode/decode: exact conventions, round trips and flip alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poseapp.geometry import invert_matrix, transform_points
from poseapp.models import EViTPose
from poseapp.models.vit import ViTSize
from poseapp.runtime.flops import count_macs
from poseapp.runtime.inference import crop_batch, macs_per_crop, pose_logits
from poseapp.runtime.transforms import (
    HEATMAP_SIZE,
    INPUT_SIZE,
    box_to_center_scale,
    crop_image,
    crop_matrix,
    decode_heatmaps,
    encode_heatmaps,
    flip_heatmaps,
    heatmaps_to_image,
)
from poseapp.skeleton import FLIP_INDEX, NUM_JOINTS

IN_W, IN_H = INPUT_SIZE
HM_W, HM_H = HEATMAP_SIZE


@pytest.mark.parametrize("box", [(10.0, 20.0, 100.0, 50.0), (5.0, 7.0, 30.0, 200.0), (0.0, 0.0, 75.0, 100.0)])
def test_box_to_center_scale_keeps_aspect_and_padding(box):
    center, size = box_to_center_scale(box)
    x, y, w, h = box
    np.testing.assert_allclose(center, [x + w / 2, y + h / 2])
    assert size[0] / size[1] == pytest.approx(192 / 256)
    # Never shrunk: both sides at least the padded box, and one side exactly the padded box.
    assert size[0] >= 1.25 * w - 1e-9 and size[1] >= 1.25 * h - 1e-9
    assert np.isclose(size[0], 1.25 * w) or np.isclose(size[1], 1.25 * h)

    batch_center, batch_size = box_to_center_scale(np.array([box, box]), aspect=1.0, padding=1.0)
    np.testing.assert_allclose(batch_center, [center, center])
    np.testing.assert_allclose(batch_size, [[max(w, h)] * 2] * 2)


def test_crop_matrix_maps_box_corners_to_crop_corners():
    # A box with the model's aspect and no padding fills the crop: its outer edges land on the crop's
    # outer pixel edges (-0.5 and size - 0.5), its centre on the crop's centre.
    center, size = box_to_center_scale((30.0, 40.0, 96.0, 128.0), padding=1.0)
    m = crop_matrix(center, size)
    assert m.shape == (2, 3) and m.dtype == np.float64
    corners = np.array([[30.0, 40.0], [126.0, 168.0], [126.0, 40.0], [78.0, 104.0]])
    expected = [[-0.5, -0.5], [IN_W - 0.5, IN_H - 0.5], [IN_W - 0.5, -0.5], [(IN_W - 1) / 2, (IN_H - 1) / 2]]
    np.testing.assert_allclose(transform_points(corners, m), expected, atol=1e-9)

    # With the default padding the box occupies the central 1 / 1.25 of the crop.
    m = crop_matrix(*box_to_center_scale((30.0, 40.0, 96.0, 128.0)))
    half = np.array([IN_W, IN_H]) / 2 / 1.25
    mid = (np.array([IN_W, IN_H]) - 1) / 2
    np.testing.assert_allclose(transform_points(corners[:2], m), [mid - half, mid + half], atol=1e-9)


def test_crop_matrix_rotation_90_degrees():
    # Window turned 90 degrees counter-clockwise in the image: its "up" axis points to the image's left, so
    # what lies right of the centre in the image appears below the centre in the crop, and above -> right.
    m = crop_matrix((100.0, 50.0), (IN_W, IN_H), rotation_deg=90.0)
    mid = np.array([(IN_W - 1) / 2, (IN_H - 1) / 2])
    points = np.array([[150.0, 50.0], [100.0, 20.0], [100.0, 50.0]])
    expected = [mid + [0.0, 50.0], mid + [30.0, 0.0], mid]
    np.testing.assert_allclose(transform_points(points, m), expected, atol=1e-9)


def test_invert_matrix_round_trips():
    rng = np.random.default_rng(1)
    matrices = np.stack(
        [
            crop_matrix(rng.uniform(0, 500, 2), rng.uniform(50, 400, 2), rng.uniform(-180, 180))
            for _ in range(4)
        ]
    )
    points = rng.uniform(-100, 600, (10, 2))
    for m, inv in zip(matrices, invert_matrix(matrices), strict=True):
        np.testing.assert_allclose(transform_points(transform_points(points, m), inv), points, atol=1e-9)
        np.testing.assert_allclose(invert_matrix(inv), m, atol=1e-9)
        np.testing.assert_allclose(inv, invert_matrix(m))


def _random_crops(rng, n, joints):
    """n random crops (box, rotation) and image keypoints that lie on each crop, edges included."""
    matrices, points = [], []
    for _ in range(n):
        box = np.concatenate([rng.uniform(0, 400, 2), rng.uniform(30, 400, 2)])
        m = crop_matrix(*box_to_center_scale(box), rotation_deg=rng.uniform(-45, 45))
        crop_xy = rng.uniform([-0.45, -0.45], [IN_W - 0.55, IN_H - 0.55], (joints, 2))
        matrices.append(m)
        points.append(transform_points(crop_xy, invert_matrix(m)))
    return np.stack(matrices), np.stack(points)


def test_encode_decode_round_trip_in_image_coordinates():
    rng = np.random.default_rng(0)
    matrices, image_xy = _random_crops(rng, n=8, joints=19)
    heatmaps = []
    for m, xy in zip(matrices, image_xy, strict=True):
        target, weight = encode_heatmaps(transform_points(xy, m), np.ones(len(xy)))
        assert target.shape == (19, HM_H, HM_W) and target.dtype == np.float32 and weight.all()
        heatmaps.append(target)
    heatmaps = np.stack(heatmaps)

    coords, scores = decode_heatmaps(heatmaps)
    assert isinstance(coords, np.ndarray) and coords.shape == (8, 19, 2) and scores.shape == (8, 19)
    np.testing.assert_allclose(scores, heatmaps.max(axis=(2, 3)))
    error = np.linalg.norm(heatmaps_to_image(coords, matrices) - image_xy, axis=-1)
    print(f"max round-trip error (numpy): {error.max():.4f} px")
    assert error.max() < 0.5

    coords_t, scores_t = decode_heatmaps(torch.from_numpy(heatmaps))
    assert isinstance(coords_t, torch.Tensor) and isinstance(scores_t, torch.Tensor)
    image_t = heatmaps_to_image(coords_t, matrices)
    assert isinstance(image_t, torch.Tensor) and image_t.shape == (8, 19, 2)
    error_t = np.linalg.norm(image_t.double().numpy() - image_xy, axis=-1)
    print(f"max round-trip error (torch): {error_t.max():.4f} px")
    assert error_t.max() < 0.5


def test_decode_softmax_logit_tilted_and_empty_maps():
    true_xy = np.array([[70.3, 101.8], [3.2, 250.6]])
    target, _ = encode_heatmaps(true_xy, np.ones(2), sigma=1.5)
    logits = torch.from_numpy(np.log(np.maximum(target, 1e-30)))
    softmax = logits.flatten(1).softmax(1).view_as(logits)  # a Gaussian again, tiny values
    signed = torch.from_numpy(4 * target - 1)  # mostly negative, like raw logits
    empty = torch.zeros_like(signed)
    # An elongated Gaussian tilted by 30 degrees (a limb-like blob): needs the fit's cross term.
    u, v = np.meshgrid(np.arange(HM_W) - 20.3, np.arange(HM_H) - 30.6)
    along, across = u * np.cos(0.5236) + v * np.sin(0.5236), -u * np.sin(0.5236) + v * np.cos(0.5236)
    tilted = torch.from_numpy(np.exp(-(along**2) / 18 - across**2 / 2).astype(np.float32)).expand(2, -1, -1)
    coords, scores = decode_heatmaps(torch.stack([softmax, signed, empty, tilted]))
    assert torch.isfinite(coords).all()
    np.testing.assert_allclose(coords[0].numpy(), true_xy, atol=0.05)
    np.testing.assert_allclose(coords[1].numpy(), true_xy, atol=1.0)
    assert scores[2].eq(0).all()
    np.testing.assert_allclose(coords[3, 0].numpy(), [20.3 * 4 + 1.5, 30.6 * 4 + 1.5], atol=0.05)


def test_decode_is_robust_to_noise_and_spikes():
    rng = np.random.default_rng(3)
    true_xy = rng.uniform([16, 16], [IN_W - 17, IN_H - 17], (200, 2))
    target, _ = encode_heatmaps(true_xy, np.ones(200))
    noisy = target + 0.05 * rng.standard_normal(target.shape).astype(np.float32)
    coords, _ = decode_heatmaps(noisy[None])
    error = np.linalg.norm(coords[0] - true_xy, axis=-1)
    # About 0.2 px; plain argmax is off by ~2 px on average here, a 3x3 fit by ~0.8 px.
    assert error.mean() < 0.4

    # A lone hot cell beats the peak's value but not its mass: it sets the score, not the location.
    spiked, _ = encode_heatmaps(np.array([[150.2, 40.7]]), np.ones(1))
    spiked[0, 50, 5] = 1.3
    coords, scores = decode_heatmaps(spiked[None])
    np.testing.assert_allclose(coords[0, 0], [150.2, 40.7], atol=0.05)
    assert scores[0, 0] == pytest.approx(1.3)


def test_crop_image_places_dot_at_transformed_location():
    image = np.full((300, 400, 3), 40, np.uint8)
    dot = np.array([351.3, 72.6])
    yy, xx = np.mgrid[:300, :400]
    blob = 200 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 2.0**2))
    image += np.rint(blob).astype(np.uint8)[..., None]

    # The window runs past the image's right edge: that part of the crop must be black.
    m = crop_matrix(*box_to_center_scale((300.0, 20.0, 130.0, 150.0)), rotation_deg=25.0)
    crop = crop_image(image, m)
    assert crop.shape == (IN_H, IN_W, 3) and crop.dtype == np.uint8
    assert (crop[:, -1] == 0).any() and (crop == 40).any()

    weight = np.clip(crop[..., 0].astype(np.float64) - 40, 0, None)
    found = np.array([(weight * np.mgrid[:IN_H, :IN_W][1]).sum(), (weight * np.mgrid[:IN_H, :IN_W][0]).sum()])
    found /= weight.sum()
    # Tighter than 1 px: a half-pixel convention slip would fail this.
    np.testing.assert_allclose(found, transform_points(dot, m), atol=0.2)


def test_encode_weights_zero_for_invisible_and_outside_joints():
    xy = np.array(
        [[41.5, 61.5], [41.5, 61.5], [-0.5, IN_H - 0.5], [-0.6, 100.0], [100.0, IN_H - 0.4], [np.nan, np.nan]]
    )
    visibility = np.array([2, 0, 1, 1, 1, 0])
    target, weight = encode_heatmaps(xy, visibility)
    np.testing.assert_array_equal(weight, [1, 0, 1, 0, 0, 0])
    assert weight.dtype == np.float32 and np.isfinite(target).all()
    assert not target[weight == 0].any()
    # Input (41.5, 61.5) is the centre of heatmap cell (x=10, y=15): the sampled peak is exactly 1 there.
    assert target[0, 15, 10] == 1.0 and target[0].max() == 1.0
    assert target[0, 15, 9] == pytest.approx(np.exp(-1 / 8)) == target[0, 15, 11]


def test_flip_heatmaps_is_an_involution_and_mirrors_points():
    flip_index = np.array([1, 0, 2])
    xy = np.array([[20.25, 30.5], [150.7, 200.1], [95.5, 10.0]])
    target, _ = encode_heatmaps(xy, np.ones(3))
    heatmaps = np.stack([target, np.random.default_rng(2).random(target.shape, dtype=np.float32)])

    for maps in (heatmaps, torch.from_numpy(heatmaps)):
        flipped = flip_heatmaps(maps, flip_index)
        assert type(flipped) is type(maps) and flipped.shape == maps.shape
        np.testing.assert_array_equal(np.asarray(flip_heatmaps(flipped, flip_index)), heatmaps)

        coords, _ = decode_heatmaps(flipped[:1])
        expected = np.stack([IN_W - 1 - xy[flip_index, 0], xy[flip_index, 1]], axis=1)
        np.testing.assert_allclose(np.asarray(coords[0]), expected, atol=0.05)


def test_flip_test_is_mirror_equivariant_and_costs_two_passes() -> None:
    model = EViTPose(ViTSize(48, 2, 3), NUM_JOINTS, prune_layers=(1,)).eval()
    crops = torch.rand(3, 3, IN_H, IN_W)
    with torch.no_grad():
        logits, out = pose_logits(model, crops, 0.5, flip=True)
        macs = macs_per_crop(model, out, len(crops))
        mirrored, _ = pose_logits(model, crops.flip(-1), 0.5, flip=True)
        single = count_macs(model, model(crops, 0.5))
    assert logits.shape == (3, NUM_JOINTS, *HEATMAP_SIZE[::-1]) and out.heatmaps.shape[0] == 6
    torch.testing.assert_close(mirrored, flip_heatmaps(logits, FLIP_INDEX), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(macs, 2 * single)


def test_decoding_inside_bf16_autocast_matches_float32() -> None:
    """Training computes EMGPose's quality target under autocast; the fit must stay in float32."""
    maps = torch.rand(2, 19, 64, 48)
    expected, _ = decode_heatmaps(maps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coords, _ = decode_heatmaps(maps)
    assert coords.dtype == torch.float32
    torch.testing.assert_close(coords, expected)


@pytest.mark.parametrize("input_size", [INPUT_SIZE, (144, 192)])
def test_crop_batch_centres_each_box_in_a_crop_of_the_input_size(input_size):
    image = np.zeros((400, 300, 3), np.uint8)
    boxes = np.array([[50.0, 40.0, 90.0, 200.0], [10.0, 10.0, 30.0, 30.0]])
    crops, matrices = crop_batch(image, boxes, input_size)
    assert crops.shape == (2, 3, input_size[1], input_size[0])
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    for centre, m in zip(centres, matrices, strict=True):
        np.testing.assert_allclose(transform_points(centre, m), np.array(input_size) / 2 - 0.5)
        scale = np.linalg.norm(m[:, :2], axis=0)
        assert scale[0] == pytest.approx(scale[1])  # the crop's aspect: no stretching


def test_decoding_ignores_values_too_small_to_matter() -> None:
    """A softmax map's far tails are subnormal floats (slow on x86); zeroing them changes nothing."""
    true_xy = np.array([[70.3, 101.8], [100.9, 20.4]])
    target, _ = encode_heatmaps(true_xy, np.ones(2), sigma=1.0)
    logits = torch.from_numpy(120 * target)  # a sharp map: many cells fall below float32's normal range
    softmax = logits.flatten(1).softmax(1).view_as(logits)
    assert (softmax[softmax > 0] < torch.finfo(torch.float32).tiny).any()
    zeroed = softmax.masked_fill(softmax < 1e-30, 0)
    coords, scores = decode_heatmaps(softmax[None])
    expected, expected_scores = decode_heatmaps(zeroed[None])
    torch.testing.assert_close(coords, expected, rtol=0, atol=0)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=0)
    np.testing.assert_allclose(coords[0].numpy(), true_xy, atol=4.0)  # near one-hot: within a cell
