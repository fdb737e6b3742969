"""PersonDetector on the sample clip, on an empty frame, and on bad weight files (no network either way)."""

import socket

import cv2
import numpy as np
import pytest

from poseapp.runtime.detect import DEFAULT_DETECTOR, PersonDetector


@pytest.fixture(scope="module")
def detector(yolo_pose_weights):
    return PersonDetector(yolo_pose_weights)


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_default_detector_is_the_fetched_pose_model():
    assert DEFAULT_DETECTOR.is_absolute() and DEFAULT_DETECTOR.parts[-3:] == (
        "assets",
        "fetched",
        "yolo11n-pose.pt",
    )


@pytest.fixture(scope="module")
def frame(sample_video):
    capture = cv2.VideoCapture(str(sample_video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 60)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return cv2.resize(frame, (1280, round(frame.shape[0] * 1280 / frame.shape[1])))


def test_finds_people_in_the_sample_clip(detector, frame):
    h, w = frame.shape[:2]

    people = detector(frame)
    assert len(people) >= 1
    for person in people:
        x0, y0, x1, y1 = person.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert 0.0 <= person.score <= 1.0
    assert [p.score for p in people] == sorted((p.score for p in people), reverse=True)


def test_boxes_without_the_keypoint_branch_match_ultralytics(yolo_pose_weights, frame):
    from ultralytics import YOLO

    ours = PersonDetector(yolo_pose_weights, precision="fp32")
    assert "forward" in vars(ours._net.model[-1])  # the pose head runs its box and class branches only
    theirs = YOLO(str(yolo_pose_weights), verbose=False).predict(frame, conf=ours.conf, verbose=False)[0]
    expected = theirs.boxes.xyxy.numpy()[np.argsort(-theirs.boxes.conf.numpy())]
    found = np.stack([p.box for p in ours(frame)])
    assert found.shape == expected.shape
    np.testing.assert_allclose(found, expected, atol=1.0)


def test_black_frame_has_nobody(detector):
    assert detector(np.zeros((480, 640, 3), np.uint8)) == []


def test_missing_weights_name_the_path(tmp_path, no_network):
    missing = tmp_path / "yolo11n.pt"
    with pytest.raises(FileNotFoundError, match="yolo11n.pt"):
        PersonDetector(missing)


def test_corrupt_weights_raise_value_error(tmp_path, no_network):
    corrupt = tmp_path / "x.pt"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="x.pt"):
        PersonDetector(corrupt)
