"""The Python API (``from poseapp import Pose``): an image, given boxes, a clip from every kind of source."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from poseapp import FrameResult, Person, Pose
from poseapp.engine.evaluate import ModelEstimator
from poseapp.geometry import xyxy_to_xywh
from poseapp.io.video import VideoWriter, open_source
from poseapp.models import create_model, save_model
from poseapp.results import Detection
from poseapp.skeleton import JOINTS, NUM_JOINTS

W, H = 320, 240
BOXES = np.array([[20.0, 30.0, 110.0, 230.0], [170.0, 20.0, 260.0, 225.0]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sample_frames(sample_video) -> list[np.ndarray]:
    """The first 12 frames of the sample clip (one person, walking)."""
    with open_source(str(sample_video)) as source:
        return [frame.image for frame, _ in zip(source, range(12), strict=False)]


@pytest.fixture(scope="module")
def pose(yolo_pose_weights) -> Pose:
    """The shipped default model with yolo11n-pose, on the CPU."""
    return Pose(detector=yolo_pose_weights, device="cpu")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "evitpose_t.safetensors"
    save_model(create_model("evitpose_t"), path)
    return path


def no_detector(image: np.ndarray) -> list[Detection]:
    raise AssertionError("the detector ran")


def fixed_people(image: np.ndarray) -> list[Detection]:
    return [Detection(box.copy(), 0.9) for box in BOXES]


def test_an_image_gives_the_people_in_it(pose, sample_frames) -> None:
    image = sample_frames[0]
    people = pose(image)
    assert len(people) >= 1
    for person in people:
        assert isinstance(person, Person) and person.track_id is None
        assert person.box.shape == (4,) and person.keypoints.shape == (NUM_JOINTS, 2)
        assert person.scores.shape == (NUM_JOINTS,) and ((person.scores >= 0) & (person.scores <= 1)).all()
        x0, y0, x1, y1 = person.box
        confident = person.keypoints[person.scores > 0.5]
        assert len(confident) >= 10  # a real model on a real person
        inside = (confident >= [x0 - 20, y0 - 20]).all(axis=1) & (confident <= [x1 + 20, y1 + 20]).all(axis=1)
        assert inside.all()


def test_given_boxes_are_posed_top_down_without_the_detector(weights) -> None:
    pose = Pose(weights, detector=no_detector, device="cpu", precision="fp32")
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    people = pose(image, boxes=BOXES)
    assert [p.box.tolist() for p in people] == BOXES.tolist()
    assert all(p.keypoints.shape == (NUM_JOINTS, 2) and p.track_id is None for p in people)
    assert pose(image, boxes=np.zeros((0, 4))) == []
    # The same top-down step as the accuracy evaluation's.
    expected = ModelEstimator(pose.model, precision="fp32").predict(image, xyxy_to_xywh(BOXES))
    np.testing.assert_allclose(np.stack([p.keypoints for p in people]), expected.xy)
    np.testing.assert_allclose(np.stack([p.scores for p in people]), expected.scores)
    # Without boxes, the detector's are posed.
    detected = Pose(weights, detector=fixed_people, device="cpu", precision="fp32")(image)
    np.testing.assert_allclose(np.stack([p.keypoints for p in detected]), expected.xy)


def write_clip(path, images: list[np.ndarray]) -> None:
    with VideoWriter(path, images[0].shape[1], images[0].shape[0], 25) as writer:
        for image in images:
            writer.write(image)


def test_a_clip_from_every_kind_of_source_keeps_its_track_ids(weights, tmp_path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(40, 90, (H, W, 3), dtype=np.uint8) for _ in range(6)]
    write_clip(tmp_path / "clip.mp4", images)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"frame_{i}.png"), image)
    pose = Pose(weights, detector=fixed_people, device="cpu", detect_every=2)
    for source in (tmp_path / "clip.mp4", str(folder), images, iter(images)):
        results = list(pose.track(source))
        assert [r.frame.index for r in results] == list(range(len(images))), source
        ids = [[p.track_id for p in r.people] for r in results]
        assert len(set(ids[0])) == 2 and all(frame_ids == ids[0] for frame_ids in ids), (source, ids)
    with pytest.raises(TypeError, match="pose\\(image\\)"):
        next(pose.track(images[0]))


def test_a_result_plots_and_round_trips_through_json(pose, sample_frames) -> None:
    results = list(pose.track(sample_frames))
    assert len(results) == len(sample_frames)
    ids = {p.track_id for r in results for p in r.people}
    assert len(ids) == 1 and all(len(r.people) == 1 for r in results[1:])  # one person, one id throughout
    result = results[-1]
    image = result.plot()
    assert image.shape == result.frame.image.shape and not np.array_equal(image, result.frame.image)

    text = result.to_json()
    back = FrameResult.from_json(text)
    assert (back.frame.index, back.frame.time, back.knob) == (
        result.frame.index,
        result.frame.time,
        result.knob,
    )
    assert back.to_json() == text
    for got, want in zip(back.people, result.people, strict=True):
        assert got.track_id == want.track_id
        np.testing.assert_allclose(got.box, want.box, atol=1e-3)
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-3)
    assert __import__("json").loads(text)["keypoint_names"] == list(JOINTS)
    with pytest.raises(ValueError, match="no image"):
        back.plot()
    assert FrameResult.from_json(text, result.frame.image).plot().shape == image.shape
