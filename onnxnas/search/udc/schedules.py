"""UDC's schedules (docs/design.md §7), pure functions of the run's progress so a resume recomputes them."""

from __future__ import annotations

TAU_START, TAU_END = 0.66, 0.1  # Gumbel-softmax temperature over warm-up and search (App. E)
XI_START = 0.1
THETA_RS_END = 0.5


def temperature(progress: float) -> float:
    """0.66 -> 0.1 exponentially; ``progress`` in [0, 1] over warm-up and search together."""
    p = min(max(progress, 0.0), 1.0)
    return TAU_START * (TAU_END / TAU_START) ** p


def xi(search_progress: float, options: int) -> float:
    """The projection's slack: 0.1 at the start of the search, rising linearly to 1 - 1/|pi| (free) at its end."""
    p = min(max(search_progress, 0.0), 1.0)
    return XI_START + (1.0 - 1.0 / options - XI_START) * p


def theta_rs(search_progress: float | None) -> float:
    """Probability of using the rejection-sampled average: 0 in warm-up (None), 0 -> 0.5 linearly over the search."""
    if search_progress is None:
        return 0.0
    return THETA_RS_END * min(max(search_progress, 0.0), 1.0)
