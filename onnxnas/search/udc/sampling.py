"""Sampling the relaxed decisions: Gumbel-softmax, rejection sampling (Alg. 1) and the top-kappa STE (App. D)."""

from __future__ import annotations

import torch


def gumbel_samples(logits: torch.Tensor, tau: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` relaxed one-hot samples (rows) of softmax(logits) at temperature ``tau``, differentiable in logits."""
    uniform = torch.rand((count, logits.numel()), generator=generator, dtype=logits.dtype).clamp_(1e-10, 1.0 - 1e-7)
    gumbel = -torch.log(-torch.log(uniform))
    return torch.softmax((torch.log_softmax(logits, dim=0) + gumbel.to(logits.device)) / tau, dim=1)


def accepted_average(samples: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
    """Alg. 1: the mean of the samples whose argmax is argmax pi, or None if none is accepted."""
    accepted = samples.argmax(dim=1) == int(logits.detach().argmax())
    if not bool(accepted.any()):
        return None
    return samples[accepted].mean(dim=0)


def top_kappa_ste(z: torch.Tensor, kappa: int) -> torch.Tensor:
    """Forward: the top-kappa entries of z renormalized to 1; backward: the gradient of z itself."""
    if kappa >= z.numel():
        return z
    kept = torch.zeros_like(z).scatter_(0, torch.topk(z.detach(), kappa).indices, 1.0)
    top = z.detach() * kept
    return z + (top / top.sum() - z).detach()
