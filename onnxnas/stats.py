"""Parameter and MAC counts of a network at its input resolution, and every cost of an arch."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from onnxnas.arch import Arch
    from onnxnas.lut.table import LatencyTable


@dataclasses.dataclass(frozen=True)
class ModelStats:
    params: int
    macs: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def count_stats(model: nn.Module, input_shape: tuple[int, ...]) -> ModelStats:
    """Parameters, and multiply-accumulates of convolutions and linear layers for one input.

    Counted with forward hooks on a real forward pass so that strides, groups and
    skipped layers are accounted exactly as the network runs.
    """
    macs = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = module.kernel_size
        macs += output.numel() // output.shape[0] * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() // output.shape[0] * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape[1:])))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return ModelStats(params=sum(p.numel() for p in model.parameters()), macs=macs)


def arch_stats(arch: "Arch", table: "LatencyTable | None" = None, precision: str | None = None) -> dict[str, Any]:
    """Every cost of an arch (docs/design.md §13), as `arch stats` prints them; latency only with a table."""
    from onnxnas.cost import BopsCost, LatencyCost, SizeCost, arch_counts

    counts, size = arch_counts(arch), SizeCost()
    result: dict[str, Any] = {**dataclasses.asdict(counts), "bops": BopsCost().exact(arch),
                              "size_mib": size.exact(arch), "num_weights": size.num_weights(arch)}
    if table is not None:
        result["latency_us"] = LatencyCost(table, precision).exact(arch)
    return result
