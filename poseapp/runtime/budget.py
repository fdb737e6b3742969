"""Latency budget control: pick the most accurate knob value whose pose time for the people in view fits.

``LatencyModel`` predicts the milliseconds of one batched pose call of ``n`` crops at a knob value as
``a_k + b_k * n``, a line fitted per value of a grid from timings taken at start-up, scaled by one factor
that follows the measured times online (thermal throttling and other load slow every value alike), and by
a second one on frames whose pose call shares the machine with the next frame's detection (the pipeline
runs it beside the poses: on a small machine that call is then markedly slower, every few frames).
``BudgetController`` turns the prediction into a choice each frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from poseapp.models.knob import Knob


def fit_line(ns: Sequence[float], ms: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``ms ~ a + b * n``."""
    ns = np.asarray(ns, dtype=np.float64)
    design = np.stack([np.ones_like(ns), ns], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(ms, dtype=np.float64), rcond=None)
    return float(a), float(b)


class LatencyModel:
    """Predicted milliseconds of a pose batch per knob value; values between grid points interpolate."""

    def __init__(
        self, grid: Sequence[float], intercepts: Sequence[float], slopes: Sequence[float], rate: float = 0.1
    ):
        self.grid = np.asarray(grid, dtype=np.float64)
        self.intercepts = np.asarray(intercepts, dtype=np.float64)
        self.slopes = np.asarray(slopes, dtype=np.float64)
        self.rate = rate
        """Weight of one observation in the moving average of the correction factor."""
        self.correction = 1.0
        """Measured / calibrated time, an exponential moving average in log space."""
        self.beside_detector = 1.0
        """How much slower a call is while the detector runs beside it, relative to ``correction``: an
        exponential moving average in log space over those calls."""

    @classmethod
    def calibrate(
        cls,
        measure: Callable[[float, int], float],
        knob: Knob,
        batch_sizes: Sequence[int] = (1, 4),
        values: int = 5,
    ) -> LatencyModel:
        """Time ``measure(value, n)`` (ms) at ``values`` knob values and each batch size; fit the lines."""
        if len(set(batch_sizes)) < 2:
            raise ValueError("calibration needs at least two distinct batch sizes")
        grid = knob.grid(values)
        lines = [fit_line(batch_sizes, [measure(float(v), n) for n in batch_sizes]) for v in grid]
        intercepts, slopes = zip(*lines, strict=True)
        return cls(grid, intercepts, slopes)

    def to_dict(self) -> dict[str, list[float]]:
        """The calibration (not the online correction), as JSON-ready lists."""
        return {
            "grid": self.grid.tolist(),
            "intercepts": self.intercepts.tolist(),
            "slopes": self.slopes.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> LatencyModel:
        """Inverse of ``to_dict``; ValueError on lists that do not make a model."""
        grid, intercepts, slopes = (
            np.asarray(data[k], dtype=np.float64) for k in ("grid", "intercepts", "slopes")
        )
        if not (grid.ndim == 1 and len(grid) >= 1 and grid.shape == intercepts.shape == slopes.shape):
            raise ValueError("a latency model needs grid, intercepts and slopes of one equal length")
        if np.any(np.diff(grid) <= 0) or not np.all(np.isfinite(np.concatenate([grid, intercepts, slopes]))):
            raise ValueError("a latency model needs an increasing grid and finite numbers")
        return cls(grid, intercepts, slopes)

    def calibrated_ms(self, value: float, n: int) -> float:
        """The start-up prediction, without the online correction."""
        per_value = self.intercepts + self.slopes * n
        return float(np.interp(value, self.grid, per_value))

    def predict(self, value: float, n: int, beside_detector: bool = False) -> float:
        """Predicted milliseconds of a batch of ``n`` crops at knob ``value`` (``beside_detector``: while
        the detector runs beside it)."""
        factor = self.correction * (self.beside_detector if beside_detector else 1.0)
        return factor * self.calibrated_ms(value, n)

    def observe(self, value: float, n: int, ms: float, beside_detector: bool = False) -> None:
        """Move the correction factor towards ``ms`` / calibrated prediction; with ``beside_detector``,
        the detector's factor towards what is left of that ratio after the correction.

        Each ratio is clipped to [1/2, 2] first, so one hiccup (a garbage collection, a page fault) moves
        a factor by at most ``2 ** rate``; a lasting change still converges in a few dozen frames.
        """
        expected = self.calibrated_ms(value, n)
        if n <= 0 or expected <= 0 or not ms > 0:
            return
        log_ratio = float(np.clip(math.log(ms / expected), -math.log(2), math.log(2)))
        log_c = math.log(self.correction)
        if beside_detector:
            log_d = math.log(self.beside_detector)
            self.beside_detector = math.exp(log_d + self.rate * (log_ratio - log_c - log_d))
        else:
            self.correction = math.exp(log_c + self.rate * (log_ratio - log_c))


class BudgetController:
    """Chooses the knob value for each frame from the number of people and the latency budget.

    Adaptive mode: the largest grid value whose predicted time for ``n`` crops is <= ``margin *
    budget_ms``, or the cheapest value when none fits. Hysteresis (a Schmitt trigger on the prediction):
    keeping the current value, or stepping down, needs the prediction <= ``margin * budget_ms``; stepping
    *up* needs the higher value to fit ``(1 - hysteresis) * margin * budget_ms``. So the knob drops as soon
    as the current value no longer fits, but returns only once there is clear room, and a prediction
    sitting at the boundary cannot make it alternate frame by frame.

    When even the cheapest value cannot pose everyone in time, ``capacity`` says how many people fit; the
    pipeline poses that many (those waiting longest) and carries the others' last poses along their tracks.
    A model without a dial (``low == high``, an ONNX graph) has a one-value grid: the budget then only sets
    how many people a frame are posed.

    Fixed mode (``BudgetController.fixed``): always the pinned value, so the pipeline has one code path.
    """

    def __init__(
        self,
        knob: Knob,
        model: LatencyModel | None,
        budget_ms: float,
        margin: float = 0.9,
        hysteresis: float = 0.1,
    ):
        self.knob = knob
        self.model = model
        """None only in fixed mode without calibration (no predictions then)."""
        self.budget_ms = budget_ms
        self.margin = margin
        self.hysteresis = hysteresis
        self.pinned: float | None = None
        self.last_value: float | None = None
        self.last_predicted_ms = math.nan
        self.last_measured_ms = math.nan

    @classmethod
    def fixed(cls, knob: Knob, value: float, model: LatencyModel | None = None) -> BudgetController:
        """A controller that always returns ``knob.clamp(value)`` (predicting times if given a model)."""
        controller = cls(knob, model, budget_ms=math.inf)
        controller.pinned = knob.clamp(value)
        return controller

    @property
    def is_fixed(self) -> bool:
        return self.pinned is not None

    def choose(self, n_people: int, beside_detector: bool = False) -> float:
        """The knob value for ``n_people`` crops (``beside_detector``: posed while the detector runs beside
        them); also sets ``last_value`` and ``last_predicted_ms``."""
        if self.pinned is not None:
            value = self.pinned
        elif self.model is None:
            raise ValueError("an adaptive BudgetController needs a LatencyModel")
        else:
            value = self._adaptive(n_people, self.model, beside_detector)
        self.last_value = value
        self.last_predicted_ms = (
            math.nan if self.model is None else self.model.predict(value, n_people, beside_detector)
        )
        return value

    def capacity(self, n_people: int, beside_detector: bool = False) -> int:
        """How many of ``n_people`` crops to pose this frame: all of them in fixed mode or when they fit
        the budget at the cheapest knob value, else the most that fit (at least 1)."""
        if self.pinned is not None or self.model is None or n_people <= 1:
            return n_people
        cheapest, limit = float(self.model.grid[0]), self.margin * self.budget_ms
        fits = [
            m for m in range(1, n_people + 1) if self.model.predict(cheapest, m, beside_detector) <= limit
        ]
        return max(fits, default=1)

    def _adaptive(self, n: int, model: LatencyModel, beside_detector: bool) -> float:
        limit = self.margin * self.budget_ms
        current = self.last_value
        for v in model.grid[::-1]:
            fits = limit * (1 - self.hysteresis) if current is not None and v > current else limit
            if model.predict(float(v), n, beside_detector) <= fits:
                return float(v)
        return float(model.grid[0])

    def record(self, value: float, n: int, ms: float, beside_detector: bool = False) -> None:
        """Report the measured time of a pose batch run at ``value`` with ``n`` crops."""
        self.last_measured_ms = ms
        if self.model is not None:
            self.model.observe(value, n, ms, beside_detector)
