"""Gradients for alpha: eq. 3's score function (the faithful default) and the Gumbel relaxation (ours).

Both minimize ``L = CE + lam * sigma(BOPs / target)``, sigma(r) = r^2. The score estimator draws
``samples`` configurations on one batch, in eval mode under no_grad, and sets
``grad_l = 1/|S| sum_a L(a; w) (a_l - C_l p_l)`` with no baseline (authors' code).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from onnxnas.search.filterlevel.quantnet import FilterLevelNet
from onnxnas.search.filterlevel.relaxed_bops import relaxed_bops
from onnxnas.search.filterlevel.slots import Configuration

ESTIMATORS = ("score", "gumbel")


def penalty(bops: torch.Tensor | float, target: float, lam: float) -> torch.Tensor | float:
    """lam * sigma(BOPs / target) with sigma(r) = r^2 (the authors' defaults lam = 1)."""
    return lam * (bops / target) ** 2


@dataclasses.dataclass
class Estimate:
    """One alpha gradient: per-slot gradients, the mean loss, and what it sampled."""

    grads: list[torch.Tensor]
    loss: float
    bops: float
    samples: list[tuple[Configuration, float, float]]  # (configuration, loss, BOPs)


def sample_configuration(net: FilterLevelNet) -> Configuration:
    problem = net.problem
    return tuple(problem.sampler.sample(s.filters, a) for s, a in zip(problem.slots, net.alphas))


@torch.no_grad()
def score_estimate(net: FilterLevelNet, x: torch.Tensor, y: torch.Tensor, target: float, lam: float,
                   samples: int) -> Estimate:
    problem, was_training = net.problem, net.training
    net.eval()
    grads = [torch.zeros_like(a, dtype=torch.float32) for a in net.alphas]
    drawn = []
    for _ in range(samples):
        config = sample_configuration(net)
        net.set_configuration(config)
        bops = problem.bops(config)
        loss = float(F.cross_entropy(net(x).float(), y)) + penalty(bops, target, lam)
        for g, slot, alpha, counts in zip(grads, problem.slots, net.alphas, config):
            g += loss * problem.sampler.score(slot.filters, alpha, counts).to(g.device)
        drawn.append((config, loss, bops))
    net.train(was_training)
    return Estimate([g / samples for g in grads], sum(d[1] for d in drawn) / samples,
                    sum(d[2] for d in drawn) / samples, drawn)


def gumbel_estimate(net: FilterLevelNet, x: torch.Tensor, y: torch.Tensor, target: float, lam: float,
                    tau: float) -> Estimate:
    """Each filter draws a relaxed one-hot over its conv's ops from the conv's shared logits (eval mode)."""
    problem, was_training = net.problem, net.training
    net.eval()
    mixes = [F.gumbel_softmax(a.expand(s.filters, -1), tau=tau, hard=False, dim=1)
             for s, a in zip(problem.slots, net.alphas)]
    net.set_relaxed(mixes)
    bops = relaxed_bops(problem, mixes)
    loss = F.cross_entropy(net(x).float(), y) + penalty(bops, target, lam).float()
    grads = torch.autograd.grad(loss, list(net.alphas))
    net.set_float()
    net.train(was_training)
    return Estimate([g.detach() for g in grads], float(loss.detach()), float(bops.detach()), [])
