"""Per-slot configuration distributions (docs/design.md §12) and their score functions.

Quantization: ``A_l ~ Multinomial(C_l, softmax(alpha_l))`` over the ops, initial alpha giving the
largest op 1/(2|T|-1) and every other op 2/(2|T|-1) (authors' code). Pruning (slimmable):
``A_l ~ Binomial(C_l - 1, sigmoid(alpha_l)) + 1`` kept filters, the first ones. Sampling uses the
global torch RNG, which the search checkpoint saves, so a resumed run draws what it would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch

from onnxnas.search.filterlevel.ops import Op
from onnxnas.search.filterlevel.slots import Counts


def largest_remainder(total: int, probs: Sequence[float]) -> Counts:
    """Integers summing to ``total`` nearest to ``total * probs``: floors, then +1 to the largest remainders
    (ties to the earlier op)."""
    exact = [total * float(p) for p in probs]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return tuple(counts)


def largest_op(ops: Sequence[Op]) -> int:
    """Index of the op with the most bits (weight bits first): the paper's 8:8."""
    return max(range(len(ops)), key=lambda i: (ops[i].weight_bits, ops[i].act_bits))


class Sampler(Protocol):
    """One slot's distribution over filter counts, parameterized by logits alpha."""

    def initial(self, filters: int) -> torch.Tensor: ...

    def sample(self, filters: int, alpha: torch.Tensor) -> Counts: ...

    def score(self, filters: int, alpha: torch.Tensor, counts: Counts) -> torch.Tensor: ...

    def deterministic(self, filters: int, alpha: torch.Tensor) -> Counts: ...


class MultinomialSampler:
    """Counts per op of a conv's C filters."""

    def __init__(self, ops: Sequence[Op]):
        self.n_ops, self.top = len(ops), largest_op(ops)

    def initial(self, filters: int) -> torch.Tensor:
        t = self.n_ops
        probs = torch.full((t,), 2.0 / (2 * t - 1))
        probs[self.top] = 1.0 / (2 * t - 1)
        return probs.log()

    def sample(self, filters: int, alpha: torch.Tensor) -> Counts:
        draws = torch.multinomial(torch.softmax(alpha.detach().float(), 0), filters, replacement=True)
        return tuple(int(c) for c in torch.bincount(draws, minlength=self.n_ops))

    def score(self, filters: int, alpha: torch.Tensor, counts: Counts) -> torch.Tensor:
        """d log P(a) / d alpha = a - C p (eq. 3's factor)."""
        return torch.tensor(counts, dtype=torch.float32) - filters * torch.softmax(alpha.detach().float(), 0)

    def deterministic(self, filters: int, alpha: torch.Tensor) -> Counts:
        return largest_remainder(filters, torch.softmax(alpha.detach().float(), 0).tolist())


class BinomialSampler:
    """Kept filters (at least one) of a slimmable hidden width; alpha is one logit."""

    def initial(self, filters: int) -> torch.Tensor:
        return torch.zeros(1)

    def sample(self, filters: int, alpha: torch.Tensor) -> Counts:
        p = torch.sigmoid(alpha.detach().float())
        return (int(torch.distributions.Binomial(filters - 1, p).sample()) + 1,)

    def score(self, filters: int, alpha: torch.Tensor, counts: Counts) -> torch.Tensor:
        return torch.tensor([counts[0] - 1 - (filters - 1) * float(torch.sigmoid(alpha.detach().float()))])

    def deterministic(self, filters: int, alpha: torch.Tensor) -> Counts:
        return (round((filters - 1) * float(torch.sigmoid(alpha.detach().float()))) + 1,)
