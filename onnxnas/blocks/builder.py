"""One builder from specs to modules (timm style): BlockSpec -> block, Arch -> network."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from onnxnas.blocks.irb import DepthwiseSeparable, FusedInvertedResidual, InvertedResidual
from onnxnas.blocks.layers import ConvBnAct
from onnxnas.blocks.spec import BlockSpec, HeadSpec

if TYPE_CHECKING:
    from onnxnas.arch import Arch


def build_block(spec: BlockSpec) -> nn.Module:
    """The module for one layer spec; ``skip`` is an identity."""
    if spec.type == "skip":
        return nn.Identity()
    if spec.type == "conv":
        return ConvBnAct(spec.in_chs, spec.out_chs, spec.kernel_size, spec.stride, act=spec.act)
    block_cls = {"irb": InvertedResidual, "fused_irb": FusedInvertedResidual, "ds": DepthwiseSeparable}.get(spec.type)
    if block_cls is None:
        raise ValueError(f"unknown block type {spec.type!r}")
    return block_cls(spec.in_chs, spec.out_chs, spec.kernel_size, spec.stride,
                     hidden_chs=spec.hidden_chs, se=spec.se, act=spec.act, shortcut=spec.shortcut)


class Head(nn.Module):
    """Conv1x1 + BN + act, global average pool, flatten, FC."""

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.conv = ConvBnAct(spec.in_chs, spec.hidden_chs, 1, act=spec.act)
        self.fc = nn.Linear(spec.hidden_chs, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


class Network(nn.Module):
    """stem -> blocks -> head; ``blocks`` holds one module per arch layer (skips included)."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def build_model(arch: "Arch") -> Network:
    """The concrete network of an arch, at its exact channel counts."""
    return Network(build_block(arch.stem), [build_block(layer) for layer in arch.layers], Head(arch.head))
