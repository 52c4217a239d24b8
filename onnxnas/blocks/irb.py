"""Inverted residual blocks (MobileNetV2 / GPUNet layout).

Both take an optional ``hidden_mask`` (a 0/1 vector over the hidden channels) so a
search can evaluate narrower widths with shared weights, and finalize can slice them.
"""

from __future__ import annotations

import torch
from torch import nn

from onnxnas.blocks.layers import ConvBnAct, SqueezeExcite, drop_path
from onnxnas.blocks.spec import BN_EPS


class _InvertedResidualBase(nn.Module):
    """Shared forward: expansion part (subclass) -> [SE] -> 1x1 project -> BN -> (+x, drop-path in training)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, hidden_chs: int, se: bool, act: str, bn_eps: float):
        super().__init__()
        self.has_residual = stride == 1 and in_chs == out_chs
        self.se = SqueezeExcite(hidden_chs, max(1, int(in_chs * 0.25)), act) if se else nn.Identity()
        self.conv_pwl = ConvBnAct(hidden_chs, out_chs, 1, act=None, bn_eps=bn_eps)
        self.hidden_mask: torch.Tensor | None = None
        self.drop_path_rate = 0.0  # set by build_model from the arch's drop_path_rate

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.expand(x)
        if self.hidden_mask is not None:
            hidden = hidden * self.hidden_mask.view(1, -1, 1, 1)
        out = self.conv_pwl(self.se(hidden))
        return drop_path(out, self.drop_path_rate, self.training) + x if self.has_residual else out


class InvertedResidual(_InvertedResidualBase):
    """IRB: 1x1 expand -> BN -> act -> kxk depthwise (stride) -> BN -> act -> [SE] -> 1x1 project -> BN."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 hidden_chs: int = 0, se: bool = False, act: str = "relu", padding: str = "same",
                 bn_eps: float = BN_EPS):
        super().__init__(in_chs, out_chs, stride, hidden_chs, se, act, bn_eps)
        self.conv_pw = ConvBnAct(in_chs, hidden_chs, 1, act=act, bn_eps=bn_eps)
        self.conv_dw = ConvBnAct(hidden_chs, hidden_chs, kernel_size, stride, act=act, groups=hidden_chs,
                                 padding=padding, bn_eps=bn_eps)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_dw(self.conv_pw(x))


class FusedInvertedResidual(_InvertedResidualBase):
    """Fused-IRB: kxk expand conv (stride) -> BN -> act -> [SE] -> 1x1 project -> BN."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 hidden_chs: int = 0, se: bool = False, act: str = "relu", padding: str = "same",
                 bn_eps: float = BN_EPS):
        super().__init__(in_chs, out_chs, stride, hidden_chs, se, act, bn_eps)
        self.conv_exp = ConvBnAct(in_chs, hidden_chs, kernel_size, stride, act=act, padding=padding, bn_eps=bn_eps)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_exp(x)


class DepthwiseSeparable(_InvertedResidualBase):
    """MobileNetV2's t=1 block: kxk depthwise (stride) -> BN -> act -> [SE] -> 1x1 project -> BN.

    Its hidden width is its input width (no expansion conv).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 hidden_chs: int = 0, se: bool = False, act: str = "relu", padding: str = "same",
                 bn_eps: float = BN_EPS):
        if hidden_chs not in (0, in_chs):
            raise ValueError(f"a depthwise-separable block has hidden_chs == in_chs ({in_chs}), not {hidden_chs}")
        super().__init__(in_chs, out_chs, stride, in_chs, se, act, bn_eps)
        self.conv_dw = ConvBnAct(in_chs, in_chs, kernel_size, stride, act=act, groups=in_chs, padding=padding,
                                 bn_eps=bn_eps)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_dw(x)
