"""One builder from specs to modules (timm style): BlockSpec -> block, Arch -> network."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from onnxnas.blocks.irb import DepthwiseSeparable, FusedInvertedResidual, InvertedResidual
from onnxnas.blocks.layers import ConvBnAct
from onnxnas.blocks.spec import BN_EPS, BlockSpec, HeadSpec

if TYPE_CHECKING:
    from onnxnas.arch import Arch


def build_block(spec: BlockSpec, bn_eps: float = BN_EPS) -> nn.Module:
    """The module for one layer spec; ``skip`` is an identity."""
    if spec.type == "skip":
        return nn.Identity()
    if spec.type == "conv":
        return ConvBnAct(spec.in_chs, spec.out_chs, spec.kernel_size, spec.stride, act=spec.act, padding=spec.padding,
                         bn_eps=bn_eps)
    block_cls = {"irb": InvertedResidual, "fused_irb": FusedInvertedResidual, "ds": DepthwiseSeparable}.get(spec.type)
    if block_cls is None:
        raise ValueError(f"unknown block type {spec.type!r}")
    return block_cls(spec.in_chs, spec.out_chs, spec.kernel_size, spec.stride, hidden_chs=spec.hidden_chs, se=spec.se,
                     act=spec.act, padding=spec.padding, bn_eps=bn_eps)


class Head(nn.Module):
    """Conv1x1 + BN + act, global average pool, flatten, [dropout in training], FC."""

    def __init__(self, spec: HeadSpec, bn_eps: float = BN_EPS, dropout: float = 0.0):
        super().__init__()
        self.conv = ConvBnAct(spec.in_chs, spec.hidden_chs, 1, act=spec.act, bn_eps=bn_eps)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(spec.hidden_chs, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.conv(x).mean((2, 3))))


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
    """The concrete network of an arch, at its exact channel counts, with its BN eps, head dropout and
    drop-path rates (the k-th active layer's is ``drop_path_rate * (k + 2) / (depth + 2)``: NVIDIA's
    GPUNet builder ramps it over stem, layers and head; only residual blocks use it)."""
    blocks = [build_block(layer, arch.bn_eps) for layer in arch.layers]
    active = [block for block, layer in zip(blocks, arch.layers) if layer.type != "skip"]
    for k, block in enumerate(active):
        if hasattr(block, "drop_path_rate"):
            block.drop_path_rate = arch.drop_path_rate * (k + 2) / (len(active) + 2)
    return Network(build_block(arch.stem, arch.bn_eps), blocks, Head(arch.head, arch.bn_eps, arch.dropout))
