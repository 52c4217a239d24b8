"""Block specs: the one vocabulary shared by spaces, arch.json, the LUT and the builder.

Argument names follow timm (``in_chs, out_chs, kernel_size, stride, hidden_chs, se, act``)
so that a spec's fields map one-to-one onto block constructor arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

BLOCK_TYPES = ("conv", "ds", "fused_irb", "irb", "skip")
IRB_TYPES = ("ds", "fused_irb", "irb")  # blocks with a hidden (expanded) width
ACTIVATIONS = ("relu", "relu6", "swish")
# Padding of a block's kxk (spatial) conv: "same" pads k // 2 on each side (out = ceil(in / stride));
# "valid" pads nothing (out = (in - k) // stride + 1), as NVIDIA's GPUNet builder gives its stride-2 Fused-IRBs.
PADDINGS = ("same", "valid")
BN_EPS = 1e-5  # PyTorch's default; NVIDIA's GPUNet uses 1e-3 (arch.json "bn_eps")
# The searched convs of each block type, in forward order, by their attribute names in onnxnas.blocks
# (SE convs and the classifier are not among them): the keys of ``filter_groups``.
CONV_NAMES = {"conv": ("conv",), "ds": ("conv_dw", "conv_pwl"), "fused_irb": ("conv_exp", "conv_pwl"),
              "irb": ("conv_pw", "conv_dw", "conv_pwl"), "skip": ()}
HEAD_CONV_NAMES = ("conv",)
# NeuralScale's projection residual (docs/design.md §11): a 1x1 conv + BN on the skip path of a block whose in != out
SHORTCUTS = ("conv1x1",)


@dataclasses.dataclass(frozen=True)
class FilterGroup:
    """Consecutive filters (output channels) of one conv that share weight and output-activation bits."""

    filters: int
    weight_bits: int
    act_bits: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# conv attribute name -> its groups, in CONV_NAMES order; a tuple so that specs stay hashable
FilterGroups = tuple[tuple[str, tuple[FilterGroup, ...]], ...]


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """One conv of a block: what the cost models need to count weights, MACs and BOPs."""

    name: str
    in_chs: int
    out_chs: int
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    padding: str = "same"

    @property
    def weights(self) -> int:
        return self.out_chs * (self.in_chs // self.groups) * self.kernel_size ** 2

    def out_hw(self, in_hw: int) -> int:
        """Spatial output size for an ``in_hw`` x ``in_hw`` input (odd kernels)."""
        if self.padding == "valid":
            return (in_hw - self.kernel_size) // self.stride + 1
        return -(-in_hw // self.stride)


def _groups_dict(groups: FilterGroups) -> dict[str, list[dict[str, int]]]:
    return {name: [g.to_dict() for g in conv_groups] for name, conv_groups in groups}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One layer of a network: a concrete block, or ``skip`` (identity).

    ``hidden_chs`` is the concrete expanded width of an (fused) IRB. The compression
    fields are per-layer decisions of compression-aware searches; defaults are dense fp32.
    ``padding`` applies to the block's kxk conv (see ``PADDINGS``).
    """

    type: str
    in_chs: int
    out_chs: int
    stride: int = 1
    kernel_size: int = 1
    act: str = "relu"
    hidden_chs: int = 0
    se: bool = False
    weight_bits: int = 32
    nonzero_fraction: float = 1.0
    width_fraction: float = 1.0
    filter_groups: FilterGroups = ()
    padding: str = "same"
    shortcut: str = ""  # "" (identity add where the shape is kept) or "conv1x1" (projection, in != out)

    @property
    def has_residual(self) -> bool:
        """IRBs add their input back at stride 1: as it is when in == out, through ``shortcut`` otherwise."""
        return self.type in IRB_TYPES and self.stride == 1 and (self.in_chs == self.out_chs or bool(self.shortcut))

    def shortcut_conv(self) -> ConvShape | None:
        """The projection shortcut's 1x1 conv (followed by a BN), if the block has one."""
        return ConvShape("conv_sc", self.in_chs, self.out_chs) if self.shortcut else None

    @property
    def se_chs(self) -> int:
        """SE reduction width: 0.25 x the block's input channels (GPUNet/timm convention)."""
        return max(1, int(self.in_chs * 0.25))

    @property
    def is_compressed(self) -> bool:
        return self.weight_bits < 32 or self.nonzero_fraction < 1.0

    def convs(self) -> tuple[ConvShape, ...]:
        """The searched convs in forward order (named as in CONV_NAMES); SE convs are :meth:`se_convs`."""
        k, s, h, pad = self.kernel_size, self.stride, self.hidden_chs, self.padding
        if self.type == "conv":
            return (ConvShape("conv", self.in_chs, self.out_chs, k, s, padding=pad),)
        if self.type == "irb":
            expand: tuple[ConvShape, ...] = (ConvShape("conv_pw", self.in_chs, h),
                                             ConvShape("conv_dw", h, h, k, s, groups=h, padding=pad))
        elif self.type == "fused_irb":
            expand = (ConvShape("conv_exp", self.in_chs, h, k, s, padding=pad),)
        elif self.type == "ds":
            expand = (ConvShape("conv_dw", self.in_chs, self.in_chs, k, s, groups=self.in_chs, padding=pad),)
        else:
            return ()
        return (*expand, ConvShape("conv_pwl", expand[-1].out_chs, self.out_chs))

    def se_convs(self) -> tuple[ConvShape, ...]:
        """SE reduce and expand (1x1 on the pooled hidden tensor, with biases), if the block has SE."""
        if not self.se or self.type not in IRB_TYPES:
            return ()
        hidden = self.in_chs if self.type == "ds" else self.hidden_chs
        return ConvShape("conv_reduce", hidden, self.se_chs), ConvShape("conv_expand", self.se_chs, hidden)

    def groups_of(self, conv: str) -> tuple[FilterGroup, ...]:
        """The filter groups of one conv; empty when the conv has none (its bits are the layer's)."""
        return dict(self.filter_groups).get(conv, ())

    def out_hw(self, in_hw: int) -> int:
        """Spatial size after this block: that of its one kxk conv, which has the block's kernel, stride and padding."""
        if self.type == "skip":
            return in_hw
        return ConvShape(self.type, self.in_chs, self.out_chs, self.kernel_size, self.stride, padding=self.padding).out_hw(in_hw)

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that mean something for this block type, defaults omitted."""
        data: dict[str, Any] = {"type": self.type, "in_chs": self.in_chs, "out_chs": self.out_chs, "stride": self.stride}
        if self.type == "skip":
            return data
        data.update(kernel_size=self.kernel_size, act=self.act)
        if self.type in IRB_TYPES:
            data.update(hidden_chs=self.hidden_chs, se=self.se)
        for name in ("padding", "weight_bits", "nonzero_fraction", "width_fraction"):
            value = getattr(self, name)
            if value != getattr(BlockSpec, name):
                data[name] = value
        if self.filter_groups:
            data["filter_groups"] = _groups_dict(self.filter_groups)
        if self.shortcut:
            data["shortcut"] = self.shortcut
        return data


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """Conv1x1 (in -> hidden) + BN + act, global average pool, FC (hidden -> classes)."""

    in_chs: int
    hidden_chs: int
    num_classes: int
    act: str = "relu"
    filter_groups: FilterGroups = ()

    def convs(self) -> tuple[ConvShape, ...]:
        """The head's searched 1x1 conv (the classifier is a linear layer, never searched)."""
        return (ConvShape("conv", self.in_chs, self.hidden_chs),)

    def groups_of(self, conv: str) -> tuple[FilterGroup, ...]:
        return dict(self.filter_groups).get(conv, ())

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"in_chs": self.in_chs, "hidden_chs": self.hidden_chs, "num_classes": self.num_classes,
                                "act": self.act}
        if self.filter_groups:
            data["filter_groups"] = _groups_dict(self.filter_groups)
        return data
