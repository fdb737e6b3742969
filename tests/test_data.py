"""Training data: name mapping, crop/target consistency under augmentation, flips, splits and batching."""

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from poseapp.data import (
    LOWER_BODY,
    UPPER_BODY,
    AugmentConfig,
    Person,
    PoseDataset,
    Sample,
    flip_joints,
    jitter_colour,
    load_people,
    occlude,
    paste_person,
    person_mask,
    split_people,
)
from poseapp.geometry import transform_points
from poseapp.runtime.transforms import (
    CROP_PADDING,
    HEATMAP_SIZE,
    INPUT_SIZE,
    TRAIN_PADDING,
    box_to_center_scale,
    crop_matrix,
    flip_heatmaps,
)
from poseapp.skeleton import COCO17, FLIP_INDEX, INDEX, NUM_JOINTS

IN_W, IN_H = INPUT_SIZE
STRIDE = IN_W / HEATMAP_SIZE[0]
IMAGE_W, IMAGE_H = 200, 300
BOX = [50.0, 0.0, 100.0, 290.0]

# A person facing the camera (their left on the image's right), arms up, deliberately asymmetric so that a
# mirrored or wrongly rotated crop cannot put joints back onto dots by chance.
POSE = {
    "nose": (100, 44), "left_eye": (108, 30), "right_eye": (92, 30), "left_ear": (120, 42),
    "right_ear": (80, 42), "left_shoulder": (125, 75), "right_shoulder": (75, 75), "left_elbow": (135, 45),
    "right_elbow": (68, 55), "left_wrist": (140, 12), "right_wrist": (62, 30), "left_hip": (115, 150),
    "right_hip": (85, 150), "left_knee": (125, 205), "right_knee": (80, 215), "left_ankle": (130, 270),
    "right_ankle": (78, 262), "neck": (100, 62), "head_top": (100, 18),
}  # fmt: skip
LSP_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
)  # fmt: skip
DOT_BGR = {"left_wrist": (0, 0, 255), "right_wrist": (0, 255, 0)}  # red and green; every other dot white
NO_AUG = AugmentConfig(
    scale_range=(1.0, 1.0), rotation_prob=0, flip_prob=0, half_body_prob=0, colour_prob=0, occlusion_prob=0,
    truncate_prob=0, aspect_jitter=1.0, blur_prob=0, dark_prob=0,
)  # fmt: skip
GEOMETRY_ONLY = AugmentConfig(colour_prob=0, occlusion_prob=0, blur_prob=0, dark_prob=0)


def keypoints(names=COCO17, unlabelled=()):
    return [v for n in names for v in ((0, 0, 0) if n in unlabelled else (*POSE[n], 2))]


def annotation(ann_id, image_id=1, names=COCO17, unlabelled=(), **fields):
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": BOX}
    return ann | {"keypoints": keypoints(names, unlabelled)} | fields


def write_coco(root: Path, annotations, names=COCO17) -> Path:
    """A COCO keypoint json plus one JPEG per image with a dot at every labelled joint."""
    (root / "images").mkdir(exist_ok=True)
    image_ids = sorted({a["image_id"] for a in annotations})
    for image_id in image_ids:
        image = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
        for ann in annotations:
            points = np.reshape(ann["keypoints"], (-1, 3))
            for name, (x, y, v) in zip(names, points, strict=True):
                if ann["image_id"] == image_id and v > 0:
                    cv2.circle(image, (int(x), int(y)), 4, DOT_BGR.get(name, (255, 255, 255)), -1)
        cv2.imwrite(str(root / "images" / f"{image_id}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in image_ids],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": list(names)}],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def person(tmp_path) -> Person:
    (single,) = load_people(write_coco(tmp_path, [annotation(1)]), tmp_path / "images")
    return single


def peaks(target: torch.Tensor) -> np.ndarray:
    """Argmax of each heatmap, in input (crop) pixels: (J, 2) x, y."""
    flat = target.flatten(1).argmax(1).numpy()
    width = target.shape[-1]
    cells = np.stack([flat % width, flat // width], axis=1)
    return (cells + 0.5) * STRIDE - 0.5


def test_lsp_names_map_to_unified_joints(tmp_path):
    ann_file = write_coco(tmp_path, [annotation(1, names=LSP_NAMES, unlabelled=("left_knee",))], LSP_NAMES)
    (p,) = load_people(ann_file, tmp_path / "images")
    for name in ("neck", "head_top", "left_ankle", "right_ankle", "left_wrist", "right_hip"):
        np.testing.assert_allclose(p.xy[INDEX[name]], POSE[name], err_msg=name)
    missing = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_knee"]
    assert np.flatnonzero(p.visibility == 0).tolist() == sorted(INDEX[n] for n in missing)

    sample = PoseDataset([p], train=False)[0]
    named = ("neck", "head_top")
    expected = transform_points(
        [POSE[n] for n in named], crop_matrix(*box_to_center_scale(BOX, padding=CROP_PADDING))
    )
    for name, xy in zip(named, expected, strict=True):
        np.testing.assert_allclose(sample.joints[INDEX[name], :2].numpy(), xy, atol=1e-4)
        assert np.abs(peaks(sample.target)[INDEX[name]] - xy).max() <= STRIDE / 2
    for name in missing:
        assert sample.weight[INDEX[name]] == 0 and sample.target[INDEX[name]].abs().max() == 0, name
    assert sample.weight.sum() == NUM_JOINTS - len(missing)


@pytest.mark.parametrize("input_size", [INPUT_SIZE, (144, 192)])
@pytest.mark.parametrize("seed", range(6))
def test_training_crop_pixels_and_targets_agree(person, seed, input_size):
    torch.manual_seed(seed)
    sample = PoseDataset([person], train=True, augment=GEOMETRY_ONLY, input_size=input_size)[0]
    assert sample.image.shape[1:] == input_size[::-1]
    assert sample.target.shape[1:] == (input_size[1] // 4, input_size[0] // 4)
    brightness = sample.image.amax(0).numpy()
    weighted = np.flatnonzero(sample.weight.numpy())
    assert len(weighted) >= 6
    for j, (x, y) in zip(weighted, peaks(sample.target)[weighted], strict=True):
        x0, y0 = round(x), round(y)
        window = brightness[max(y0 - 6, 0) : y0 + 7, max(x0 - 6, 0) : x0 + 7]
        assert window.max() > 0.6, f"joint {j}: heatmap peak at ({x:.0f}, {y:.0f}) is not on its dot"

    # `matrix` is the image->crop map of the unflipped image; a flip shows as a mirrored matrix.
    matrix = sample.matrix.numpy()
    index = FLIP_INDEX if np.linalg.det(matrix[:, :2]) < 0 else np.arange(NUM_JOINTS)
    joints = transform_points(person.xy, matrix)[index]
    np.testing.assert_allclose(sample.joints[weighted, :2].numpy(), joints[weighted], atol=1e-3)


def test_training_augmentation_varies_and_seed_reproduces(person):
    dataset = PoseDataset([person], train=True, augment=GEOMETRY_ONLY)
    torch.manual_seed(3)
    first = [dataset[0] for _ in range(8)]
    torch.manual_seed(3)
    again = dataset[0]
    assert torch.equal(first[0].image, again.image) and torch.equal(first[0].matrix, again.matrix)
    dets = [np.linalg.det(s.matrix[:, :2].numpy()) for s in first]
    assert len({round(d, 6) for d in dets}) > 1  # scales differ from call to call
    assert min(dets) < 0 < max(dets)  # some flipped, some not


def test_flip_swaps_left_and_right(person):
    flipped = PoseDataset([person], train=True, augment=replace(NO_AUG, flip_prob=1))[0]
    plain = PoseDataset([person], train=True, augment=NO_AUG)[0]
    left, right = INDEX["left_wrist"], INDEX["right_wrist"]

    # The person's left wrist (red dot, right half of the unflipped crop) becomes the right wrist channel.
    assert plain.joints[left, 0] > IN_W / 2 and flipped.joints[right, 0] < IN_W / 2
    x, y = np.rint(flipped.joints[right, :2].numpy()).astype(int)
    red, green, blue = flipped.image[:, y, x]
    assert red > 0.6 and green < 0.3 and blue < 0.3
    mirrored = [IN_W - 1 - plain.joints[left, 0], plain.joints[left, 1]]
    np.testing.assert_allclose(flipped.joints[right, :2], mirrored)

    # Without other augmentation, the flipped sample is the mirrored plain sample, pixels and targets alike.
    np.testing.assert_allclose(flipped.image, plain.image.flip(-1), atol=2 / 255)
    np.testing.assert_allclose(flipped.target, flip_heatmaps(plain.target, FLIP_INDEX), atol=1e-5)
    np.testing.assert_array_equal(flipped.weight, plain.weight[FLIP_INDEX])


def test_flip_joints_mirrors_and_twice_is_identity(person):
    xy, vis = flip_joints(person.xy, person.visibility, IMAGE_W)
    x, y = POSE["left_wrist"]
    np.testing.assert_allclose(xy[INDEX["right_wrist"]], [IMAGE_W - 1 - x, y])
    assert vis[INDEX["neck"]] == 0 and vis[INDEX["nose"]] == 2
    back_xy, back_vis = flip_joints(xy, vis, IMAGE_W)
    np.testing.assert_allclose(back_xy, person.xy)
    np.testing.assert_array_equal(back_vis, person.visibility)


def seeded_pairs(first: PoseDataset, second: PoseDataset, seeds=range(4)):
    """Item 0 of each dataset drawn under the same torch seed, for every seed."""
    for seed in seeds:
        torch.manual_seed(seed)
        a = first[0]
        torch.manual_seed(seed)
        yield a, second[0]


def test_colour_and_occlusion_never_change_targets(person):
    plain = PoseDataset([person], train=True, augment=GEOMETRY_ONLY)
    noisy = PoseDataset([person], train=True, augment=AugmentConfig(colour_prob=1, occlusion_prob=1))
    for a, b in seeded_pairs(plain, noisy):
        assert torch.equal(a.target, b.target) and torch.equal(a.weight, b.weight)
        assert torch.equal(a.joints, b.joints) and torch.equal(a.matrix, b.matrix)
        assert not torch.equal(a.image, b.image)


def test_jitter_and_occlude_return_new_images():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    original = image.copy()
    always = AugmentConfig(colour_prob=1, occlusion_prob=1)
    for augment in (jitter_colour, occlude):
        out = augment(image, always, rng)
        assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
        np.testing.assert_array_equal(image, original)
        never = AugmentConfig(colour_prob=0, occlusion_prob=0)
        assert augment(image, never, rng) is image


def test_half_body_keeps_only_upper_or_lower_body(person):
    cfg = replace(NO_AUG, half_body_prob=1)
    dataset = PoseDataset([person], train=True, augment=cfg)
    halves = set()
    for seed in range(12):
        torch.manual_seed(seed)
        inside = dataset[0].weight.numpy() > 0
        labelled = person.visibility > 0
        if np.array_equal(inside, labelled & UPPER_BODY):
            halves.add("upper")
        elif np.array_equal(inside, labelled & LOWER_BODY):
            halves.add("lower")
        else:
            pytest.fail(f"seed {seed}: joints {np.flatnonzero(inside)} are neither one half")
    assert halves == {"upper", "lower"}


def test_confidence_multiplies_weights_and_follows_flips(person):
    confidence = np.ones(NUM_JOINTS)
    confidence[INDEX["left_wrist"]] = 0.5
    pseudo = replace(person, confidence=confidence)
    left, right = INDEX["left_wrist"], INDEX["right_wrist"]
    assert PoseDataset([pseudo], train=False)[0].weight[left] == 0.5
    flip = replace(NO_AUG, flip_prob=1)
    weight = PoseDataset([pseudo], train=True, augment=flip)[0].weight
    assert weight[right] == 0.5 and weight[left] == 1
    per_joint = np.full(NUM_JOINTS, 0.5)
    assert PoseDataset([pseudo], train=False, confidence=per_joint)[0].weight[left] == 0.25


def test_load_people_filters_sorts_and_splits(tmp_path):
    few = COCO17[:14]  # leaves 3 labelled joints
    anns = [
        annotation(7, image_id=2),
        annotation(3, image_id=2),
        annotation(5, image_id=1),
        annotation(9, image_id=1, iscrowd=1),
        annotation(4, image_id=1, unlabelled=few),
        annotation(6, image_id=3, unlabelled=COCO17),  # none labelled
    ]
    ann_file = write_coco(tmp_path, anns)
    people = load_people(ann_file, tmp_path / "images")
    assert [(p.image_id, p.ann_id) for p in people] == [(1, 4), (1, 5), (2, 3), (2, 7)]
    assert people[0].image_path == str(tmp_path / "images" / "1.jpg")
    assert [p.ann_id for p in load_people(ann_file, tmp_path / "images", min_joints=4)] == [5, 3, 7]

    train, val = split_people(people[::-1], holdout=1)
    assert [p.ann_id for p in train] == [4, 5, 3] and [p.ann_id for p in val] == [7]
    assert split_people(people, holdout=0) == (people, [])
    with pytest.raises(ValueError):
        split_people(people, holdout=5)


@pytest.mark.parametrize("bbox", [None, [0, 0, 0, 0], [10, 10, 1, 50]])
def test_person_without_a_usable_bbox_gets_one_from_its_joints(tmp_path, bbox):
    ann = annotation(1) | {"bbox": bbox}
    if bbox is None:
        del ann["bbox"]
    (p,) = load_people(write_coco(tmp_path, [ann]), tmp_path / "images")
    x, y, w, h = p.box_xywh
    points = np.array([POSE[n] for n in COCO17])
    assert np.all(points.min(0) > [x, y]) and np.all(points.max(0) < [x + w, y + h])
    assert w < 1.5 * np.ptp(points[:, 0]) and h < 1.5 * np.ptp(points[:, 1])


@pytest.mark.parametrize(
    "data",
    [
        {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]},
        {"images": [], "annotations": [], "categories": []},
        {"images": [], "categories": [{"id": 1, "keypoints": ["nose"]}]},
        {"annotations": [], "categories": [{"id": 1, "keypoints": ["nose"]}]},
        [],
    ],
)
def test_broken_json_gives_a_clear_error(tmp_path, data):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="broken.json"):
        load_people(path, tmp_path)


def test_unreadable_image_names_its_path(tmp_path, person):
    (tmp_path / "images" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="1.jpg"):
        PoseDataset([person], train=False)[0]


def test_dataloader_batches_samples(person):
    dataset = PoseDataset([person] * 3, train=True)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert isinstance(batch, Sample)
    expected = {
        "image": ((2, 3, IN_H, IN_W), torch.float32),
        "target": ((2, NUM_JOINTS, HEATMAP_SIZE[1], HEATMAP_SIZE[0]), torch.float32),
        "weight": ((2, NUM_JOINTS), torch.float32),
        "matrix": ((2, 2, 3), torch.float64),
        "joints": ((2, NUM_JOINTS, 3), torch.float32),
        "index": ((2,), torch.int64),
    }
    for name, (shape, dtype) in expected.items():
        value = getattr(batch, name)
        assert (tuple(value.shape), value.dtype) == (shape, dtype), name
    assert batch.image.min() >= 0 and batch.image.max() <= 1
    assert batch.index.tolist() == [0, 1]


def test_workers_differ_and_torch_seed_reproduces(person):
    loader = DataLoader(PoseDataset([person] * 4, train=True), batch_size=1, num_workers=2)

    def matrices():
        torch.manual_seed(0)
        return torch.cat([batch.matrix for batch in loader])

    first, second = matrices(), matrices()
    assert torch.equal(first, second)
    # One person four times: identical crops would mean the two workers drew the same augmentation.
    assert len({tuple(m.flatten().tolist()) for m in first}) == 4
    assert not torch.equal(torch.cat([batch.matrix for batch in loader]), first)  # the next epoch differs


def test_teacher_confidences_become_joint_weights(tmp_path) -> None:
    names = ["nose", "left_eye", "neck"]
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.zeros((100, 80, 3), np.uint8))
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 60, 80],
                         "keypoints": [40, 30, 2, 45, 28, 2, 40, 50, 2], "keypoint_scores": [0.9, 0.4, 0.7]}],
        "categories": [{"id": 1, "name": "person", "keypoints": names}],
    }  # fmt: skip
    path = tmp_path / "t.json"
    path.write_text(json.dumps(ann))
    (person,) = load_people(path, tmp_path)
    assert person.confidence[INDEX["nose"]] == 0.9 and person.confidence[INDEX["neck"]] == 0.7
    sample = PoseDataset([person], train=False)[0]
    assert sample.weight[INDEX["left_eye"]] == pytest.approx(0.4)
    assert sample.weight[INDEX["left_ankle"]] == 0


def test_person_mask_covers_the_skeleton_and_nothing_far_from_it():
    xy = np.array([POSE[n] for n in (COCO17 + ("neck", "head_top"))], dtype=np.float64)
    vis = np.full(NUM_JOINTS, 2.0)
    mask = person_mask(xy, vis, (IMAGE_H, IMAGE_W), height=290)
    assert mask.shape == (IMAGE_H, IMAGE_W) and mask.dtype == np.float32
    knee, ankle = np.array(POSE["left_knee"]), np.array(POSE["left_ankle"])
    on_shin = np.rint((knee + ankle) / 2).astype(int)
    assert mask[on_shin[1], on_shin[0]] > 0.9
    torso = np.rint(np.mean([POSE[n] for n in ("left_shoulder", "right_hip")], axis=0)).astype(int)
    assert mask[torso[1], torso[0]] > 0.9
    assert mask[:, :20].max() == 0 and mask[:, -20:].max() == 0  # 40 px beside the outermost joints
    assert person_mask(xy, np.zeros(NUM_JOINTS), (IMAGE_H, IMAGE_W), 290).max() == 0


def test_paste_person_blends_only_the_donor_body_and_leaves_the_crop():
    rng = np.random.default_rng(0)
    crop = np.full((IN_H, IN_W, 3), 30, np.uint8)
    donor = np.full((IMAGE_H, IMAGE_W, 3), 220, np.uint8)
    xy = np.array([POSE[n] for n in (COCO17 + ("neck", "head_top"))], dtype=np.float64)
    vis = np.full(NUM_JOINTS, 2.0)
    cfg = AugmentConfig(paste_height=(1.0, 1.0), paste_offset=0.0)
    out = paste_person(crop, donor, np.array(BOX), xy, vis, cfg, rng)
    assert out.shape == crop.shape and out.dtype == np.uint8 and (crop == 30).all()
    changed = (out != 30).any(axis=2)
    assert 0.1 < changed.mean() < 0.6  # a body, not the whole donor box
    assert out[IN_H // 2 - 10, IN_W // 2].min() > 200  # the torso, at the centre with no offset
    assert (out[:, :5] == 30).all() and (out[:, -5:] == 30).all()  # the body is narrower than the crop
    assert paste_person(crop, donor, np.array(BOX), xy, np.zeros(NUM_JOINTS), cfg, rng) is crop
    scale = IN_H / BOX[3]  # the same person fills the crop: with it in front, its torso keeps its pixels
    front = ((xy - [BOX[0] + BOX[2] / 2, BOX[1] + BOX[3] / 2]) * scale + [IN_W / 2, IN_H / 2], vis, IN_H)
    behind = paste_person(crop, donor, np.array(BOX), xy, vis, cfg, rng, front)
    assert (behind[IN_H // 2 - 10, IN_W // 2] == 30).all()
    assert (behind != 30).any(axis=2).mean() < changed.mean()


def test_pasting_a_second_person_changes_pixels_not_targets(tmp_path):
    second = annotation(2, image_id=2)
    people = load_people(write_coco(tmp_path, [annotation(1), second]), tmp_path / "images")
    plain = PoseDataset(people, train=True, augment=GEOMETRY_ONLY)
    pasted = PoseDataset(people, train=True, augment=replace(GEOMETRY_ONLY, paste_prob=1.0))
    differs = 0
    for a, b in seeded_pairs(plain, pasted):
        assert torch.equal(a.target, b.target) and torch.equal(a.weight, b.weight)
        differs += not torch.equal(a.image, b.image)
    assert differs >= 3
    alone = PoseDataset(people[:1], train=True, augment=replace(GEOMETRY_ONLY, paste_prob=1.0))
    for a, b in seeded_pairs(alone, PoseDataset(people[:1], train=True, augment=GEOMETRY_ONLY), [0]):
        assert torch.equal(a.image, b.image)  # nobody else to paste


def test_training_crops_are_padded_wider_than_inference_crops(person):
    trained = PoseDataset([person], train=True, augment=NO_AUG)[0]
    evaluated = PoseDataset([person], train=False)[0]
    scale = [np.sqrt(abs(np.linalg.det(s.matrix[:, :2].numpy()))) for s in (trained, evaluated)]
    assert scale[1] / scale[0] == pytest.approx(TRAIN_PADDING / CROP_PADDING, rel=1e-4)
