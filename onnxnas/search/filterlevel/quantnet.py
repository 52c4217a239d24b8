"""The fake-quantized network of a concrete arch, under one configuration (or a Gumbel relaxation).

Each searched conv of ``build_model(arch)`` becomes a :class:`GroupQuantConv` with the same
parameter names (so the concrete network's state_dict keys stay, plus ``ranges.ranges``): its
weights are shared across ops and each (conv, op) has one learned range
(:mod:`onnxnas.compress.groups`). Each conv's output activations are quantized by an
:class:`ActQuant` hooked on the module that produces them: after the activation, and for a
residual block's ``conv_pwl`` after the add (as the authors do). The grid is unsigned after
ReLU and signed after swish or no activation. Pruning mode keeps the first n hidden filters
(the blocks' ``hidden_mask``) and puts every conv at the largest op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from onnxnas.blocks import build_model
from onnxnas.compress.groups import quantize_groups
from onnxnas.compress.quantizer import FLOAT_BITS, LearnedRanges, quantize, round_ste, scale_grad
from onnxnas.search.filterlevel.problem import Problem
from onnxnas.search.filterlevel.slots import Configuration, Slot, quant_slots

Groups = list[tuple[int, int]]  # (filters, op index), contiguous, no empty group
MIN_RANGE = 1e-6  # the smallest learned clip range, weights and activations alike


def quantize_activation(x: torch.Tensor, bits: int, r: torch.Tensor, signed: bool) -> torch.Tensor:
    """Signed: compress's symmetric grid; unsigned: ``step * round(clip(x, 0, r) / step)``, step = r / (2^b - 1)."""
    if bits == FLOAT_BITS:
        return x
    if signed:
        return quantize(x, bits, r)
    step = r / (2 ** bits - 1)
    return step * round_ste(torch.minimum(torch.relu(x), r) / step)


def activation_range(x: torch.Tensor, bits: int, signed: bool, candidates: int = 30, elements: int = 16384) -> float:
    """The clip range of least squared error on a calibration tensor (an evenly strided subsample of at most
    ``elements`` values, its maximum kept), among fractions of its largest magnitude."""
    flat = x.detach().flatten()
    top = float(flat.abs().max()) if flat.numel() else 0.0
    x = torch.cat([flat[:: max(1, flat.numel() // elements)], flat[flat.abs().argmax()].view(1)]) \
        if flat.numel() else flat
    if top == 0.0 or bits == FLOAT_BITS:
        return max(top, 1.0)
    ranges = torch.linspace(top / candidates, top, candidates)
    errors = [float((quantize_activation(x, bits, r, signed) - x).square().sum()) for r in ranges]
    return float(ranges[min(range(candidates), key=errors.__getitem__)])


class GroupQuantConv(nn.Conv2d):
    """A conv whose weights are quantized per contiguous filter group, or mixed per filter over ops (Gumbel)."""

    def __init__(self, conv: nn.Conv2d, weight_bits: Sequence[int]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=False)
        self.weight = conv.weight
        self.ranges = LearnedRanges(weight_bits)
        self.layout: Groups | None = None  # None: float
        self.mix: torch.Tensor | None = None  # [filters, ops] relaxed one-hots

    def quantized_weight(self) -> torch.Tensor:
        if self.mix is not None:
            return sum(self.mix[:, t].view(-1, 1, 1, 1) * self.ranges.quantize(self.weight, t)
                       for t in range(self.mix.shape[1]))
        if self.layout is None:
            return self.weight
        return quantize_groups(self.weight, self.layout, self.ranges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), None)


class ActQuant(nn.Module):
    """One conv's output quantizer: a learned range per op, per-channel groups or a per-channel mix."""

    def __init__(self, act_bits: Sequence[int], signed: bool):
        super().__init__()
        self.act_bits, self.signed = tuple(act_bits), signed
        self.ranges = nn.Parameter(torch.ones(len(self.act_bits)))
        self.layout: Groups | None = None
        self.mix: torch.Tensor | None = None

    def _range(self, op: int, numel: int) -> torch.Tensor:
        bits = self.act_bits[op]
        levels = 1 if bits == FLOAT_BITS else (2 ** bits - 1 if not self.signed else max(1, 2 ** (bits - 1) - 1))
        return scale_grad(self.ranges[op], 1.0 / math.sqrt(max(1, numel) * levels))

    def _one(self, x: torch.Tensor, op: int) -> torch.Tensor:
        return quantize_activation(x, self.act_bits[op], self._range(op, x.numel()), self.signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mix is not None:
            return sum(self.mix[:, t].view(1, -1, 1, 1) * self._one(x, t) for t in range(self.mix.shape[1]))
        if self.layout is None:
            return x
        parts = torch.split(x, [f for f, _ in self.layout], dim=1)
        return torch.cat([self._one(part, op) for part, (_, op) in zip(parts, self.layout)], dim=1)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        self.ranges.copy_(torch.tensor([activation_range(x, b, self.signed) for b in self.act_bits]))


def _groups(counts: Sequence[int]) -> Groups:
    return [(c, t) for t, c in enumerate(counts) if c > 0]


class FilterLevelNet(nn.Module):
    """``build_model(problem.arch)`` with per-filter-group weight and activation quantizers and the alphas."""

    def __init__(self, problem: Problem):
        super().__init__()
        self.problem = problem
        self.net = build_model(problem.arch)
        self.quant_slots: tuple[Slot, ...] = quant_slots(problem.arch)
        ops = problem.ops if problem.mode == "quant" else (problem.top,)
        modules = dict(self.net.named_modules())
        self.convs: list[GroupQuantConv] = []
        self.acts = nn.ModuleList()
        for slot in self.quant_slots:
            seq = modules[slot.module]
            seq[0] = GroupQuantConv(seq[0], [op.weight_bits for op in ops])
            self.convs.append(seq[0])
            act = ActQuant([op.act_bits for op in ops], slot.signed)
            self.acts.append(act)
            modules[slot.output].register_forward_hook(lambda _m, _i, out, act=act: act(out))
        self.alphas = nn.ParameterList([nn.Parameter(problem.sampler.initial(s.filters)) for s in problem.slots])
        self._blocks = {s.layer: modules[f"blocks.{s.layer}"] for s in problem.slots if problem.mode == "prune"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Network weights and every learned range (trained together, as LSQ does)."""
        return [*self.net.parameters(), *self.acts.parameters()]

    # ---- what the next forward computes ----------------------------------------------------------
    def set_float(self) -> None:
        for q in [*self.convs, *self.acts]:
            q.layout, q.mix = None, None
        for block in self._blocks.values():
            block.hidden_mask = None

    def set_configuration(self, config: Configuration) -> None:
        """One discrete configuration: contiguous groups (quant) or the first n hidden filters (prune)."""
        if self.problem.mode == "quant":
            for conv, act, counts in zip(self.convs, self.acts, config):
                conv.layout, act.layout, conv.mix, act.mix = _groups(counts), _groups(counts), None, None
            return
        for conv, act, slot in zip(self.convs, self.acts, self.quant_slots):
            conv.layout, act.layout, conv.mix, act.mix = [(slot.filters, 0)], [(slot.filters, 0)], None, None
        for slot, (kept,) in zip(self.problem.slots, config):
            block = self._blocks[slot.layer]
            mask = torch.zeros(slot.filters, device=self.alphas[0].device)
            mask[:kept] = 1.0
            block.hidden_mask = mask

    def set_relaxed(self, mixes: Sequence[torch.Tensor]) -> None:
        """Per-filter relaxed one-hots [filters, ops] (Gumbel estimator, quantization mode)."""
        for conv, act, mix in zip(self.convs, self.acts, mixes):
            conv.mix, act.mix = mix, mix

    @torch.no_grad()
    def clamp_ranges_(self) -> None:
        """Keep every learned range at least MIN_RANGE after a step: LSQ's updates can push a rarely drawn op's
        range through zero, where Q(w, b, r < 0) is a constant and no deployable grid (finalize refuses it)."""
        for ranges in [*(c.ranges.ranges for c in self.convs), *(a.ranges for a in self.acts)]:
            ranges.clamp_(min=MIN_RANGE)

    @torch.no_grad()
    def init_ranges(self, x: torch.Tensor) -> None:
        """Weight ranges from the pre-trained weights, activation ranges from a float forward of ``x``."""
        for conv in self.convs:
            conv.ranges.init_from(conv.weight)
        outputs: dict[int, torch.Tensor] = {}
        modules = dict(self.net.named_modules())
        self.set_float()
        handles = [modules[s.output].register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
                   for i, s in enumerate(self.quant_slots)]
        was_training = self.training
        self.eval()
        self.net(x)
        self.train(was_training)
        for h in handles:
            h.remove()
        for i, act in enumerate(self.acts):
            act.init_from(outputs[i])

    # ---- the deployable checkpoint -------------------------------------------------------------
    def deploy_state_dict(self) -> dict[str, torch.Tensor]:
        """``build_model(arch).state_dict()``'s keys and tensors (full hidden widths; ranges excluded)."""
        return {k: v.detach().clone() for k, v in self.net.state_dict().items() if not k.endswith(".ranges.ranges")}

    def trained_grids(self, config: Configuration) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
        """``quant_ranges`` / ``quant_bits`` per weight: the trained range and bits of each filter's op (per
        channel in quantization mode; one per tensor in pruning mode, whose hidden widths are sliced).
        A 32-bit-weight op deploys inside INT8 at 8 bits on its filter's max|w|."""
        ranges, bits = {}, {}
        if self.problem.mode == "quant":
            per_slot = [_groups(c) for c in config]
        else:
            per_slot = [[(s.filters, 0)] for s in self.quant_slots]
        for slot, conv, groups in zip(self.quant_slots, self.convs, per_slot):
            r, b, start = [], [], 0
            for filters, op in groups:
                w_bits = conv.ranges.bit_options[op]
                if w_bits == FLOAT_BITS:
                    top = conv.weight.detach()[start:start + filters].flatten(1).abs().amax(1).clamp_min(1e-12)
                    r += top.tolist()
                    b += [8] * filters
                else:
                    r += [float(conv.ranges.ranges[op].detach())] * filters
                    b += [w_bits] * filters
                start += filters
            if self.problem.mode == "prune":
                r, b = r[:1], b[:1]
            ranges[slot.weight], bits[slot.weight] = r, b
        return ranges, bits

