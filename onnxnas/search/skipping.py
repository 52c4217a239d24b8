"""Layer skipping: a skip joins a skippable layer when it is about to lose its penultimate block.

Skip connections are not in the space at the start. When pruning would leave a skippable
layer with one block, the block being removed is replaced by a skip instead, and from then
on the skip's output is scaled by phi and the remaining block's by lambda, until pruning
removes one of the two. Lower lambda gives *deeper* networks: PruNet's Table 6, at alpha 2.0,
has lambda 1.0 / 0.85 / 0.55 / 0.4 keep 6 / 7 / 9 / 11 IRBs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from onnxnas.search.supernet import StochasticLayer


class SkipCandidate(nn.Module):
    """Identity with no latency (finalize removes skipped layers from the graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Identity()

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, float]:
        return x, 0.0

    def expected_latency(self) -> float:
        return 0.0


def insert_skip(layer: "StochasticLayer", slot: int, *, level: bool = True) -> None:
    """Turn ``slot`` into the layer's skip. With ``level`` the skip starts at the remaining
    block's architecture weight, so the two race from equal odds instead of the skip
    inheriting the low weight that was about to prune it."""
    if level:
        other = next(s for s in layer.alive if s != slot)
        with torch.no_grad():
            layer.theta[slot] = layer.theta[other]
    layer.candidates[str(slot)] = SkipCandidate()
    layer.skip_slot = slot


def skip_multipliers(layer: "StochasticLayer") -> dict[int, float]:
    """Output scales while the skip and one block are both alive: phi on the skip, lambda on the block."""
    alive = layer.alive
    if layer.skip_slot is None or layer.skip_slot not in alive or len(alive) != 2:
        return {}
    other = next(s for s in alive if s != layer.skip_slot)
    return {layer.skip_slot: layer.phi, other: layer.lam}
