"""Blocks follow the GPUNet/timm layout; the builder makes GPUNet-1 with its published size."""

from __future__ import annotations

import random

import torch

from onnxnas.blocks import BlockSpec, build_block, build_model
from onnxnas.blocks.irb import FusedInvertedResidual, InvertedResidual
from onnxnas.space import load_space
from onnxnas.space.choose import gpunet1_arch, random_arch
from onnxnas.stats import count_stats


def test_irb_layout_and_residual() -> None:
    block = build_block(BlockSpec("irb", 32, 32, 1, 5, "swish", hidden_chs=96, se=True))
    assert isinstance(block, InvertedResidual) and block.has_residual
    assert block.conv_pw.conv.weight.shape == (96, 32, 1, 1)
    assert block.conv_dw.conv.weight.shape == (96, 1, 5, 5) and block.conv_dw.conv.groups == 96
    assert block.se.conv_reduce.weight.shape == (8, 96, 1, 1)  # SE width = 0.25 x block input channels
    assert block.conv_pwl.conv.weight.shape == (32, 96, 1, 1)
    x = torch.randn(2, 32, 8, 8)
    block.eval()
    with torch.no_grad():
        without_residual = block.conv_pwl(block.se(block.expand(x)))
        torch.testing.assert_close(block(x), without_residual + x)


def test_fused_irb_stride_and_no_residual() -> None:
    block = build_block(BlockSpec("fused_irb", 16, 24, 2, 3, "swish", hidden_chs=64))
    assert isinstance(block, FusedInvertedResidual) and not block.has_residual
    assert block.conv_exp.conv.weight.shape == (64, 16, 3, 3)
    assert block(torch.randn(1, 16, 15, 15)).shape == (1, 24, 8, 8)


def test_hidden_mask_equals_narrower_block() -> None:
    """Masking hidden channels is exactly a narrower block with the same leading weights."""
    wide = build_block(BlockSpec("irb", 16, 16, 1, 3, "relu", hidden_chs=64, se=True)).eval()
    narrow = build_block(BlockSpec("irb", 16, 16, 1, 3, "relu", hidden_chs=32, se=True)).eval()
    state = {}
    for name, tensor in wide.state_dict().items():
        target = narrow.state_dict()[name]
        state[name] = tensor[tuple(slice(0, n) for n in target.shape)] if tensor.dim() else tensor
    narrow.load_state_dict(state)
    wide.hidden_mask = torch.cat([torch.ones(32), torch.zeros(32)])
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x), atol=1e-5, rtol=1e-5)


def test_gpunet1_matches_published_size() -> None:
    arch = gpunet1_arch(load_space("gpunet1"))
    model = build_model(arch)
    stats = count_stats(model, arch.input_shape)
    assert arch.depth == 14  # 1 conv + 2 + 2 fused-IRB + 1 + 4 + 4 IRB
    assert stats.params == 12_704_192  # GPUNet-1: 12.7 M parameters
    assert 3.3e9 < stats.macs < 3.45e9  # GPUNet-1: 3.3 GFLOPs (MACs) at 288x288
    assert model(torch.randn(1, 3, 288, 288)).shape == (1, 1000)


def test_random_tiny_archs_run() -> None:
    space = load_space("tiny")
    for seed in range(3):
        arch = random_arch(space, random.Random(seed))
        assert build_model(arch)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
