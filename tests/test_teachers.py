"""Teachers on a real frame, and pseudo-labelling (teacher labels, and filling the joints a dataset lacks)."""

import json

import cv2
import numpy as np
import pytest

from poseapp.data import load_people
from poseapp.engine.label import FusedTeachers, fuse_teachers, label_images
from poseapp.engine.teachers import DEFAULT_MOVENET, MoveNetTeacher, YoloPoseTeacher
from poseapp.geometry import xyxy_to_xywh
from poseapp.results import Predictions
from poseapp.skeleton import COCO17, INDEX, JOINTS, NUM_JOINTS

LSP_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
)  # fmt: skip
FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")


def _frame(video, index):
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return frame


@pytest.fixture(scope="module")
def frame60(sample_video):
    return _frame(sample_video, 60)


@pytest.fixture(scope="module")
def yolo(yolo_pose_weights):
    return YoloPoseTeacher(yolo_pose_weights)


@pytest.fixture(scope="module")
def largest_box(yolo, frame60):
    """x, y, w, h of the largest person YOLO finds in frame 60."""
    boxes = xyxy_to_xywh(yolo.detect_people(frame60).boxes)
    return boxes[np.argmax(boxes[:, 2] * boxes[:, 3])]


def _inside(xy, box_xywh, margin=0.1):
    x, y, w, h = box_xywh
    low = np.array([x - margin * w, y - margin * h])
    high = np.array([x + (1 + margin) * w, y + (1 + margin) * h])
    return np.all((xy >= low) & (xy <= high), axis=-1)


def test_yolo_end_to_end_and_top_down_agree(yolo, frame60, largest_box):
    found = yolo.detect_people(frame60)
    assert len(found.boxes) >= 1 and found.box_scores[0] > 0.5
    assert found.pose.xy.shape == (len(found.boxes), NUM_JOINTS, 2)
    assert np.all(found.pose.scores[:, [INDEX["neck"], INDEX["head_top"]]] == 0)

    top_down = yolo.predict(frame60, largest_box[None])
    largest = np.argmax(np.prod(found.boxes[:, 2:] - found.boxes[:, :2], axis=1))
    confident = (top_down.scores[0] > 0.5) & (found.pose.scores[largest] > 0.5)
    error = np.linalg.norm(top_down.xy[0] - found.pose.xy[largest], axis=-1)[confident]
    assert confident.sum() >= 8 and np.median(error) < 0.05 * largest_box[3]


def test_yolo_detect_conf_sets_the_lowest_box_score_of_its_own_detection_only(
    yolo, yolo_pose_weights, frame60, largest_box
):
    best = yolo.detect_people(frame60).box_scores.max()
    strict = YoloPoseTeacher(yolo_pose_weights, detect_conf=min(best + 0.01, 0.99))
    assert len(strict.detect_people(frame60).boxes) == 0
    np.testing.assert_allclose(
        strict.predict(frame60, largest_box[None]).xy, yolo.predict(frame60, largest_box[None]).xy
    )


def test_movenet_finds_the_person_in_its_box(frame60, largest_box):
    if not DEFAULT_MOVENET.is_file():
        pytest.skip(f"{DEFAULT_MOVENET} missing")
    pose = MoveNetTeacher().predict(frame60, largest_box[None])
    coco = [INDEX[name] for name in COCO17]
    assert pose.scores[0, coco].mean() > 0.3
    assert np.all(_inside(pose.xy[0, coco], largest_box)[pose.scores[0, coco] > 0.3])
    assert np.all(np.isnan(pose.gflops)) and pose.scores[0, INDEX["neck"]] == 0


def test_fused_teachers_label_like_the_corpus(yolo, frame60, largest_box):
    if not DEFAULT_MOVENET.is_file():
        pytest.skip(f"{DEFAULT_MOVENET} missing")
    movenet = MoveNetTeacher()
    fused = FusedTeachers(yolo, movenet).predict(frame60, largest_box[None])
    first, second = yolo.predict(frame60, largest_box[None]), movenet.predict(frame60, largest_box[None])
    xy, weight = fuse_teachers(
        first.xy[0], first.scores[0], second.xy[0], second.scores[0], largest_box[2:].prod()
    )
    np.testing.assert_allclose(fused.xy[0], xy)
    np.testing.assert_allclose(fused.scores[0], weight)
    coco = [INDEX[name] for name in COCO17]
    assert weight[coco].mean() > 0.5 and np.all(_inside(xy[coco], largest_box)[weight[coco] > 0.3])


def test_a_missing_teacher_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "teacher.onnx"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        MoveNetTeacher(missing)
    with pytest.raises(FileNotFoundError, match="teacher.pt"):
        YoloPoseTeacher(tmp_path / "teacher.pt")


def test_label_a_folder_of_frames(yolo, sample_video, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in (60, 61):
        cv2.imwrite(str(folder / f"{index}.jpg"), _frame(sample_video, index))
    summary = label_images(yolo, folder, tmp_path / "labels" / "ann.json")
    assert summary.images == 2 and summary.people >= 2 and summary.image_dir == folder

    data = json.loads(summary.out_json.read_text())
    assert data["categories"][0]["keypoints"] == list(JOINTS)
    for ann in data["annotations"]:
        keypoints = np.reshape(ann["keypoints"], (-1, 3))
        scores = np.array(ann["keypoint_scores"])
        assert len(scores) == NUM_JOINTS and set(keypoints[:, 2]) <= {0, 2}
        np.testing.assert_array_equal(keypoints[:, 2] == 2, scores >= 0.3)
    people = load_people(summary.out_json, summary.image_dir)
    assert len(people) == summary.people and all(p.image_path.startswith(str(folder)) for p in people)


def test_label_a_video_keeps_every_kth_frame(yolo, frame60, tmp_path):
    video = tmp_path / "clip.avi"
    small = cv2.resize(frame60, (442, 248))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (442, 248))
    for _ in range(7):
        writer.write(small)
    writer.release()
    summary = label_images(yolo, video, tmp_path / "out" / "ann.json", every=5)
    assert summary.images == 2 and summary.image_dir == tmp_path / "out" / "images"
    assert sorted(p.name for p in summary.image_dir.iterdir()) == ["frame_000000.jpg", "frame_000005.jpg"]


class FixedTeacher:
    """Puts every COCO-17 joint at (1000 + j, 2000 + j), confident except the right ear."""

    name = "fixed"
    joints = COCO17

    def predict(self, image_bgr, boxes_xywh, knob=None):
        n = len(boxes_xywh)
        xy = np.zeros((n, NUM_JOINTS, 2))
        xy[:] = np.column_stack([1000 + np.arange(NUM_JOINTS), 2000 + np.arange(NUM_JOINTS)])
        scores = np.isin(np.array(JOINTS), COCO17).astype(np.float64)[None].repeat(n, 0) * 0.9
        scores[:, INDEX["right_ear"]] = 0.1
        return Predictions(xy, scores, np.full(n, np.nan))


def test_fill_only_keeps_human_labels_and_fills_missing_joints(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((120, 100, 3), np.uint8))
    human = np.column_stack([10 + np.arange(14), 50 + np.arange(14), np.full(14, 2)])
    human[LSP_NAMES.index("left_knee")] = 0  # left unlabelled by the annotator
    human[LSP_NAMES.index("neck"), 2] = 1
    ann = {
        "id": 5,
        "image_id": 1,
        "category_id": 1,
        "bbox": [5, 5, 60, 90],
        "area": 3000,
        "keypoints": human.ravel().tolist(),
    }
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 120}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "person", "keypoints": list(LSP_NAMES)}],
    }
    (tmp_path / "human.json").write_text(json.dumps(data))

    summary = label_images(
        FixedTeacher(), tmp_path, tmp_path / "filled.json", fill_only=tmp_path / "human.json"
    )
    (out,) = json.loads(summary.out_json.read_text())["annotations"]
    keypoints = np.reshape(out["keypoints"], (NUM_JOINTS, 3))
    scores = np.array(out["keypoint_scores"])
    for position, name in enumerate(LSP_NAMES):  # human joints: as labelled, unlabelled ones stay so
        np.testing.assert_array_equal(keypoints[INDEX[name]], human[position])
        assert scores[INDEX[name]] == (1.0 if human[position, 2] > 0 else 0.0)
    for name in FACE:
        j = INDEX[name]
        if name == "right_ear":  # below the confidence threshold: not a label, but its score is kept
            np.testing.assert_array_equal(keypoints[j], [0, 0, 0])
            assert scores[j] == pytest.approx(0.1)
        else:
            np.testing.assert_array_equal(keypoints[j], [1000 + j, 2000 + j, 2])
            assert scores[j] == pytest.approx(0.9)
    assert out["id"] == 5 and out["bbox"] == [5, 5, 60, 90] and out["area"] == 3000
