"""The searched convs of a concrete arch, and the arch a configuration turns it into.

A **slot** is one searched decision. In quantization mode it is one conv (stem, every block
conv, the head's 1x1; SE convs and the classifier excluded) whose C filters split over the ops.
In pruning mode it is one (fused) IRB's hidden width: the expansion conv's filters, which the
depthwise conv follows, kept slimmable-style (the first n); only hidden widths are pruned, so
every block keeps its output width and residual add.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

from onnxnas.arch import Arch
from onnxnas.blocks.spec import BlockSpec, FilterGroup, HeadSpec
from onnxnas.errors import OnnxNasError
from onnxnas.search.filterlevel.ops import FLOAT_BITS, Op

MODES = ("quant", "prune")
Counts = tuple[int, ...]  # filters per op of one slot, in --ops order (prune mode: one entry, the kept filters)
Configuration = tuple[Counts, ...]  # one Counts per slot
SpecT = TypeVar("SpecT", BlockSpec, HeadSpec)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One searched conv: where its spec sits, its conv name, filters, and module paths in ``build_model``."""

    layer: int | None  # index into arch.layers; None for the stem and the head
    part: str  # "stem", "layers", "head"
    conv: str  # conv name (a key of filter_groups)
    filters: int
    module: str  # the ConvBnAct of the conv, e.g. "blocks.3.conv_pw"
    output: str  # the module whose output carries this conv's activations (a residual block for its conv_pwl)
    signed: bool  # output grid: unsigned after ReLU, signed after swish or no activation

    @property
    def name(self) -> str:
        where = self.part if self.layer is None else f"layers[{self.layer}]"
        return f"{where}.{self.conv}"

    @property
    def weight(self) -> str:
        """Parameter name of the conv weight in ``build_model(arch).state_dict()``."""
        return f"{self.module}.0.weight"


def _signed(act: str | None) -> bool:
    return act not in ("relu", "relu6")


def _block_slots(i: int, spec: BlockSpec) -> list[Slot]:
    base = f"blocks.{i}"
    if spec.type == "conv":
        return [Slot(i, "layers", "conv", spec.out_chs, base, base, _signed(spec.act))]
    slots = []
    for conv in spec.convs():
        last = conv.name == "conv_pwl"
        output = base if last else f"{base}.{conv.name}"
        slots.append(Slot(i, "layers", conv.name, conv.out_chs, f"{base}.{conv.name}", output,
                          True if last else _signed(spec.act)))
    return slots


def quant_slots(arch: Arch) -> tuple[Slot, ...]:
    """Every searched conv in forward order: the stem, each non-skip layer's convs, the head's 1x1."""
    slots = [Slot(None, "stem", "conv", arch.stem.out_chs, "stem", "stem", _signed(arch.stem.act))]
    for i, spec in enumerate(arch.layers):
        if spec.type != "skip":
            slots += _block_slots(i, spec)
    slots.append(Slot(None, "head", "conv", arch.head.hidden_chs, "head.conv", "head.conv", _signed(arch.head.act)))
    return tuple(slots)


def prune_slots(arch: Arch, source: str) -> tuple[Slot, ...]:
    """The hidden width of each irb / fused_irb layer; an arch without one cannot be pruned."""
    slots = [s for s in quant_slots(arch) if s.conv in ("conv_pw", "conv_exp")]
    if not slots:
        raise OnnxNasError("--mode prune searches the hidden widths of irb / fused_irb layers, and this arch has none",
                           where=source, fix="use --mode quant, or an arch with inverted residual blocks")
    too_narrow = next((s for s in slots if s.filters < 2), None)
    if too_narrow is not None:
        raise OnnxNasError(f"{too_narrow.name} has {too_narrow.filters} hidden filter; pruning needs 2 or more",
                           where=source, fix="use --mode quant for this arch")
    return tuple(slots)


def make_slots(arch: Arch, mode: str, source: str) -> tuple[Slot, ...]:
    if mode not in MODES:
        raise OnnxNasError(f"unknown mode {mode!r}", where="--mode", fix=f"use one of: {', '.join(MODES)}")
    return quant_slots(arch) if mode == "quant" else prune_slots(arch, source)


def groups_of(counts: Counts, ops: Sequence[Op]) -> tuple[FilterGroup, ...]:
    """The contiguous layout: the first counts[0] filters at ops[0], the next counts[1] at ops[1], ...; no empty group."""
    return tuple(FilterGroup(c, op.weight_bits, op.act_bits) for c, op in zip(counts, ops) if c > 0)


def _with_groups(spec: SpecT, conv: str, groups: tuple[FilterGroup, ...]) -> SpecT:
    kept = tuple((name, g) for name, g in spec.filter_groups if name != conv)
    order = [c.name for c in spec.convs()]
    merged = tuple(sorted((*kept, (conv, groups)), key=lambda item: order.index(item[0])))
    return dataclasses.replace(spec, filter_groups=merged)


def quant_arch(arch: Arch, slots: Sequence[Slot], config: Configuration, ops: Sequence[Op]) -> Arch:
    """The arch whose every slot carries the filter groups of its counts."""
    stem, layers, head = arch.stem, list(arch.layers), arch.head
    for slot, counts in zip(slots, config):
        groups = groups_of(counts, ops)
        if slot.part == "stem":
            stem = _with_groups(stem, slot.conv, groups)
        elif slot.part == "head":
            head = _with_groups(head, slot.conv, groups)
        else:
            layers[slot.layer] = _with_groups(layers[slot.layer], slot.conv, groups)  # type: ignore[index]
    return dataclasses.replace(arch, stem=stem, layers=tuple(layers), head=head)


def uniform_groups(spec: SpecT, op: Op) -> SpecT:
    """Every conv of a spec at one op (none for float 32:32, a conv's default)."""
    if op == Op(FLOAT_BITS, FLOAT_BITS):
        return dataclasses.replace(spec, filter_groups=())
    return dataclasses.replace(spec, filter_groups=tuple((c.name, (FilterGroup(c.out_chs, op.weight_bits, op.act_bits),))
                                                         for c in spec.convs()))


def prune_arch(arch: Arch, slots: Sequence[Slot], config: Configuration, op: Op) -> Arch:
    """The derived arch with each slot's hidden width at its kept filters, every conv at ``op``."""
    layers = list(arch.layers)
    for slot, (kept,) in zip(slots, config):
        layers[slot.layer] = dataclasses.replace(layers[slot.layer], hidden_chs=kept)  # type: ignore[index]
    changed = any(a.hidden_chs != b.hidden_chs for a, b in zip(arch.layers, layers))
    return dataclasses.replace(arch, stem=uniform_groups(arch.stem, op),
                               layers=tuple(uniform_groups(s, op) if s.type != "skip" else s for s in layers),
                               head=uniform_groups(arch.head, op), derived=arch.derived or changed)
