"""The distillation corpus: de-duplication, teacher fusion, truncation augmentation, scan/label/export."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from poseapp.data import AugmentConfig, PoseDataset, load_people
from poseapp.data.augment import Cut, blank_beyond, truncate
from poseapp.engine.corpus import (
    Candidate,
    _with_human_labels,
    crop_hash,
    dedupe,
    export_corpus,
    label_corpus,
    parse_source,
    read_sources,
    roboflow_group,
    scan_sources,
    write_sources,
)
from poseapp.engine.label import fuse_teachers
from poseapp.geometry import transform_points
from poseapp.results import Predictions
from poseapp.skeleton import INDEX, NUM_JOINTS
from tests.test_data import LSP_NAMES, annotation, write_coco


def _textured(seed: int, shape=(120, 60)) -> np.ndarray:
    """A BGR image with large random blobs (a stand-in photo whose hash is stable under small changes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    return cv2.resize(small, shape[::-1], interpolation=cv2.INTER_CUBIC)


def _candidate(i, image, source="a", group="", file=None) -> Candidate:
    box = [0.0, 0.0, float(image.shape[1]), float(image.shape[0])]
    h, m = crop_hash(image, box)
    return Candidate(i, source, file or f"{i}.jpg", box, h, m, group)


def test_mirror_hash_is_the_hash_of_the_mirrored_crop():
    image = _textured(1)
    box = [5, 10, 40, 100]
    _, mirror = crop_hash(image, box)
    flipped = image[:, ::-1]
    x = image.shape[1] - (box[0] + box[2])
    assert crop_hash(flipped, [x, box[1], box[2], box[3]])[0] == mirror


def test_dedupe_drops_copies_and_keeps_different_people():
    a, b = _textured(1), _textured(2)
    brighter = np.clip(a.astype(int) + 12, 0, 255).astype(np.uint8)
    candidates = [
        _candidate(0, a),
        _candidate(1, b),
        _candidate(2, brighter),  # the same photo, re-exposed
        _candidate(3, np.ascontiguousarray(a[:, ::-1])),  # mirrored
        _candidate(4, _textured(3), group="photo_jpg", file="x.rf.1.jpg"),
        _candidate(5, _textured(4), group="photo_jpg", file="x.rf.2.jpg"),  # another augmented version
        _candidate(6, _textured(5), source="b", group="photo_jpg", file="y.jpg"),  # same name, other source
    ]
    kept, dropped = dedupe(candidates)
    assert [c.id for c in kept] == [0, 1, 4, 6]
    assert dropped == {"a": 3}


def test_roboflow_copies_share_their_group():
    assert roboflow_group("train/images/-1-_jpg.rf.2c57a6.jpg") == roboflow_group("-1-_jpg.rf.e981.jpg")
    assert roboflow_group("plain.jpg") == "plain.jpg"


def _standing(x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """A person standing upright in a 100 x 200 box: joints from the face at the top to the feet at the
    bottom (COCO-17 order runs head, arms, hips, knees, ankles), left joints to the right of right ones."""
    xy = np.zeros((NUM_JOINTS, 2))
    xy[:17, 1] = y0 + np.linspace(10, 190, 17)
    xy[:17, 0] = x0 + 50 + np.where(np.arange(17) % 2 == 1, 10.0, -10.0)
    return xy


def test_fusion_averages_agreeing_joints_and_takes_the_surer_teacher_elsewhere():
    first_xy, other_xy = _standing(), _standing() + [4.0, 0.0]  # agreeing: 4 px apart on a 100 x 200 box
    knee = INDEX["left_knee"]
    other_xy[knee] += [60.0, 0.0]  # the teachers disagree about one knee by 0.3 box heights
    first, second = np.full(NUM_JOINTS, 0.9), np.full(NUM_JOINTS, 0.6)
    first[knee], second[knee] = 0.7, 0.8
    xy, weight = fuse_teachers(first_xy, first, other_xy, second, box_area=100 * 200)
    agree = np.arange(17) != knee
    np.testing.assert_allclose(xy[:17][agree], first_xy[:17][agree] + [4.0 * 0.6 / 1.5, 0.0])  # weighted mean
    np.testing.assert_allclose(xy[knee], other_xy[knee])  # MoveNet is surer of the knee they dispute
    assert np.all(weight[:17][agree] > 0.8) and weight[knee] < 0.3
    # a teacher with no answer for a joint (confidence 0) leaves the other's position and confidence alone
    silent = second.copy()
    silent[:5] = 0.0
    xy, weight = fuse_teachers(first_xy, first, other_xy, silent, box_area=100 * 200)
    np.testing.assert_allclose(xy[:5], first_xy[:5])
    np.testing.assert_allclose(weight[:5], 0.9)


def test_fusion_trusts_movenet_with_a_person_upside_down():
    """yolo11n-pose answers an acrobat upside down with an upright skeleton, confidently; MoveNet does not."""
    upright, inverted = _standing(), _standing()
    inverted[:17, 1] = 200 - inverted[:17, 1]  # head at the bottom of the box
    confident = np.full(NUM_JOINTS, 0.95)
    xy, weight = fuse_teachers(upright, confident, inverted, np.full(NUM_JOINTS, 0.7), box_area=100 * 200)
    np.testing.assert_allclose(xy, inverted)
    np.testing.assert_allclose(weight, 0.7)
    # a body lying down on which they disagree: MoveNet's too
    lying = _standing()[:, ::-1].copy()
    lying[:17, 1] += 30.0
    xy, _ = fuse_teachers(upright, confident, lying, np.full(NUM_JOINTS, 0.7), box_area=200 * 200)
    np.testing.assert_allclose(xy, lying)


def test_human_labels_keep_their_joints_and_take_the_teachers_hips_where_they_agree():
    box = np.array([0.0, 0.0, 100.0, 200.0])
    taught = _standing()
    human = np.column_stack([taught + [2.0, 1.0], np.zeros(NUM_JOINTS)])
    lsp = [INDEX[n] for n in LSP_NAMES]
    human[lsp, 2] = 2.0
    hips = [INDEX["left_hip"], INDEX["right_hip"]]
    human[hips, 1] -= 15.0  # LSP's hips sit higher than COCO's
    visibility, weight = np.full(NUM_JOINTS, 2.0), np.full(NUM_JOINTS, 0.8)
    visibility[17:] = weight[17:] = 0.0
    xy, visibility, weight = _with_human_labels(human.ravel(), taught, visibility, weight, box)
    np.testing.assert_allclose(xy[hips], taught[hips])  # COCO's hips, from the teachers
    knee, nose, neck = INDEX["left_knee"], INDEX["nose"], INDEX["neck"]
    np.testing.assert_allclose(xy[[knee, neck]], human[[knee, neck], :2])  # the human's
    assert weight[knee] == weight[neck] == 1.0 and visibility[neck] > 0
    assert weight[nose] == 0.8 and visibility[nose] > 0  # the teachers' face
    # a pose the teachers misread: only the human joints stay
    xy, visibility, weight = _with_human_labels(human.ravel(), taught[::-1].copy(), visibility, weight, box)
    assert visibility[hips].sum() == 0 and visibility[nose] == 0 and weight[knee] == 1.0


def test_truncation_cuts_the_box_and_says_which_side():
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(truncate_prob=1.0)
    box = np.array([10.0, 20.0, 100.0, 200.0])
    for _ in range(40):
        kept_box, cut = truncate(box, cfg, rng)
        corners = np.array([kept_box[:2], kept_box[:2] + kept_box[2:]])
        assert not cut.outside(corners + [[1e-6, 1e-6], [-1e-6, -1e-6]]).any()  # the kept box is inside
        assert kept_box[2] * kept_box[3] < box[2] * box[3]
    assert truncate(box, AugmentConfig(truncate_prob=0.0), rng) is None


def test_blank_beyond_blacks_out_exactly_the_far_side():
    image = np.full((10, 8, 3), 200, np.uint8)
    out = blank_beyond(image, Cut(axis=1, position=5.5, after=True))
    assert (out[6:] == 0).all() and (out[:6] == 200).all()
    out = blank_beyond(image, Cut(axis=0, position=2.5, after=False))
    assert (out[:, :3] == 0).all() and (out[:, 3:] == 200).all()
    assert (image == 200).all()  # the input is kept


@pytest.mark.parametrize("seed", range(8))
def test_truncated_crops_keep_labels_consistent(tmp_path, seed):
    """Joints the frame cut off get no weight and are blank in the crop; every joint that keeps a weight is
    still on its dot."""
    (person,) = load_people(write_coco(tmp_path, [annotation(1)]), tmp_path / "images")
    cfg = AugmentConfig(truncate_prob=1.0, colour_prob=0, occlusion_prob=0, blur_prob=0, dark_prob=0)
    torch.manual_seed(seed)
    sample = PoseDataset([person], train=True, augment=cfg)[0]
    brightness = sample.image.amax(0).numpy()
    matrix = sample.matrix.numpy()
    mirrored = np.linalg.det(matrix[:, :2]) < 0
    crop_xy = transform_points(person.xy, matrix)  # where each labelled dot lands in the crop
    weights = sample.weight.numpy()
    if mirrored:  # channels are swapped left/right in a flipped crop
        from poseapp.skeleton import FLIP_INDEX

        weights = weights[FLIP_INDEX]
    kept = 0
    height, width = brightness.shape
    for j, (x, y) in enumerate(crop_xy):
        if not (2 <= x < width - 2 and 2 <= y < height - 2):
            continue
        window = brightness[max(round(y) - 1, 0) : round(y) + 2, max(round(x) - 1, 0) : round(x) + 2]
        if weights[j] > 0:
            kept += 1
            assert window.max() > 0.6, f"joint {j} keeps a weight but its dot is gone"
        else:  # the joint itself lies beyond the edge (a dot cut through its middle may show half)
            assert brightness[round(y), round(x)] < 0.5, f"joint {j} has no weight but is in the crop"
    assert kept >= 3 and weights.sum() < NUM_JOINTS


class _FakeTeacher:
    """Answers every box with the box's own corners and centre as joints; ``shift`` moves one joint."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift, self.calls = shift, 0

    def predict(self, image, boxes_xywh, knob=None) -> Predictions:
        self.calls += 1
        n = len(boxes_xywh)
        xy = np.zeros((n, NUM_JOINTS, 2))
        scores = np.zeros((n, NUM_JOINTS))
        for i, (x, y, w, h) in enumerate(boxes_xywh):
            xy[i, :17] = np.column_stack([np.linspace(x, x + w, 17), np.linspace(y, y + h, 17)])
            xy[i, INDEX["left_knee"], 0] += self.shift
            scores[i, :17] = 0.9
        return Predictions(xy, scores, np.full(n, np.nan))


def _yolo_source(root: Path) -> None:
    """Two photos in Roboflow's layout, the second an augmented copy of the first, plus a third."""
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    for name, seed in (("a_jpg.rf.1", 1), ("a_jpg.rf.2", 1), ("b_jpg.rf.1", 2)):
        cv2.imwrite(str(root / "train" / "images" / f"{name}.jpg"), _textured(seed, (200, 200)))
        (root / "train" / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.3 0.8\n0 0.1 0.1 0.05 0.05\n")


def test_corpus_scans_labels_resumes_and_exports(tmp_path):
    _yolo_source(tmp_path / "photos")
    (tmp_path / "crops").mkdir()
    cv2.imwrite(str(tmp_path / "crops" / "p.jpg"), _textured(7, (128, 64)))
    coco = write_coco(tmp_path, [annotation(1, names=LSP_NAMES)], names=LSP_NAMES)
    sources = [
        parse_source(f"photos=yolo:{tmp_path / 'photos'}@someone/photos @ abc"),
        parse_source(f"crops=crops:{tmp_path / 'crops'}"),
        parse_source(f"lsp=coco:{coco}:{tmp_path / 'images'}"),
    ]
    out = tmp_path / "corpus"
    kept, found, dropped = scan_sources(sources, out, min_height=48)
    assert found == {"photos": 3, "crops": 1, "lsp": 1}  # the 10-pixel boxes are skipped
    assert dropped == {"photos": 1}  # the augmented copy
    assert len(kept) == 4 and (out / "people.jsonl").is_file()

    primary, secondary = _FakeTeacher(), _FakeTeacher(shift=60.0)
    assert label_corpus(out, sources, primary, secondary, shard=0, shards=2) == 2
    # a stop mid-line leaves a cut line, which is labelled again
    with open(out / "labels-1.jsonl", "w") as f:
        f.write('{"id": 1, "xy": [[')
    assert label_corpus(out, sources, primary, secondary, shard=1, shards=2) == 2
    assert label_corpus(out, sources, primary, secondary, shard=0, shards=2) == 0  # nothing left

    manifest = export_corpus(out, sources, min_confidence=0.3)
    assert manifest["people"] == 4
    assert [s["people"] for s in manifest["sources"]] == [2, 1, 1]
    assert manifest["sources"][0]["origin"] == "someone/photos @ abc"
    for entry in manifest["sources"][:2]:
        people = load_people(entry["annotations"], entry["images"])
        for person in people:
            assert Path(person.image_path).is_file()
            assert person.confidence[INDEX["left_knee"]] < 0.3  # the teachers disagree there
            assert person.confidence[INDEX["nose"]] == pytest.approx(0.9)
    (lsp,) = load_people(manifest["sources"][2]["annotations"], manifest["sources"][2]["images"])
    (human,) = load_people(coco, tmp_path / "images")
    for name in ("head_top", "left_knee", "right_wrist"):  # human labels that follow COCO's conventions
        np.testing.assert_allclose(lsp.xy[INDEX[name]], human.xy[INDEX[name]], atol=0.01)
        assert lsp.confidence[INDEX[name]] == 1.0
    # LSP's hips are not COCO's; the teachers' hips would replace them, but this teacher's skeleton
    # (the box's diagonal) does not agree with the human one, so the hips and face stay unlabelled
    assert lsp.visibility[INDEX["left_hip"]] == 0 and lsp.visibility[INDEX["nose"]] == 0
    data = json.loads(Path(manifest["sources"][0]["annotations"]).read_text())
    assert data["info"]["origin"] == "someone/photos @ abc"

    # a corpus grows: another source is appended with the next ids, its copies of known people dropped
    (tmp_path / "more").mkdir()
    cv2.imwrite(str(tmp_path / "more" / "new.jpg"), _textured(9, (128, 64)))
    cv2.imwrite(str(tmp_path / "more" / "old.jpg"), _textured(7, (128, 64)))  # the crop seen before
    added, found, dropped = scan_sources([parse_source(f"more=crops:{tmp_path / 'more'}")], out)
    assert [c.id for c in added] == [4] and found == {"more": 2} and dropped == {"more": 1}
    assert len((out / "people.jsonl").read_text().splitlines()) == 5


def test_a_yolo_source_takes_the_person_classes_it_names(tmp_path):
    _yolo_source(tmp_path / "photos")  # its people are class 0; give the third photo classes 2 and 5
    labels = tmp_path / "photos" / "train" / "labels"
    (labels / "b_jpg.rf.1.txt").write_text("2 0.5 0.5 0.3 0.8\n5 0.3 0.5 0.2 0.6\n")
    source = parse_source(f"players=yolo[2,5]:{tmp_path / 'photos'}@someone/players @ abc")
    assert source.kind == "yolo" and source.classes == (2, 5)
    _, found, _ = scan_sources([source], tmp_path / "corpus", min_height=48)
    assert found == {"players": 2}  # only the third photo has people of those classes
    write_sources(tmp_path / "corpus", [source])
    assert read_sources(tmp_path / "corpus") == [source]
    assert parse_source(f"p=yolo:{tmp_path / 'photos'}").classes == (0,)


@pytest.mark.parametrize(
    "text",
    ["noequals", "x=yolo", "x=unknown:/tmp", "x=coco:ann.json", "x=crops:/does/not/exist", "x=yolo[a]:/tmp",
     "x=crops[1]:/tmp"],
)  # fmt: skip
def test_bad_source_specs_are_refused(text):
    with pytest.raises((ValueError, FileNotFoundError)):
        parse_source(text)


def test_corpus_command_refuses_bad_shards(tmp_path, capsys):
    from poseapp.cli import main

    assert main(["corpus", "--out", str(tmp_path), "--shard", "2", "--shards", "2"]) == 2
    assert "--shard" in capsys.readouterr().err
