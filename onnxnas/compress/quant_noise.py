"""Quant-noise (Fan et al.), used by the finetune's first stage (docs/design.md §7).

Quantizing only a random fraction alpha of the elements per step lets the rest pass
unbiased gradients while the network gets used to the grid.
"""

from __future__ import annotations

import torch


def quant_noise(theta: torch.Tensor, quantized: torch.Tensor, r: torch.Tensor, alpha: float, *,
                training: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each element is ``quantized`` with probability alpha, else ``clip(theta, -r, r)``; eval returns ``quantized``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"quant-noise alpha must lie in [0, 1], got {alpha}")
    if not training:
        return quantized
    chosen = torch.rand(theta.shape, generator=generator, device=theta.device) < alpha
    return torch.where(chosen, quantized, torch.clamp(theta, -r, r))
