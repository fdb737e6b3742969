"""One-Euro keypoint smoothing: jitter removed at rest, little lag in fast motion, per-track state."""

from __future__ import annotations

import numpy as np

from poseapp.runtime.smoothing import KeypointSmoother, OneEuroFilter
from poseapp.skeleton import NUM_JOINTS

FPS = 30.0


def run(filt: OneEuroFilter, samples: np.ndarray) -> np.ndarray:
    return np.stack([filt(x, i / FPS) for i, x in enumerate(samples)])


def test_still_point_jitter_is_suppressed():
    rng = np.random.default_rng(0)
    raw = np.full((300, NUM_JOINTS, 2), 100.0) + rng.normal(0, 1.0, (300, NUM_JOINTS, 2))
    smoothed = run(OneEuroFilter(), raw)[30:]  # past the start-up transient
    assert smoothed.std(axis=0).mean() < 0.5 * raw[30:].std(axis=0).mean()
    np.testing.assert_allclose(smoothed.mean(axis=0), 100.0, atol=0.3)


def test_beta_cuts_lag_in_fast_motion():
    t = np.arange(90) / FPS
    truth = np.zeros((90, NUM_JOINTS, 2))
    truth[..., 0] = 600.0 * t[:, None]  # 600 px/s along x
    lag = {}
    for beta in (0.0, 0.05):
        out = run(OneEuroFilter(beta=beta), truth)
        lag[beta] = np.abs(out[45:, :, 0] - truth[45:, :, 0]).mean()
    assert lag[0.05] < 0.1 * lag[0.0]
    assert lag[0.05] < 5.0  # pixels, i.e. a quarter of one frame's motion


def test_repeated_timestamp_returns_previous_output():
    f = OneEuroFilter()
    f(np.zeros((2, 2)), 0.0)
    first = f(np.ones((2, 2)), 0.1)
    np.testing.assert_array_equal(f(np.full((2, 2), 9.0), 0.1), first)


def test_smoother_per_track_forget_and_passthrough():
    smoother = KeypointSmoother()
    a, b = np.zeros((NUM_JOINTS, 2)), np.full((NUM_JOINTS, 2), 50.0)
    smoother.smooth(1, a, 0.0)
    smoother.smooth(2, b, 0.0)
    jump = np.full((NUM_JOINTS, 2), 10.0)
    out1 = smoother.smooth(1, jump, 1 / FPS)
    assert np.all((out1 > 0) & (out1 < 10))  # track 1 is filtered from its own history, not track 2's
    smoother.forget([2])
    np.testing.assert_array_equal(smoother.smooth(1, jump, 2 / FPS), jump)  # fresh filter for id 1

    smoother.enabled = False
    np.testing.assert_array_equal(smoother.smooth(2, a, 3 / FPS), a)


def test_configure_changes_live_filters():
    smoother = KeypointSmoother(min_cutoff=1.0, beta=0.0)
    smoother.smooth(1, np.zeros((1, 2)), 0.0)
    slow = smoother.smooth(1, np.ones((1, 2)), 1 / FPS)[0, 0]
    smoother.configure(min_cutoff=100.0)
    fast = smoother.smooth(1, np.full((1, 2), 2.0), 2 / FPS)[0, 0]
    assert slow < 0.3 and fast > 1.8
