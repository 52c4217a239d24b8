"""Sparsity and width masks, and their schedules (docs/design.md §7, UDC Alg. 2).

Masks are float 0/1 tensors so that ``theta * mask`` is differentiable in theta where kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

REFRESH_EVERY = 16  # steps between magnitude-mask refreshes (UDC Alg. 2)


def magnitude_mask(theta: torch.Tensor, nonzero_fraction: float) -> torch.Tensor:
    """Keep the round(s * N) largest-|theta| elements of the tensor (computed from theta, not Q(theta))."""
    if not 0.0 <= nonzero_fraction <= 1.0:
        raise ValueError(f"nonzero_fraction must lie in [0, 1], got {nonzero_fraction}")
    flat = theta.detach().abs().flatten()
    kept = round(nonzero_fraction * flat.numel())
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, kept, sorted=False).indices] = 1.0
    return mask.view_as(theta)


class RefreshedMasks:
    """Magnitude masks for several non-zero fractions, recomputed every ``every`` calls.

    Between refreshes the masks stay fixed even if theta moves, which is what lets pruned
    weights regrow at the next refresh (Alg. 2). A caller with a schedule (the finetune's
    cubic ramp) passes the scheduled fraction; it takes effect at the next refresh.
    """

    def __init__(self, every: int = REFRESH_EVERY):
        if every < 1:
            raise ValueError(f"refresh interval must be >= 1, got {every}")
        self.every = every
        self.step = 0
        self.masks: tuple[torch.Tensor, ...] = ()

    @property
    def due(self) -> bool:
        return not self.masks or self.step % self.every == 0

    def __call__(self, theta: torch.Tensor, fractions: Sequence[float]) -> tuple[torch.Tensor, ...]:
        if self.due:
            self.masks = tuple(magnitude_mask(theta, s) for s in fractions)
        self.step += 1
        return self.masks


def cubic_nonzero_fraction(step: int, total_steps: int, final: float, initial: float = 1.0) -> float:
    """Zhu & Gupta's cubic pruning ramp, in non-zero fraction: ``final + (initial - final)(1 - t/n)^3``.

    Prunes fast while many redundant weights remain and slowly near the target.
    """
    if total_steps <= 0:
        return final
    progress = min(max(step / total_steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def kept_channels(channels: int, width_fraction: float, granularity: int = 1) -> int:
    """Channels kept at width fraction rho: round(rho * C) to the granularity, at least one step (as spaces round)."""
    if not 0.0 < width_fraction <= 1.0:
        raise ValueError(f"width_fraction must lie in (0, 1], got {width_fraction}")
    return min(channels, max(granularity, round(width_fraction * channels / granularity) * granularity))


def width_mask(channels: int, width_fraction: float, granularity: int = 1) -> torch.Tensor:
    """w_k: ones on the first rho fraction of the hidden channels, zeros after (shared weights, slimmable)."""
    mask = torch.zeros(channels)
    mask[:kept_channels(channels, width_fraction, granularity)] = 1.0
    return mask
