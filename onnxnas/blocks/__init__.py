"""PyTorch blocks and the spec -> module builder."""

from onnxnas.blocks.builder import Head, Network, build_block, build_model
from onnxnas.blocks.irb import DepthwiseSeparable, FusedInvertedResidual, InvertedResidual
from onnxnas.blocks.layers import ConvBnAct, SqueezeExcite, make_act
from onnxnas.blocks.spec import ACTIVATIONS, BLOCK_TYPES, IRB_TYPES, BlockSpec, HeadSpec

__all__ = [
    "ACTIVATIONS", "BLOCK_TYPES", "IRB_TYPES", "BlockSpec", "ConvBnAct", "DepthwiseSeparable", "FusedInvertedResidual", "Head", "HeadSpec",
    "InvertedResidual", "Network", "SqueezeExcite", "build_block", "build_model", "make_act",
]
