"""Live plots of the last 30 s of frame statistics, by frame time."""

from __future__ import annotations

from collections import deque

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from poseapp.results import FrameResult

WINDOW_S = 30.0
SERIES = {
    "fps": "FPS",
    "pose_ms": "pose ms / frame",
    "gflops": "GFLOPs / frame",
    "knob": "knob",
    "people": "people in view",
}


def _sample(result: FrameResult) -> tuple[float, ...]:
    """One value per ``SERIES`` entry, in its order."""
    return result.fps, result.pose_ms, result.gflops, result.knob, float(len(result.people))


class PlotsPanel(pg.GraphicsLayoutWidget):
    """One small plot per statistic, x axes linked; the pose plot shows the latency budget as a line."""

    def __init__(self) -> None:
        super().__init__()
        self._times: deque[float] = deque()
        self._rows: deque[tuple[float, ...]] = deque()
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        for col, (key, title) in enumerate(SERIES.items()):
            plot = self.addPlot(row=0, col=col, title=title)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            plot.setLabel("bottom", "s")
            if self.plots:
                plot.setXLink(self.plots["fps"])
            self.plots[key] = plot
            self.curves[key] = plot.plot(pen=pg.mkPen((80, 180, 255), width=2))
        dashed = pg.mkPen((255, 90, 90), width=1, style=Qt.PenStyle.DashLine)
        self.budget_line = pg.InfiniteLine(angle=0, pen=dashed)
        self.budget_line.setVisible(False)
        self.plots["pose_ms"].addItem(self.budget_line)

    def add(self, result: FrameResult) -> None:
        """Append one frame's statistics and drop the samples older than ``WINDOW_S``."""
        now = result.frame.time
        self._times.append(now)
        self._rows.append(_sample(result))
        while self._times[0] < now - WINDOW_S:
            self._times.popleft()
            self._rows.popleft()
        times = np.fromiter(self._times, dtype=np.float64, count=len(self._times))
        values = np.array(self._rows, dtype=np.float64)
        for column, curve in enumerate(self.curves.values()):
            curve.setData(times, values[:, column])

    def reset(self) -> None:
        """Forget every sample (a new source starts its time at 0)."""
        self._times.clear()
        self._rows.clear()
        for curve in self.curves.values():
            curve.setData([], [])

    def set_budget(self, budget_ms: float | None) -> None:
        """Show the budget line at ``budget_ms``, or hide it (manual knob)."""
        self.budget_line.setVisible(budget_ms is not None)
        if budget_ms is not None:
            self.budget_line.setPos(budget_ms)

    def set_knob_name(self, name: str) -> None:
        self.plots["knob"].setTitle(f"knob ({name})")
