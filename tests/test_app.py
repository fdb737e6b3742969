"""The desktop viewer, headless: a synthetic clip, a fake detector and tiny random models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app.main_window import OVERLAYS, MainWindow, window_from_args
from poseapp.cli import build_parser, wants_gui
from poseapp.io.video import VideoWriter, probe
from poseapp.models import EMGPose, EViTPose, ViTPose, create_model, save_model
from poseapp.models.vit import ViTSize
from poseapp.results import Detection
from poseapp.runtime.budget import LatencyModel
from poseapp.runtime.pipeline import PipelineConfig, PosePipeline
from poseapp.runtime.precision import resolve_precision
from poseapp.runtime.render import Overlays, draw_result

TINY = ViTSize(48, 12, 3)
W, H = 320, 240
FRAMES = 60
BOX = np.array([110.0, 30.0, 210.0, 230.0])
WAIT_MS = 15000
"""Generous, for a busy machine: every wait ends as soon as its condition holds."""


def fake_detector(image: np.ndarray) -> list[Detection]:
    return [Detection(BOX.copy(), 0.9)]


def make_factory(budget_ms: float | None):
    """Pipelines by checkpoint name: "emg*" an EMGPose pinned at eta 1.0 (the fine stage always runs),
    "vit*" a ViTPose (no dial) under ``budget_ms``, anything else an EViTPose, under ``budget_ms`` with a
    latency model that makes the choice depend on the budget alone (or pinned at keep ratio 0.5)."""

    def factory(weights: str) -> PosePipeline:
        if Path(weights).name.startswith("emg"):
            return PosePipeline(PipelineConfig(knob=1.0), fake_detector, model=EMGPose(TINY, 19))
        if Path(weights).name.startswith("vit"):
            latency = LatencyModel([1.0], [1.0], [10.0])
            cfg = PipelineConfig(budget_ms=budget_ms)
            return PosePipeline(cfg, fake_detector, model=ViTPose(TINY, 19), latency=latency)
        # The online correction stays in [1/2, 2]: 5 ms fits nothing (-> 0.25), 200 ms fits 1.0.
        latency = LatencyModel([0.25, 0.5, 1.0], [1.0, 10.0, 30.0], [0.0, 0.0, 0.0])
        cfg = PipelineConfig(budget_ms=budget_ms, knob=0.5)
        return PosePipeline(cfg, fake_detector, model=EViTPose(TINY, 19), latency=latency)

    return factory


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, (H, W, 3), dtype=np.uint8)
    with VideoWriter(path, W, H, 25) as writer:
        for i in range(FRAMES):
            image = background.copy()
            cv2.rectangle(image, (140 + i % 5, 40), (180 + i % 5, 220), (150, 160, 170), -1)
            writer.write(image)
    return path


@pytest.fixture
def open_window(qtbot, tmp_path, clip):
    def open_(source: str | Path = clip, budget_ms: float | None = None) -> MainWindow:
        names = ("evit.safetensors", "emg.safetensors", "vit.safetensors")
        weights = [str(tmp_path / name) for name in names]
        window = MainWindow(
            make_factory(budget_ms),
            weights,
            str(source),
            weights_dir=tmp_path / "weights",
            budget_ms=budget_ms,
            overlays=Overlays(min_score=0.0),  # random models are never confident
            out_dir=tmp_path,
        )
        qtbot.addWidget(window)
        window.show()
        window.start()
        return window

    return open_


def wait_idle(qtbot, window: MainWindow, action) -> None:
    """Run ``action`` and wait until the worker has stopped (all its frames delivered)."""
    with qtbot.waitSignal(window.worker.waiting, timeout=WAIT_MS):
        action()


def test_frames_are_drawn_and_plotted(qtbot, open_window) -> None:
    window = open_window()
    qtbot.waitUntil(lambda: window.frames_shown >= 2, timeout=WAIT_MS)
    assert window.image_item.image.shape == (H, W, 3)
    counts = {key: len(curve.getData()[0]) for key, curve in window.plots.curves.items()}
    shown = window.frames_shown
    qtbot.waitUntil(lambda: window.frames_shown >= shown + 2, timeout=WAIT_MS)
    assert window.last_result.frame.index >= 3
    for key, curve in window.plots.curves.items():
        assert len(curve.getData()[0]) > counts[key], key
    precision = resolve_precision("auto", torch.device("cpu"))
    expected = f"cpu {precision} | EViTPose | detector every 5 frames | dropped 0"
    assert window.status_info.text().startswith(expected)


def test_overlay_toggles_redraw_and_reach_the_worker(qtbot, open_window, tmp_path) -> None:
    window = open_window()
    qtbot.waitUntil(lambda: bool(window.last_result and window.last_result.people), timeout=WAIT_MS)
    wait_idle(qtbot, window, window.pause_button.click)
    window.activateWindow()
    qtbot.waitActive(window)
    for name, _, key in reversed(OVERLAYS):  # joint confidence shows only while skeletons are drawn
        if name in ("granularity", "merges", "windows"):  # EMGPose's and UniTransPose's records
            continue
        before, checked = window.last_image.copy(), window.overlay_boxes[name].isChecked()
        qtbot.keyClick(window, key.lower())
        assert window.overlay_boxes[name].isChecked() is not checked, name
        assert not np.array_equal(before, window.last_image), name

    # Step exactly one frame: the worker draws it with the toggled overlays.
    shown, index = window.frames_shown, window.last_result.frame.index
    wait_idle(qtbot, window, window.step_button.click)
    result = window.last_result
    assert (window.frames_shown, result.frame.index) == (shown + 1, index + 1)
    assert np.array_equal(window.last_image, draw_result(result.frame.image, result, window.overlays))

    # EMGPose at eta 1.0 runs its fine stage: the granularity map and the merged tokens show.
    with qtbot.waitSignal(window.worker.model_loaded, timeout=WAIT_MS):
        emg = str((tmp_path / "emg.safetensors").resolve())
        window.model_box.setCurrentIndex(window.model_box.findData(emg))
    assert window.manual_radio.text().startswith("Manual eta") and window.knob_value() == 1.0
    wait_idle(qtbot, window, window.step_button.click)
    assert window.last_result.people[0].record.granularity.any()
    for name, key in (("granularity", "g"), ("merges", "m")):
        before = window.last_image.copy()
        qtbot.keyClick(window, key)
        assert window.overlay_boxes[name].isChecked(), name
        assert not np.array_equal(before, window.last_image), name


def test_budget_slider_drives_the_knob_and_manual_slider_pins_it(qtbot, open_window) -> None:
    window = open_window(budget_ms=50)
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=WAIT_MS)
    assert window.budget_radio.isChecked() and window.knob_group.isEnabled()
    wait_idle(qtbot, window, window.pause_button.click)
    window.budget_slider.setValue(5)
    wait_idle(qtbot, window, window.step_button.click)  # commands posted before a step apply to it
    assert window.last_result.knob == 0.25
    window.budget_slider.setValue(200)
    wait_idle(qtbot, window, window.step_button.click)
    assert window.last_result.knob == 1.0
    assert window.plots.budget_line.isVisible() and window.plots.budget_line.value() == 200

    window.knob_slider.setValue(40)
    assert window.manual_radio.isChecked() and not window.plots.budget_line.isVisible()
    value = window.knob_value()
    assert value == pytest.approx(0.55)
    wait_idle(qtbot, window, window.step_button.click)
    controller = window.worker.pipeline.controller
    assert controller.is_fixed and controller.last_value == pytest.approx(value)
    assert window.last_result.knob == pytest.approx(value)


def test_a_model_without_a_dial_keeps_the_budget_but_not_the_slider(qtbot, open_window, tmp_path) -> None:
    window = open_window(budget_ms=50)
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=WAIT_MS)
    with qtbot.waitSignal(window.worker.model_loaded, timeout=WAIT_MS):
        vit = str((tmp_path / "vit.safetensors").resolve())
        window.model_box.setCurrentIndex(window.model_box.findData(vit))
    assert window.knob_group.isEnabled() and window.budget_radio.isEnabled()
    assert not window.knob_slider.isEnabled() and window.manual_radio.text() == "Every person, every frame"
    wait_idle(qtbot, window, window.pause_button.click)
    assert not window.worker.pipeline.controller.is_fixed  # people in turn when they do not all fit
    window.manual_radio.setChecked(True)
    wait_idle(qtbot, window, window.step_button.click)
    assert window.worker.pipeline.controller.is_fixed and window.last_result.knob == 1.0
    window.budget_radio.setChecked(True)
    wait_idle(qtbot, window, window.step_button.click)
    assert not window.worker.pipeline.controller.is_fixed and window.last_result.knob == 1.0


def test_flip_toggle_doubles_the_pose_cost_and_survives_a_model_switch(qtbot, open_window, tmp_path) -> None:
    window = open_window()
    qtbot.waitUntil(lambda: bool(window.last_result and window.last_result.people), timeout=WAIT_MS)
    wait_idle(qtbot, window, window.pause_button.click)
    wait_idle(qtbot, window, window.step_button.click)
    plain = window.last_result
    window.flip_box.setChecked(True)
    wait_idle(qtbot, window, window.step_button.click)
    flipped = window.last_result
    assert len(flipped.people) == len(plain.people) and flipped.gflops == pytest.approx(2 * plain.gflops)
    with qtbot.waitSignal(window.worker.model_loaded, timeout=WAIT_MS):
        emg = str((tmp_path / "emg.safetensors").resolve())
        window.model_box.setCurrentIndex(window.model_box.findData(emg))
    assert window.worker.pipeline.cfg.flip


def test_missing_webcam_is_shown_and_another_source_still_plays(qtbot, open_window, clip) -> None:
    window = open_window(source="99")
    qtbot.waitUntil(lambda: not window.message.isHidden(), timeout=WAIT_MS)
    assert "webcam" in window.message.text() and "webcam" in window.statusBar().currentMessage()
    window.open_source(str(clip))
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=WAIT_MS)
    assert window.message.isHidden()


def test_record_snapshot_and_close_joins_every_thread(qtbot, open_window, tmp_path) -> None:
    window = open_window()
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=WAIT_MS)
    window.record_button.click()
    shown = window.frames_shown
    qtbot.waitUntil(lambda: window.frames_shown >= shown + 3, timeout=WAIT_MS)
    snapshot = window.snapshot()
    assert cv2.imread(str(snapshot)).shape == (H, W, 3)

    worker, capture = window.worker, window.worker.capture
    assert worker.isRunning() and capture.is_alive()
    window.close()
    assert not worker.isRunning() and not capture.is_alive()
    (recording,) = tmp_path.glob("poseapp-*.mp4")
    assert probe(str(recording)).frames >= 2


def test_every_run_flag_reaches_the_viewer(qtbot, tmp_path, clip, yolo_pose_weights) -> None:
    """``main.py --gui`` with the run options: the window's pipeline is the one ``--video`` would build."""
    weights = tmp_path / "evitpose_t.safetensors"
    save_model(create_model("evitpose_t"), weights)
    argv = [
        "--gui", "--video", str(clip), "--weights", str(weights), "--detector", str(yolo_pose_weights),
        "--device", "cpu", "--detect-every", "3", "--no-smooth", "--flip", "--precision", "fp32",
        "--overlay", "patches", "grid", "--threads", "2", "--keep-ratio", "0.6",
    ]  # fmt: skip
    assert wants_gui(argv)
    window = window_from_args(build_parser().parse_args(argv))
    qtbot.addWidget(window)
    assert torch.get_num_threads() == 2
    assert window.overlays.patches and window.overlays.granularity and not window.overlays.merges
    assert window.flip_box.isChecked() and window.manual_radio.isChecked()
    with qtbot.waitSignal(window.worker.model_loaded, timeout=WAIT_MS):
        window.start()
    pipeline = window.worker.pipeline
    cfg = pipeline.cfg
    assert (cfg.weights, cfg.device, cfg.detect_every) == (str(weights), "cpu", 3)
    assert not cfg.smoothing and not pipeline.smoother.enabled
    assert cfg.flip and cfg.budget_ms is None and cfg.knob == pytest.approx(0.6)
    assert pipeline.precision == "fp32" and pipeline.detector.precision == "fp32"
    assert pipeline.controller.is_fixed and pipeline.controller.choose(1) == pytest.approx(0.6)
    assert window.worker.stop(WAIT_MS)  # the first detector call may take longer than closing waits

    budget = window_from_args(build_parser().parse_args(["--weights", str(weights), "--budget-ms", "40"]))
    qtbot.addWidget(budget)
    assert budget.budget_radio.isChecked() and budget.budget_slider.value() == 40
