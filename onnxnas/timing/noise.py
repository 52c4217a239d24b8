"""Repeated end-to-end measurements and the verdict on their noise.

The canary gate (timing/canary.py) drops samples taken while the machine runs slow, but a
whole pass can still land in a slow spell: one model read 78.0 us once against 62.5-63.7 us
in eight other passes. So ``bench --repeat N`` times N independent passes, reports the median
of their medians with the spread, and calls a measurement noisy when the passes disagree or
one pass's own tail is long.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from onnxnas.timing.base import Measurement

MAX_SPREAD = 0.05  # (max - min) / median of the pass medians: two builds of one table agree within ~1-2%
MAX_TAIL = 1.25  # p90 / median within a pass: gated passes on the CI machine stay near 1.05


@dataclasses.dataclass(frozen=True)
class RepeatedMeasurement:
    """N passes of one model: the median of their medians, their spread, and why it is noisy (if it is)."""

    passes: tuple[Measurement, ...]

    def __post_init__(self) -> None:
        if not self.passes:
            raise ValueError("no passes")

    @property
    def median_us(self) -> float:
        return statistics.median(p.median_us for p in self.passes)

    @property
    def spread(self) -> float:
        medians = [p.median_us for p in self.passes]
        return (max(medians) - min(medians)) / self.median_us

    @property
    def tail(self) -> float:
        """The largest p90 / median of any pass."""
        return max(p.p90_us / p.median_us for p in self.passes)

    @property
    def noise(self) -> list[str]:
        """Why the measurement should not be trusted as it is; empty when it is quiet."""
        reasons = []
        if len(self.passes) > 1 and self.spread > MAX_SPREAD:
            reasons.append(f"pass medians spread {self.spread:.1%} (> {MAX_SPREAD:.0%}): "
                           f"{', '.join(f'{p.median_us:.1f}' for p in self.passes)} us")
        if self.tail > MAX_TAIL:
            reasons.append(f"p90 / median reached {self.tail:.2f} (> {MAX_TAIL:g}) within a pass")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {"median_us": self.median_us, "repeat": len(self.passes), "spread": self.spread, "tail": self.tail,
                "noisy": bool(self.noise), "noise": self.noise, "passes": [p.to_dict() for p in self.passes],
                "thresholds": {"max_spread": MAX_SPREAD, "max_tail": MAX_TAIL}}

