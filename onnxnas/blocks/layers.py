"""Conv-BN-Act and Squeeze-Excite: the building pieces of every block."""

from __future__ import annotations

import torch
from torch import nn

from onnxnas.blocks.spec import BN_EPS


def make_act(name: str) -> nn.Module:
    """The activations the spaces use; swish is SiLU (exports as Sigmoid*Mul)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training, zero a residual branch for a ``rate`` fraction of the samples
    (rescaling the rest); an identity in eval, so it never reaches ONNX."""
    if rate == 0.0 or not training:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device) >= rate
    return x * keep / (1.0 - rate)


class ConvBnAct(nn.Sequential):
    """kxk conv ('same': k // 2 on each side, or 'valid': none) -> BN -> optional activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 act: str | None = "relu", groups: int = 1, padding: str = "same", bn_eps: float = BN_EPS):
        layers: list[nn.Module] = [
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2 if padding == "same" else 0,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_chs, eps=bn_eps),
        ]
        if act is not None:
            layers.append(make_act(act))
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]


class SqueezeExcite(nn.Module):
    """Channel attention: pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate."""

    def __init__(self, chs: int, rd_chs: int, act: str = "relu"):
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act = make_act(act)
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * scale.sigmoid()
