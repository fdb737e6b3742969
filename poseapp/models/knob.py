"""One knob abstraction for every model: a named value in a known range whose cost rises with it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Knob:
    """A model's run-time cost dial. Larger values cost more (monotone) and are at least as accurate.

    ``name`` is what the CLI, the GUI and the budget controller call it (``keep_ratio``, ``eta``);
    a model without a dial has ``low == high``.
    """

    name: str
    low: float
    high: float
    default: float

    def clamp(self, value: float | None) -> float:
        """The value to run with: ``default`` for None, else ``value`` clipped into ``[low, high]``."""
        if value is None:
            return self.default
        return float(min(max(value, self.low), self.high))

    def grid(self, count: int) -> np.ndarray:
        """``count`` values from cheapest to dearest (one value for a fixed knob)."""
        if self.low == self.high:
            return np.array([self.low])
        return np.linspace(self.low, self.high, count)


FIXED = Knob("none", 1.0, 1.0, 1.0)
