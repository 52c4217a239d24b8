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


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One layer of a network: a concrete block, or ``skip`` (identity).

    ``hidden_chs`` is the concrete expanded width of an (fused) IRB. The compression
    fields are per-layer decisions of compression-aware searches; defaults are dense fp32.
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

    @property
    def has_residual(self) -> bool:
        """IRBs add their input back when the shape is kept (stride 1, in == out)."""
        return self.type in IRB_TYPES and self.stride == 1 and self.in_chs == self.out_chs

    @property
    def se_chs(self) -> int:
        """SE reduction width: 0.25 x the block's input channels (GPUNet/timm convention)."""
        return max(1, int(self.in_chs * 0.25))

    @property
    def is_compressed(self) -> bool:
        return self.weight_bits < 32 or self.nonzero_fraction < 1.0

    def out_hw(self, in_hw: int) -> int:
        """Spatial size after this block (padding keeps 'same', stride divides, rounding up)."""
        return (in_hw + self.stride - 1) // self.stride

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that mean something for this block type, defaults omitted."""
        data: dict[str, Any] = {"type": self.type, "in_chs": self.in_chs, "out_chs": self.out_chs, "stride": self.stride}
        if self.type == "skip":
            return data
        data.update(kernel_size=self.kernel_size, act=self.act)
        if self.type in IRB_TYPES:
            data.update(hidden_chs=self.hidden_chs, se=self.se)
        for name in ("weight_bits", "nonzero_fraction", "width_fraction"):
            value = getattr(self, name)
            if value != getattr(BlockSpec, name):
                data[name] = value
        return data


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """Conv1x1 (in -> hidden) + BN + act, global average pool, FC (hidden -> classes)."""

    in_chs: int
    hidden_chs: int
    num_classes: int
    act: str = "relu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
