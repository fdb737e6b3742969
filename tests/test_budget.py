"""Latency budget: calibration, knob choice per people count, online adaptation, hysteresis, fixed mode."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from poseapp.models.knob import FIXED, Knob
from poseapp.runtime.budget import BudgetController, LatencyModel, fit_line

KNOB = Knob("keep_ratio", 0.5, 1.0, 0.7)


def fake_ms(value: float, n: int) -> float:
    """A model whose per-crop cost grows with the knob: 2 ms overhead + 3 ms per crop at full cost."""
    return 2.0 + 3.0 * n * value


@pytest.fixture
def model() -> LatencyModel:
    return LatencyModel.calibrate(fake_ms, KNOB, batch_sizes=(1, 4, 8), values=6)


def test_fit_line_and_calibration(model):
    assert fit_line([1, 4, 8], [5, 14, 26]) == pytest.approx((2.0, 3.0))
    np.testing.assert_allclose(model.grid, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(model.intercepts, 2.0, atol=1e-9)
    np.testing.assert_allclose(model.slopes, 3.0 * model.grid)
    assert model.predict(0.75, 4) == pytest.approx(fake_ms(0.75, 4))  # between grid values: interpolated

    calls = []
    single = LatencyModel.calibrate(lambda v, n: calls.append((v, n)) or 1.0 + n, FIXED)
    assert calls == [(1.0, 1), (1.0, 4)]
    assert single.predict(1.0, 10) == pytest.approx(11.0)
    with pytest.raises(ValueError):
        LatencyModel.calibrate(fake_ms, KNOB, batch_sizes=(4, 4))


def test_knob_follows_people_count(model):
    controller = BudgetController(KNOB, model, budget_ms=30.0, margin=0.9)  # 27 ms usable
    assert controller.choose(1) == 1.0  # few people: the most accurate value
    assert controller.last_predicted_ms == pytest.approx(fake_ms(1.0, 1))
    assert controller.choose(10) == pytest.approx(0.8)  # 2 + 30 v <= 27  ->  v <= 0.83
    assert controller.choose(20) == 0.5  # nothing fits: the cheapest
    assert controller.last_predicted_ms > 27.0
    chosen = [BudgetController(KNOB, model, 30.0).choose(n) for n in range(0, 21)]
    assert chosen[0] == 1.0 and all(a >= b for a, b in pairwise(chosen))


def test_observe_follows_slower_hardware(model):
    controller = BudgetController(KNOB, model, budget_ms=30.0)
    assert controller.choose(6) == 1.0  # calibrated: 2 + 18 ms fits 27
    for _ in range(40):  # the machine is now twice as slow as at calibration
        value = controller.choose(6)
        controller.record(value, 6, 2.0 * fake_ms(value, 6))
    assert model.predict(0.8, 6) == pytest.approx(2.0 * fake_ms(0.8, 6), rel=0.05)
    assert controller.choose(6) == pytest.approx(0.6)  # 2 * (2 + 18 v) <= 27  ->  v <= 0.64
    assert controller.last_measured_ms == pytest.approx(2.0 * fake_ms(0.6, 6))


def test_frames_beside_the_detector_learn_their_own_factor(model):
    controller = BudgetController(KNOB, model, budget_ms=30.0)
    for frame in range(120):  # every third pose call shares the machine with a detection: 1.5x slower
        beside = frame % 3 == 0
        value = controller.choose(6, beside)
        controller.record(value, 6, (1.5 if beside else 1.0) * 1.2 * fake_ms(value, 6), beside)
    assert model.predict(0.8, 6) == pytest.approx(1.2 * fake_ms(0.8, 6), rel=0.05)
    assert model.predict(0.8, 6, beside_detector=True) == pytest.approx(1.8 * fake_ms(0.8, 6), rel=0.05)
    assert controller.choose(6) == pytest.approx(1.0)  # 1.2 * (2 + 18) = 24 <= 27
    assert controller.choose(6, beside_detector=True) == pytest.approx(0.7)  # 1.8 * (2 + 18 v) <= 27
    assert controller.capacity(20, beside_detector=True) < controller.capacity(20)


def test_observe_ignores_single_outlier(model):
    model.observe(1.0, 4, 100.0 * fake_ms(1.0, 4))
    assert model.correction <= 2**model.rate + 1e-9


@pytest.mark.parametrize("hysteresis, max_switches", [(0.0, None), (0.1, 1)])
def test_hysteresis_prevents_flapping(model, hysteresis, max_switches):
    # The 0.8 value's prediction for 5 people (14 ms) sits right at the usable budget.
    controller = BudgetController(KNOB, model, budget_ms=14.0 * 1.002 / 0.9, hysteresis=hysteresis)
    chosen = []
    for frame in range(40):
        value = controller.choose(5)
        chosen.append(value)
        noise = 1.2 if frame % 2 == 0 else 1 / 1.2  # measured times alternate around the calibration
        controller.record(value, 5, noise * fake_ms(value, 5))
    switches = sum(a != b for a, b in pairwise(chosen))
    assert set(np.round(chosen, 6)) <= {0.7, 0.8}
    if max_switches is None:
        assert switches >= 10  # without hysteresis the knob flaps
    else:
        assert switches <= max_switches


def test_fixed_mode_always_returns_pinned(model):
    pinned = BudgetController.fixed(KNOB, 0.65, model)
    assert pinned.is_fixed
    for n in (0, 1, 5, 50):
        assert pinned.choose(n) == 0.65
        assert pinned.last_predicted_ms == pytest.approx(model.predict(0.65, n))
        pinned.record(0.65, n, 1000.0)
    assert pinned.choose(50) == 0.65

    bare = BudgetController.fixed(KNOB, 2.0)  # no calibration: clamped value, no prediction
    assert bare.choose(3) == 1.0 and math.isnan(bare.last_predicted_ms)
    bare.record(1.0, 3, 12.0)
    assert bare.last_measured_ms == 12.0
    with pytest.raises(ValueError):
        BudgetController(KNOB, None, 30.0).choose(1)


def test_capacity_is_everyone_until_the_cheapest_knob_no_longer_fits(model):
    controller = BudgetController(KNOB, model, budget_ms=30.0, margin=0.9)  # 27 ms: 2 + 1.5 n at keep 0.5
    assert [controller.capacity(n) for n in (0, 1, 10, 16)] == [0, 1, 10, 16]
    assert controller.capacity(17) == 16 and controller.capacity(40) == 16  # 2 + 1.5 * 17 > 27
    tiny = BudgetController(KNOB, model, budget_ms=1.0)
    assert tiny.capacity(5) == 1  # nothing fits: still pose one person a frame
    pinned = BudgetController.fixed(KNOB, 0.5, model)
    assert pinned.capacity(40) == 40  # no budget: everyone, every frame
