"""The desktop viewer: the annotated video, source / model / knob / overlay controls and live plots.

Everything heavy runs in ``worker.Worker``; this module only turns widgets into worker commands and shows
what the worker emits. ``run_gui`` is the entry point ``main.py`` (``poseapp.cli.launch``) calls.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pyqtgraph as pg
import torch
from PyQt6.QtCore import QRectF, Qt, QTimer
from PyQt6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QRadioButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from poseapp.io.video import SourceInfo
from poseapp.models.knob import FIXED
from poseapp.models.zoo import WeightsError, describe_weights
from poseapp.results import FrameResult
from poseapp.runtime.build import builder_from_args, overlays_from_args
from poseapp.runtime.pipeline import DEFAULT_WEIGHTS
from poseapp.runtime.render import Overlays, draw_result
from poseapp.runtime.video_job import pose_threads

from .plots import PlotsPanel
from .worker import ModelInfo, PipelineFactory, Worker

OVERLAYS = (
    ("skeleton", "Skeleton", "S"),
    ("boxes", "Boxes", "B"),
    ("ids", "Track ids", "I"),
    ("confidence", "Joint confidence", "C"),
    ("patches", "Pruned patches", "P"),
    ("granularity", "Granularity map", "G"),
    ("merges", "Merged tokens", "M"),
    ("windows", "Windows, joint attention", "W"),
    ("hud", "HUD", "H"),
)
"""(Overlays field, checkbox label, shortcut key)."""
BUDGET_MS = (5, 200)
DEFAULT_BUDGET_MS = 33
KNOB_STEPS = 100
"""Manual slider positions across the model's knob range."""
VIDEO_FILTER = "Videos (*.mp4 *.mov *.avi *.mkv *.webm *.m4v);;All files (*)"


def checkpoints(weights_dir: Path, extra: Sequence[str]) -> list[tuple[str, str]]:
    """(label, absolute path) of every checkpoint (or ONNX export) in ``weights_dir`` and of ``extra``,
    labelled with the arch stored in it."""
    found = sorted([*weights_dir.glob("*.safetensors"), *weights_dir.glob("*.onnx")])
    paths = dict.fromkeys(p.resolve() for p in [*found, *map(Path, extra)])
    entries = []
    for path in paths:
        try:
            arch = describe_weights(path)
        except WeightsError:
            arch = "not a checkpoint" if path.exists() else "missing"
        entries.append((f"{path.name} ({arch})", str(path)))
    return entries


class MainWindow(QMainWindow):
    """The viewer around one ``Worker``; ``pipeline_factory`` builds the pipeline for a checkpoint path
    (tests pass a tiny model and a fake detector). Nothing runs before ``start()``."""

    def __init__(
        self,
        pipeline_factory: PipelineFactory,
        weights: Sequence[str],
        source: str | None = "0",
        *,
        weights_dir: Path = DEFAULT_WEIGHTS.parent,
        budget_ms: float | None = None,
        knob: float | None = None,
        flip: bool = False,
        overlays: Overlays | None = None,
        out_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("PoseApp")
        self.overlays = overlays or Overlays()
        self.out_dir = Path(out_dir or Path.cwd())
        self.last_image: np.ndarray | None = None
        """The annotated BGR frame on screen."""
        self.last_result: FrameResult | None = None
        self.frames_shown = 0
        self._model: ModelInfo | None = None
        self._dropped = 0
        self.worker = Worker(pipeline_factory, self.overlays, self)

        self.video = pg.GraphicsLayoutWidget()
        self.view = self.video.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("background: #b3261e; color: white; padding: 6px; font-weight: bold;")
        self.message.hide()
        self.plots = PlotsPanel()
        self.status_info = QLabel()
        self.statusBar().addPermanentWidget(self.status_info)
        groups = (self._source_group(), self._model_group(weights_dir, weights), self._knob_group(budget_ms))
        self._layout(*groups, self._overlay_group(), self._output_group())

        self.worker.frame_ready.connect(self._on_frame)
        self.worker.error.connect(self._on_error)
        self.worker.model_loaded.connect(self._on_model_loaded)
        self.worker.source_opened.connect(self._on_source_opened)
        self.worker.source_ended.connect(self._on_source_ended)
        self.worker.recording_finished.connect(self._on_recording_finished)
        self.flip_box.setChecked(flip)
        if budget_ms is not None:
            self.worker.set_budget(float(budget_ms))
        self.plots.set_budget(budget_ms)
        if self.model_box.count():
            self.load_model(self.model_box.currentData(), knob)
        else:
            self._on_error(f"no checkpoint: pass one with --weights or put one in {weights_dir}")
        if source is not None:
            self.open_source(source)

    def start(self) -> None:
        """Start the worker on the commands posted so far; connect to its signals before, to see all."""
        self.worker.start()

    # ---- layout -------------------------------------------------------------------------------------

    def _layout(self, *groups: QGroupBox) -> None:
        video_panel = QWidget()
        column = QVBoxLayout(video_panel)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.message)
        column.addWidget(self.video, 1)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(video_panel)
        left.addWidget(self.plots)
        left.setSizes([700, 200])
        controls = QWidget()
        stack = QVBoxLayout(controls)
        for group in groups:
            stack.addWidget(group)
        stack.addStretch(1)
        controls.setFixedWidth(310)
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(controls)
        main.setStretchFactor(0, 1)
        self.setCentralWidget(main)

    def _source_group(self) -> QGroupBox:
        self.camera_spin = QSpinBox()
        self.camera_spin.setRange(0, 99)
        open_camera = QPushButton("Open webcam")
        open_camera.clicked.connect(lambda: self.open_source(str(self.camera_spin.value())))
        open_file = QPushButton("Open file…")
        open_file.clicked.connect(self._choose_file)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self.worker.set_paused)
        self.step_button = QPushButton("Step")
        self.step_button.clicked.connect(self._step)
        group = QGroupBox("Source")
        grid = QGridLayout(group)
        grid.addWidget(self.camera_spin, 0, 0)
        grid.addWidget(open_camera, 0, 1)
        grid.addWidget(open_file, 1, 0, 1, 2)
        grid.addWidget(self.pause_button, 2, 0)
        grid.addWidget(self.step_button, 2, 1)
        return group

    def _model_group(self, weights_dir: Path, weights: Sequence[str]) -> QGroupBox:
        self.model_box = QComboBox()
        for label, path in checkpoints(weights_dir, weights):
            self.model_box.addItem(label, path)
        if weights:
            self.model_box.setCurrentIndex(self.model_box.findData(str(Path(weights[0]).resolve())))
        self.model_box.currentIndexChanged.connect(lambda _: self.load_model(self.model_box.currentData()))
        self.flip_box = QCheckBox("Flip test (more accurate, 2x pose cost)")
        self.flip_box.toggled.connect(self.worker.set_flip)
        group = QGroupBox("Model")
        column = QVBoxLayout(group)
        column.addWidget(self.model_box)
        column.addWidget(self.flip_box)
        return group

    def _knob_group(self, budget_ms: float | None) -> QGroupBox:
        self.budget_radio = QRadioButton("Latency budget")
        self.manual_radio = QRadioButton("Manual knob")
        (self.budget_radio if budget_ms is not None else self.manual_radio).setChecked(True)
        self.budget_slider = QSlider(Qt.Orientation.Horizontal)
        self.budget_slider.setRange(*BUDGET_MS)
        self.budget_slider.setValue(round(budget_ms if budget_ms is not None else DEFAULT_BUDGET_MS))
        self.budget_label = QLabel(f"{self.budget_slider.value()} ms")
        self.knob_slider = QSlider(Qt.Orientation.Horizontal)
        self.knob_slider.setRange(0, KNOB_STEPS)
        self.knob_label = QLabel()
        self.budget_radio.toggled.connect(self._apply_knob_mode)
        self.budget_slider.valueChanged.connect(lambda _: self._slider_moved(self.budget_radio))
        self.knob_slider.valueChanged.connect(lambda _: self._slider_moved(self.manual_radio))
        self.knob_group = QGroupBox("Knob")
        self.knob_group.setEnabled(False)  # until a model is loaded
        grid = QGridLayout(self.knob_group)
        grid.addWidget(self.budget_radio, 0, 0, 1, 2)
        grid.addWidget(self.budget_slider, 1, 0)
        grid.addWidget(self.budget_label, 1, 1)
        grid.addWidget(self.manual_radio, 2, 0, 1, 2)
        grid.addWidget(self.knob_slider, 3, 0)
        grid.addWidget(self.knob_label, 3, 1)
        return self.knob_group

    def _overlay_group(self) -> QGroupBox:
        group = QGroupBox("Overlays")
        column = QVBoxLayout(group)
        self.overlay_boxes: dict[str, QCheckBox] = {}
        for name, label, key in OVERLAYS:
            box = QCheckBox(f"{label}  ({key})")
            box.setChecked(getattr(self.overlays, name))
            box.toggled.connect(lambda on, name=name: self._set_overlay(name, on))
            QShortcut(QKeySequence(key), self).activated.connect(box.toggle)
            column.addWidget(box)
            self.overlay_boxes[name] = box
        return group

    def _output_group(self) -> QGroupBox:
        self.record_button = QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._record)
        snapshot = QPushButton("Snapshot")
        snapshot.clicked.connect(self.snapshot)
        folder = QPushButton("Folder…")
        folder.clicked.connect(self._choose_folder)
        self.folder_label = QLabel(str(self.out_dir))
        self.folder_label.setWordWrap(True)
        group = QGroupBox("Output")
        column = QVBoxLayout(group)
        row = QHBoxLayout()
        for button in (self.record_button, snapshot, folder):
            row.addWidget(button)
        column.addLayout(row)
        column.addWidget(self.folder_label)
        return group

    # ---- user actions -------------------------------------------------------------------------------

    def open_source(self, spec: str) -> None:
        """Play a video file, image folder or webcam index instead of the current source."""
        self.statusBar().showMessage(f"opening {spec}…")
        self.worker.open_source(spec)

    def load_model(self, weights: str, knob: float | None = None) -> None:
        """Switch to a checkpoint (under a latency budget, its first load calibrates: seconds)."""
        self.statusBar().showMessage(f"loading {Path(weights).name}…")
        self.worker.load_model(weights, knob)

    def knob_value(self) -> float:
        """The manual slider's position in the loaded model's knob range."""
        knob = self._model.knob if self._model else FIXED
        return knob.low + (knob.high - knob.low) * self.knob_slider.value() / KNOB_STEPS

    def snapshot(self) -> Path | None:
        """Save the annotated frame on screen as a PNG in the output folder."""
        if self.last_image is None:
            self.statusBar().showMessage("no frame to save yet")
            return None
        path = self._output_path("png")
        if not cv2.imwrite(str(path), self.last_image):
            self._on_error(f"cannot write {path}")
            return None
        self.statusBar().showMessage(f"saved {path}")
        return path

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open video", str(self.out_dir), VIDEO_FILTER)
        if path:
            self.open_source(path)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save snapshots and recordings in", str(self.out_dir))
        if folder:
            self.out_dir = Path(folder)
            self.folder_label.setText(folder)

    def _output_path(self, suffix: str) -> Path:
        return self.out_dir / f"poseapp-{datetime.now():%Y%m%d-%H%M%S-%f}.{suffix}"

    def _step(self) -> None:
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(True)
        self.pause_button.blockSignals(False)
        self.worker.step()

    def _record(self, on: bool) -> None:
        if on:
            path = self._output_path("mp4")
            self.statusBar().showMessage(f"recording to {path}")
            self.worker.start_recording(str(path))
        else:
            self.worker.stop_recording()

    def _slider_moved(self, mode: QRadioButton) -> None:
        """Show the sliders' values; moving a slider selects its mode (applied by the radio's toggle)."""
        self.budget_label.setText(f"{self.budget_slider.value()} ms")
        self.knob_label.setText(f"{self.knob_value():.2f}")
        if mode.isChecked():
            self._apply_knob_mode()
        else:
            mode.setChecked(True)

    def _apply_knob_mode(self) -> None:
        if self.budget_radio.isChecked():
            budget = float(self.budget_slider.value())
            self.worker.set_budget(budget)
            self.plots.set_budget(budget)
        else:
            self.worker.set_knob(self.knob_value())
            self.plots.set_budget(None)

    def _set_overlay(self, name: str, on: bool) -> None:
        self.overlays = replace(self.overlays, **{name: on})
        self.worker.set_overlays(self.overlays)
        if self.last_result is not None:  # show the change at once, also while paused
            self._show(draw_result(self.last_result.frame.image, self.last_result, self.overlays))

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        """Stop the worker. One busy loading a model ends after the load: the owner of the window waits
        for ``worker`` before dropping it (see ``run_gui``)."""
        self.worker.stop()
        super().closeEvent(event)

    # ---- worker signals -----------------------------------------------------------------------------

    def _show(self, image: np.ndarray) -> None:
        self.last_image = image
        self.image_item.setImage(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), autoLevels=False)

    def _on_frame(self, image: np.ndarray, result: FrameResult) -> None:
        self.last_result, self._dropped = result, result.dropped
        self._show(image)
        self.frames_shown += 1
        self.plots.add(result)
        self._update_status()

    def _on_error(self, message: str) -> None:
        self.message.setText(message)
        self.message.show()
        self.statusBar().showMessage(message)

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self._model = info
        index = self.model_box.findData(info.weights)
        if index < 0:
            self.model_box.addItem(Path(info.weights).name, info.weights)
            index = self.model_box.count() - 1
        self.model_box.blockSignals(True)
        self.model_box.setCurrentIndex(index)
        self.model_box.blockSignals(False)
        knob = info.knob
        adjustable = knob.low < knob.high
        # A model without a dial keeps the budget (its people are then posed in turn) but not the slider.
        self.knob_group.setEnabled(True)
        self.knob_slider.setEnabled(adjustable)
        self.manual_radio.setText(
            f"Manual {knob.name} ({knob.low:g}–{knob.high:g})" if adjustable else "Every person, every frame"
        )
        if adjustable:
            value = info.pinned if info.pinned is not None else knob.default
            self.knob_slider.blockSignals(True)
            self.knob_slider.setValue(round((value - knob.low) / (knob.high - knob.low) * KNOB_STEPS))
            self.knob_slider.blockSignals(False)
        self.knob_label.setText(f"{self.knob_value():.2f}")
        self.plots.set_knob_name(knob.name)
        self.message.hide()
        self.statusBar().showMessage(f"model {info.arch} ready")
        self._update_status()

    def _on_source_opened(self, spec: str, info: SourceInfo) -> None:
        self.message.hide()
        self.plots.reset()
        self.view.setRange(QRectF(0, 0, info.width, info.height), padding=0)
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(False)
        self.pause_button.blockSignals(False)
        for button in (self.pause_button, self.step_button):
            button.setEnabled(not info.live)
        kind = "webcam" if info.live else "playing"
        self.statusBar().showMessage(f"{kind} {spec}: {info.width}x{info.height} at {info.fps:.3g} fps")

    def _on_source_ended(self, message: str) -> None:
        self.statusBar().showMessage(message)
        for button in (self.pause_button, self.step_button):
            button.setEnabled(False)

    def _on_recording_finished(self, path: str) -> None:
        self.record_button.blockSignals(True)
        self.record_button.setChecked(False)
        self.record_button.blockSignals(False)
        if path:
            self.statusBar().showMessage(f"saved {path}")

    def _update_status(self) -> None:
        text = f"dropped {self._dropped}"
        if self._model is not None:
            m = self._model
            text = f"{m.device} {m.precision} | {m.arch} | detector every {m.detect_every} frames | {text}"
        self.status_info.setText(text)


def qt_application() -> QApplication:
    """The QApplication, created without the Qt 5 plugin and font folders that importing opencv-python
    exports (PyQt6's Qt 6 would look there first)."""
    cv2_dir = os.path.dirname(cv2.__file__)
    for name in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        if os.environ.get(name, "").startswith(cv2_dir):
            del os.environ[name]
    return QApplication.instance() or QApplication(sys.argv[:1])


def window_from_args(args: argparse.Namespace) -> MainWindow:
    """The viewer as the run options say (``main.py [--gui] ...``), honouring them as ``--video`` does: the
    pipeline's (``runtime.build.builder_from_args``: weights, detector, device, precision, ``--detect-every``,
    ``--no-smooth``), ``--overlay`` and ``--threads``; ``--budget-ms``, ``--keep-ratio`` / ``--eta`` and
    ``--flip`` are the window's starting settings, which its controls then change. Needs the QApplication;
    nothing runs before ``start()``."""
    torch.set_num_threads(args.threads or pose_threads())
    return MainWindow(
        builder_from_args(args, runtime_knob=True),
        [args.weights],
        args.video or "0",
        budget_ms=args.budget_ms,
        knob=args.keep_ratio if args.keep_ratio is not None else args.eta,
        flip=args.flip,
        overlays=overlays_from_args(args),
    )


def run_gui(args: argparse.Namespace) -> int:
    """Open the viewer the run options describe (``window_from_args``) on ``--video`` (a video file, image
    folder or webcam index; none: webcam 0) and run Qt until the window closes; returns the exit code."""
    app = qt_application()
    window = window_from_args(args)
    window.resize(1500, 950)
    window.show()
    window.start()
    # Qt's event loop never hands control to Python on its own: a timer lets Ctrl+C close the window cleanly.
    signal.signal(signal.SIGINT, lambda *_: window.close())
    ticker = QTimer(window)
    ticker.timeout.connect(lambda: None)
    ticker.start(200)
    code = app.exec()
    window.worker.wait()
    return code
