"""The projection of UDC eq. 8: ``pi <- softmax(log pi / T*)``, which keeps every categorical
within ``max_k pi[k] <= 1/|pi| + xi_t`` so no decision collapses before the search has explored."""

from __future__ import annotations

import torch

BISECTION_STEPS = 60


def _top(log_pi: torch.Tensor, t: float) -> float:
    return float(torch.softmax(log_pi / t, dim=0).max())


@torch.no_grad()
def projection_temperature(logits: torch.Tensor, xi: float) -> float:
    """T*: 1 if the bound already holds, else the smallest T > 1 meeting it (bisection; max pi falls as T grows)."""
    log_pi = torch.log_softmax(logits.detach().double(), dim=0)
    bound = 1.0 / logits.numel() + xi
    if _top(log_pi, 1.0) <= bound or bound >= 1.0:
        return 1.0
    low, high = 1.0, 2.0
    while _top(log_pi, high) > bound:
        low, high = high, high * 2.0
        if high > 1e12:  # only a bound at exactly 1/|pi| needs T -> infinity; uniform is its limit
            return high
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _top(log_pi, mid) > bound else (low, mid)
    return high


@torch.no_grad()
def project_(logits: torch.Tensor, xi: float) -> float:
    """Project one decision's logits in place (stored as normalized log pi / T*); returns T*."""
    t = projection_temperature(logits, xi)
    if t > 1.0:
        logits.copy_((torch.log_softmax(logits.double(), dim=0) / t).to(logits.dtype))
    return t
