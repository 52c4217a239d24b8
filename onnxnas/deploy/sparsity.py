"""Weight pruning in PyTorch before export: per-layer magnitude pruning and TensorRT's 2:4 pattern.

Pruning happens on the module, not the graph, so BN folding and per-channel quantization
downstream keep every zero (both scale whole output channels). Each function returns the
sparsity it actually reached, which the manifest reports beside the target.
"""

from __future__ import annotations

import torch
from torch import nn

from onnxnas.arch import Arch

SPARSITY_PATTERNS = ("2:4",)


def _weighted(module: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def magnitude_prune_(weight: torch.Tensor, nonzero_fraction: float) -> None:
    """Keep the largest-magnitude ``nonzero_fraction`` of ``weight`` (UDC's sparsity mask), zero the rest."""
    keep = max(1, round(nonzero_fraction * weight.numel()))
    if keep >= weight.numel():
        return
    threshold = weight.abs().flatten().kthvalue(weight.numel() - keep).values
    weight.mul_(weight.abs() > threshold)


@torch.no_grad()
def prune_layers_(model: nn.Module, arch: Arch) -> dict[str, dict[str, float]]:
    """Apply each layer's ``nonzero_fraction`` to its conv/linear weights; report target and real fractions."""
    report = {}
    for i, spec in enumerate(arch.layers):
        if spec.type == "skip" or spec.nonzero_fraction >= 1.0:
            continue
        weights = [m.weight for _, m in _weighted(model.blocks[i])]
        for weight in weights:
            magnitude_prune_(weight, spec.nonzero_fraction)
        total = sum(w.numel() for w in weights)
        report[str(i)] = {"target_nonzero": spec.nonzero_fraction,
                          "nonzero": round(sum(int(w.count_nonzero()) for w in weights) / total, 4)}
    return report


@torch.no_grad()
def prune_2to4_(model: nn.Module) -> dict[str, float | int]:
    """Zero the 2 smallest of every 4 consecutive input-channel weights (TensorRT's sparse pattern).

    Only dense convs and linears whose input width is a multiple of 4 are eligible;
    depthwise convs and the 3-channel stem are left dense, as TensorRT would.
    """
    pruned = total = zeros = 0
    for _, m in _weighted(model):
        groups = getattr(m, "groups", 1)
        if groups != 1 or m.weight.shape[1] % 4:
            continue
        w = m.weight.movedim(1, -1)  # (out, [kh, kw,] in): groups of 4 along the input channels
        blocks = w.reshape(-1, 4)
        drop = blocks.abs().topk(2, dim=1, largest=False).indices
        mask = torch.ones_like(blocks).scatter_(1, drop, 0.0)
        m.weight.copy_((blocks * mask).reshape(w.shape).movedim(-1, 1))
        pruned += 1
        total += m.weight.numel()
        zeros += m.weight.numel() - int(m.weight.count_nonzero())
    return {"pattern": "2:4", "tensors": pruned, "zero_fraction": round(zeros / total, 4) if total else 0.0}
