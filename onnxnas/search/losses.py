"""The PruNet search loss: CE + alpha * log(LAT)^beta, LAT in microseconds."""

from __future__ import annotations

import torch


def latency_penalty(latency_us: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """alpha * log(LAT)^beta: the log makes the pull relative, beta < 1 flattens it for large nets."""
    return alpha * torch.log(latency_us) ** beta


def search_loss(ce: torch.Tensor, latency_us: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return ce + latency_penalty(latency_us.float(), alpha, beta)
