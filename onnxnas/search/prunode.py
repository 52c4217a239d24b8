"""Prunode: a hidden-width search whose cost does not grow with the number of widths.

One block at the position's largest hidden width runs along two paths, "small" and
"large", that share all weights and differ only in a prefix mask over the hidden
channels. A scalar architecture weight mixes them; after each architecture step the
masks move towards the preferred width (docs/design.md §6) until they are adjacent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


# A Prunode has settled when its masks are adjacent and its architecture weight prefers one
# of them by at least this much (|sigmoid(theta) - 0.5| >= 0.05): a weight still near 0 at
# the end means the two widths were never told apart and the pick is a coin flip.
DECIDED_THETA = 0.2


def round_to(value: float, granularity: int) -> int:
    """Nearest multiple of ``granularity`` (halves round up, unlike Python's banker's round)."""
    return int(math.floor(value / granularity + 0.5)) * granularity


@dataclasses.dataclass
class PrunodeMasks:
    """The mask algorithm's state: continuous fractions s < l of the hidden width, and the
    channel counts of the small and large paths they round to."""

    max_channels: int
    granularity: int
    c: float = 0.8
    max_distance: float = 0.6
    momentum: float = 0.4
    s: float = 0.5
    l: float = 1.0
    update: float = 0.0
    small: int = 0
    large: int = 0

    def __post_init__(self) -> None:
        if self.max_channels < 2 * self.granularity:
            raise ValueError(f"a Prunode needs at least two widths ({self.max_channels} < 2 x {self.granularity})")
        if not self.small:
            self.small, self.large = self._widths()

    @property
    def converged(self) -> bool:
        """Masks adjacent: no further moves, the architecture weight picks small or large."""
        return (self.l - self.s) * self.max_channels <= self.granularity

    def step(self, weight: float, progress: float) -> bool:
        """Move the masks by the architecture ``weight`` (> 0 favours large) at search
        ``progress`` in [0, 1]. Returns True when the weight was consumed (reset it to 0)."""
        if self.converged:
            return False
        self.update = self.update * self.momentum + weight
        distance = self.max_distance * (1.0 - progress) ** 2
        self.s += self.update
        consumed = self.s > 0
        self.s = min(self.s, 1.0 - self.c * distance) if consumed else 0.0
        self.l = self.s + distance
        self.small, self.large = self._widths()
        return consumed

    def _widths(self) -> tuple[int, int]:
        g, top = self.granularity, self.max_channels
        small = min(max(round_to(self.s * top, g), g), top - g)
        large = min(max(round_to(self.l * top, g), small + g), top)
        return small, large

    def state(self) -> dict[str, float]:
        return {"s": self.s, "l": self.l, "update": self.update, "small": self.small, "large": self.large}

    def load_state(self, state: dict[str, float]) -> None:
        self.s, self.l, self.update = float(state["s"]), float(state["l"]), float(state["update"])
        self.small, self.large = int(state["small"]), int(state["large"])


def prefix_mask(width: int, total: int, like: torch.Tensor) -> torch.Tensor:
    """0/1 vector keeping the first ``width`` of ``total`` hidden channels (what finalize slices)."""
    return (torch.arange(total, device=like.device) < width).to(like.dtype)


class Prunode(nn.Module):
    """A block with a ``hidden_mask`` (onnxnas.blocks IRB types) searched over its hidden width.

    ``latency_of(width)`` gives the LUT latency of the block at a hidden width; the
    Prunode's latency is the Gumbel-weighted mix of the latencies at its two widths.
    """

    def __init__(self, block: nn.Module, masks: PrunodeMasks, latency_of: Callable[[int], float]):
        super().__init__()
        self.block = block
        self.masks = masks
        self.latency_of = latency_of
        self.theta = nn.Parameter(torch.zeros(()))  # > 0 favours the large path

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        gate = F.gumbel_softmax(torch.stack([torch.zeros_like(self.theta), self.theta]), tau=tau)
        small, large = self.masks.small, self.masks.large
        outputs = []
        for width in (small, large):
            self.block.hidden_mask = prefix_mask(width, self.masks.max_channels, x)
            outputs.append(self.block(x))
        self.block.hidden_mask = None
        latency = gate[0] * self.latency_of(small) + gate[1] * self.latency_of(large)
        return gate[0] * outputs[0] + gate[1] * outputs[1], latency

    def expected_latency(self) -> float:
        """Latency under the noise-free mix (for logs): sigmoid(theta) is the large path's share."""
        p_large = float(torch.sigmoid(self.theta.detach()))
        return (1 - p_large) * self.latency_of(self.masks.small) + p_large * self.latency_of(self.masks.large)

    @torch.no_grad()
    def update_masks(self, progress: float) -> None:
        """The after-step mask update; a consumed architecture weight is reset to 0."""
        if self.masks.step(self.theta.item(), progress):
            self.theta.zero_()

    def chosen_width(self) -> int:
        """The final width: large if the architecture weight prefers it, else small (cheaper on ties)."""
        return self.masks.large if self.theta.item() > 0 else self.masks.small

    def report(self) -> dict[str, Any]:
        """Where the search left this Prunode, and whether it settled (see DECIDED_THETA)."""
        theta = float(self.theta.detach())
        adjacent = self.masks.large - self.masks.small <= self.masks.granularity
        return {"small": self.masks.small, "large": self.masks.large, "chosen": self.chosen_width(),
                "max_channels": self.masks.max_channels, "s": self.masks.s, "l": self.masks.l,
                "prefers": "large" if theta > 0 else "small", "p_large": 1.0 / (1.0 + math.exp(-theta)),
                "adjacent": adjacent, "settled": adjacent and abs(theta) >= DECIDED_THETA}
