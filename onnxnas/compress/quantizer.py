"""The weight quantizer Q(theta, b, r) of docs/design.md §7 and its learned ranges.

Gradients pass straight through ``round`` (STE); the range r gets the gradient of the
formula through ``clip`` and the step ``d``, which is LSQ's gradient written for r
instead of the step (r = d * qmax), with LSQ's 1/sqrt(N * qmax) scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

FLOAT_BITS = 32


def max_level(bits: int) -> int:
    """Largest integer magnitude of a b-bit symmetric grid: 2^(b-1) - 1, and 1 for b = 1 (+-1)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"integer grids have 1..8 bits, not {bits}")
    return max(1, 2 ** (bits - 1) - 1)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def quantize(theta: torch.Tensor, bits: int, r: torch.Tensor) -> torch.Tensor:
    """Q(theta, b, r): ``d * round(clip(theta, -r, r) / d)``, ``r * sign(theta)`` at b = 1, theta at b = 32."""
    if bits == FLOAT_BITS:
        return theta
    if bits == 1:
        inside = torch.clamp(theta, -r.detach(), r.detach())  # STE for sign: gradient 1 inside [-r, r]
        return r * torch.sign(theta) + inside - inside.detach()
    step = r / max_level(bits)
    return step * round_ste(torch.clamp(theta, -r, r) / step)


def integers(theta: torch.Tensor, bits: int, r: torch.Tensor) -> torch.Tensor:
    """The grid integers of Q(theta, b, r) as int8 (Q = integers * step, step = r / max_level)."""
    if bits == 1:
        return torch.sign(theta).to(torch.int8)
    step = r / max_level(bits)
    return torch.round(torch.clamp(theta, -r, r) / step).to(torch.int8)


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward, ``scale * grad`` backward (LSQ's step-size gradient scale)."""
    return x * scale + (x - x * scale).detach()


def mse_range(theta: torch.Tensor, bits: int, candidates: int = 100) -> float:
    """The clip range minimizing ||Q(theta, b, r) - theta||^2 (b = 1: mean|theta|, its closed form).

    Searched over ``candidates`` evenly spaced fractions of max|theta|: at 8 bits that lands near
    max|theta|, at 2-4 bits well inside it, where a max or LSQ's 2 mean|theta| sqrt(qmax) init
    would waste most levels or clip far too much.
    """
    magnitude = theta.detach().abs().flatten().float()
    top = float(magnitude.max()) if magnitude.numel() else 0.0
    if top == 0.0:
        return 1.0  # an all-zero tensor quantizes to zero at any range; keep r positive
    if bits == 1:
        return float(magnitude.mean())
    if bits == FLOAT_BITS:
        return top
    ranges = torch.linspace(top / candidates, top, candidates)
    errors = [float((quantize(magnitude, bits, r) - magnitude).square().sum()) for r in ranges]
    return float(ranges[min(range(candidates), key=errors.__getitem__)])


class LearnedRanges(nn.Module):
    """One learned range r_k per option k of a weight tensor (UDC: per bitwidth; filter-level: per op).

    ``bit_options`` may repeat a bitwidth (two filter-level ops with the same weight bits keep
    separate ranges). A 32-bit option has an entry for uniform indexing but never uses it.
    Call :meth:`init_from` at the end of warm-up, once theta has trained.
    """

    def __init__(self, bit_options: Sequence[int]):
        super().__init__()
        for bits in bit_options:
            if bits != FLOAT_BITS:
                max_level(bits)
        self.bit_options = tuple(int(b) for b in bit_options)
        self.ranges = nn.Parameter(torch.ones(len(self.bit_options)))

    @torch.no_grad()
    def init_from(self, theta: torch.Tensor) -> None:
        """Each option's MSE-optimal range for this tensor (see :func:`mse_range`)."""
        self.ranges.copy_(torch.tensor([mse_range(theta, b) for b in self.bit_options]))

    def range(self, option: int, numel: int) -> torch.Tensor:
        """r_k with LSQ's gradient scale 1 / sqrt(numel * qmax) for a tensor of ``numel`` elements."""
        bits = self.bit_options[option]
        levels = 1 if bits == FLOAT_BITS else max_level(bits)
        return scale_grad(self.ranges[option], 1.0 / math.sqrt(numel * levels))

    def quantize(self, theta: torch.Tensor, option: int) -> torch.Tensor:
        """Q(theta, b_k, r_k)."""
        return quantize(theta, self.bit_options[option], self.range(option, theta.numel()))
