"""Differentiable BOPs of per-filter relaxed one-hots (the Gumbel estimator, quantization mode).

Section 12's formula with each filter's bits replaced by their expectation under its relaxed
one-hot y_f: ``b_w(f) = sum_t y_ft w_t`` and, for the channels it feeds, ``b_a = sum_t y_ft a_t``
and ``2^b_a -> sum_t y_ft 2^a_t``. Since ``log2(2^b_w k^2 S) = b_w + log2(k^2 S)``, at one-hot
values this is :func:`onnxnas.cost.conv_bops` exactly (tested), and for a dense conv it is the
formula with the relaxed counts ``sum_f y_f`` plugged in. The walk over the network (image at
8 bits, skips pass their input's bits, SE and residual adds keep conv_pwl's) is
:class:`onnxnas.cost.BopsCost`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onnxnas.blocks.spec import ConvShape
from onnxnas.cost import IMAGE_BITS
from onnxnas.search.filterlevel.problem import Problem

Bits = tuple[torch.Tensor, torch.Tensor]  # per channel: expected bits, expected 2^bits


def _conv(conv: ConvShape, out_hw: int, inputs: Bits, mix: torch.Tensor, w_bits: torch.Tensor) -> torch.Tensor:
    k2, n = conv.kernel_size ** 2, conv.in_chs // conv.groups
    sum_bits = inputs[0].view(conv.groups, n).sum(1)
    sum_pow = inputs[1].view(conv.groups, n).sum(1)
    group = torch.arange(conv.out_chs, device=mix.device) // (conv.out_chs // conv.groups)
    bw = mix @ w_bits
    per_filter = k2 * (bw * sum_bits[group] + n * (bw + torch.log2(k2 * sum_pow[group])))
    return out_hw * out_hw * per_filter.sum()


def relaxed_bops(problem: Problem, mixes: Sequence[torch.Tensor]) -> torch.Tensor:
    """BOPs of the relaxed network; ``mixes[i]`` is [filters, ops] for ``problem.slots[i]`` (quantization mode)."""
    dtype = torch.float64
    device = mixes[0].device
    w_bits = torch.tensor([op.weight_bits for op in problem.ops], dtype=dtype, device=device)
    a_bits = torch.tensor([op.act_bits for op in problem.ops], dtype=dtype, device=device)
    arch = problem.arch
    image = torch.full((arch.stem.in_chs,), float(IMAGE_BITS), dtype=dtype, device=device)
    bits: Bits = (image, 2.0 ** image)
    by_conv = {(s.part, s.layer, s.conv): m.to(dtype) for s, m in zip(problem.slots, mixes)}
    total = torch.zeros((), dtype=dtype, device=device)
    specs = [("stem", None, arch.stem, arch.resolution)]
    specs += [("layers", i, spec, hw) for i, (spec, hw) in enumerate(arch.layer_inputs())]
    head_hw = specs[-1][2].out_hw(specs[-1][3]) if len(specs) > 1 else arch.stem.out_hw(arch.resolution)
    specs.append(("head", None, arch.head, head_hw))
    for part, layer, spec, hw in specs:
        for conv in spec.convs():
            mix = by_conv[(part, layer, conv.name)]
            hw = -(-hw // conv.stride)
            total = total + _conv(conv, hw, bits, mix, w_bits)
            bits = (mix @ a_bits, mix @ (2.0 ** a_bits))
    return total
