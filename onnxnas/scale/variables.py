"""The width variables of an arch (docs/design.md §11) and the derived arch at given widths.

Variables are the output widths of the stem, of every non-skip layer and of the head's hidden
1x1. With ``--residual tied`` the layers joined by identity adds share one variable, so every
identity add survives; with ``projection`` each layer is its own variable and a stride-1
block whose new in != out gets a ``shortcut: "conv1x1"``. Hidden widths follow their input
(``round(e_l * in_chs)``, e_l the input arch's ratio); SE widths follow from in_chs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from onnxnas.arch import Arch
from onnxnas.blocks.spec import BlockSpec
from onnxnas.errors import OnnxNasError
from onnxnas.schema import MAX_CHANNELS

RESIDUAL_MODES = ("tied", "projection")
MAX_FACTOR = 8  # max_l = 8x the input width


@dataclasses.dataclass(frozen=True)
class WidthVariable:
    """One free width: the slots (``stem``, ``layers.<i>``, ``head``) that take it, and its input value."""

    slots: tuple[str, ...]
    base: int

    @property
    def name(self) -> str:
        return "+".join(self.slots)

    @property
    def max_width(self) -> int:
        return min(MAX_FACTOR * self.base, MAX_CHANNELS)


@dataclasses.dataclass(frozen=True)
class WidthPlan:
    """An input arch, its width variables, and how every layer's widths follow from them."""

    arch: Arch
    residual: str
    variables: tuple[WidthVariable, ...]
    layer_vars: tuple[int | None, ...]  # the variable each non-skip layer's output takes (None for a skip)

    @classmethod
    def of(cls, arch: Arch, residual: str = "tied") -> "WidthPlan":
        if residual not in RESIDUAL_MODES:
            raise OnnxNasError(f"unknown residual mode {residual!r}", where="--residual",
                               fix=f"use one of: {', '.join(RESIDUAL_MODES)}")
        slots: list[list[str]] = [["stem"]]
        bases = [arch.stem.out_chs]
        current, layer_vars = 0, []
        for i, layer in enumerate(arch.layers):
            if layer.type == "skip":
                layer_vars.append(None)
                continue
            if residual == "tied" and layer.has_residual and not layer.shortcut:
                slots[current].append(f"layers.{i}")
            else:
                slots.append([f"layers.{i}"])
                bases.append(layer.out_chs)
                current = len(slots) - 1
            layer_vars.append(current)
        slots.append(["head"])
        bases.append(arch.head.hidden_chs)
        return cls(arch, residual, tuple(WidthVariable(tuple(s), b) for s, b in zip(slots, bases)), tuple(layer_vars))

    @property
    def base_widths(self) -> list[int]:
        return [v.base for v in self.variables]

    @property
    def max_widths(self) -> list[int]:
        return [v.max_width for v in self.variables]

    def apply(self, widths: Sequence[int], provenance: dict | None = None) -> Arch:
        """The derived arch at ``widths`` (one per variable); filter groups are dropped (they count filters)."""
        if len(widths) != len(self.variables) or min(widths) < 1:
            raise ValueError(f"need {len(self.variables)} positive widths, got {list(widths)}")
        a = self.arch
        stem = dataclasses.replace(a.stem, out_chs=int(widths[0]), filter_groups=())
        layers, chs = [], stem.out_chs
        for layer, var in zip(a.layers, self.layer_vars):
            out = chs if var is None else int(widths[var])
            layers.append(self._layer(layer, chs, out))
            chs = out
        head = dataclasses.replace(a.head, in_chs=chs, hidden_chs=int(widths[-1]), filter_groups=())
        return dataclasses.replace(a, stem=stem, layers=tuple(layers), head=head, derived=True,
                                   provenance=dict(provenance or {}))

    def _layer(self, layer: BlockSpec, in_chs: int, out_chs: int) -> BlockSpec:
        if layer.type == "skip":
            return dataclasses.replace(layer, in_chs=in_chs, out_chs=in_chs)
        hidden = layer.hidden_chs
        if layer.type == "ds":
            hidden = in_chs
        elif layer.type in ("irb", "fused_irb"):
            hidden = max(1, round(layer.hidden_chs * in_chs / layer.in_chs))
        project = layer.has_residual and in_chs != out_chs  # the input arch adds here: keep the add
        return dataclasses.replace(layer, in_chs=in_chs, out_chs=out_chs, hidden_chs=hidden, filter_groups=(),
                                   shortcut="conv1x1" if project else "")
