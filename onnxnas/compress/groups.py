"""Per-filter-group weight quantization for the filter-level method (docs/design.md §12).

A conv's output channels split into contiguous groups, one per op in ``--ops`` order. The
weights are shared across ops; each (conv, op) has its own learned range, held by one
:class:`LearnedRanges` per conv whose options are the ops' weight bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onnxnas.compress.quantizer import FLOAT_BITS, LearnedRanges, integers, max_level

FilterGroups = Sequence[tuple[int, int]]  # (filters, op index into LearnedRanges.bit_options), in output-channel order


def _check(weight: torch.Tensor, groups: FilterGroups, ranges: LearnedRanges) -> None:
    total = sum(filters for filters, _ in groups)
    if total != weight.shape[0] or any(filters < 0 for filters, _ in groups):
        raise ValueError(f"filter groups {list(groups)} must split the conv's {weight.shape[0]} filters")
    for _, op in groups:
        if not 0 <= op < len(ranges.bit_options):
            raise ValueError(f"op {op} is not one of the conv's {len(ranges.bit_options)} ops")


def quantize_groups(weight: torch.Tensor, groups: FilterGroups, ranges: LearnedRanges) -> torch.Tensor:
    """The fake-quantized weight: each group of filters on its op's grid with its op's range."""
    _check(weight, groups, ranges)
    parts = torch.split(weight, [filters for filters, _ in groups])
    return torch.cat([ranges.quantize(part, op) for part, (_, op) in zip(parts, groups)])


def group_integers(weight: torch.Tensor, groups: FilterGroups, ranges: LearnedRanges) -> tuple[torch.Tensor, torch.Tensor]:
    """Deploy form: int8 integers (group g within +-max_level(b_g)) and one positive scale per filter.

    ``integers * scale`` (scale broadcast on axis 0) equals :func:`quantize_groups`; the scale
    comes from the trained range, never from max|w|.
    """
    _check(weight, groups, ranges)
    ints, scales = [], []
    for part, (filters, op) in zip(torch.split(weight.detach(), [f for f, _ in groups]), groups):
        bits = ranges.bit_options[op]
        if bits == FLOAT_BITS:
            raise ValueError(f"op {op} keeps float weights; it has no integer form")
        r = ranges.ranges[op].detach()
        ints.append(integers(part, bits, r))
        scales.append((r if bits == 1 else r / max_level(bits)).expand(filters))
    return torch.cat(ints), torch.cat(scales)
