"""Temporal keypoint smoothing: the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A low-pass filter whose cutoff rises with speed: still joints are smoothed hard (no jitter) while fast ones
follow closely (little lag). ``min_cutoff`` (Hz) sets the jitter at rest, ``beta`` (per pixel/s) how fast
the cutoff opens with speed, ``d_cutoff`` (Hz) the smoothing of the speed estimate itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Exponential smoothing weight of the new sample for a first-order low-pass at ``cutoff`` Hz."""
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over a (J, 2) array of points.

    The speed driving the cutoff is the norm of each joint's 2-D velocity, so both coordinates of a joint
    share one cutoff (per-axis speeds would lag a diagonal motion differently in x and y). The parameters
    are plain attributes: changing them takes effect on the next sample.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample ``x`` (J, 2) taken at time ``t`` seconds; returns the smoothed (J, 2)."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # a repeated timestamp carries no new information
            return self._x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + smoothing_factor(self.d_cutoff, dt) * (dx - self._dx)
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True)
        alpha = smoothing_factor(self.min_cutoff + self.beta * speed, dt)
        self._x = self._x + alpha * (x - self._x)
        self._t = t
        return self._x.copy()


class KeypointSmoother:
    """One ``OneEuroFilter`` per track id; ``enabled`` False passes keypoints through untouched."""

    def __init__(
        self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0, enabled: bool = True
    ):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.enabled = enabled
        self._filters: dict[int, OneEuroFilter] = {}

    def configure(
        self, min_cutoff: float | None = None, beta: float | None = None, d_cutoff: float | None = None
    ) -> None:
        """Change the parameters (those given) of this smoother and of every live filter."""
        self.min_cutoff = self.min_cutoff if min_cutoff is None else min_cutoff
        self.beta = self.beta if beta is None else beta
        self.d_cutoff = self.d_cutoff if d_cutoff is None else d_cutoff
        for f in self._filters.values():
            f.min_cutoff, f.beta, f.d_cutoff = self.min_cutoff, self.beta, self.d_cutoff

    def smooth(self, track_id: int, keypoints: np.ndarray, t: float) -> np.ndarray:
        """The smoothed (J, 2) keypoints of ``track_id`` at time ``t`` seconds."""
        if not self.enabled:
            # Filter state from before a pause would drag the first poses after it: start afresh.
            self._filters.clear()
            return np.asarray(keypoints, dtype=np.float64).copy()
        f = self._filters.get(track_id)
        if f is None:
            f = self._filters[track_id] = OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)
        return f(keypoints, t)

    def forget(self, track_ids_alive: Iterable[int]) -> None:
        """Drop the filters of tracks not in ``track_ids_alive``."""
        alive = set(track_ids_alive)
        for tid in [tid for tid in self._filters if tid not in alive]:
            del self._filters[tid]
