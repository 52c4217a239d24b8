"""Taylor-FO filter importance on post-BN gates, and the masks that prune filters in place.

A gate of 1 sits after every BN that produces a variable's filters (and after each block's
last hidden BN; a depthwise-separable block's depthwise BN carries its input variable's
filters). A filter's score per batch is ``(gate * dL/dgate)^2 = (sum_{n,h,w} dL/dy * y)^2``
for the BN output y; scores add up over the batches since the last pruning step and are
read as their mean. A tied variable's score is the sum of its members'. Pruned channels have
gate 0, so they output nothing and score 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from onnxnas.blocks.builder import Network
from onnxnas.scale.variables import WidthPlan


def _output_bns(model: Network, slot: str) -> list[nn.BatchNorm2d]:
    """The BNs whose outputs are a slot's filters (a projection shortcut's BN adds into the same ones)."""
    if slot == "stem":
        return [model.stem.bn]
    if slot == "head":
        return [model.head.conv.bn]
    block = model.blocks[int(slot.split(".")[1])]
    if hasattr(block, "conv_pwl"):
        return [block.conv_pwl.bn, *([block.shortcut.bn] if hasattr(block.shortcut, "bn") else [])]
    return [block.bn]


def _carried_bn(block: nn.Module) -> nn.BatchNorm2d | None:
    """A depthwise-separable block's depthwise BN: its channels are its input's filters, one for one.

    A train-mode BN after a per-channel op undoes any scale of its input channel, so a gate on the
    input variable alone reads a Taylor score of ~0 there (mbv2's stem: 1e-13 against 1e-4 to 1e-7
    elsewhere) and a gated-off filter would still emit the BN's bias. Gating this BN with the input
    variable's mask, and adding its score to that variable's, removes the filter and scores it.
    """
    if hasattr(block, "conv_dw") and not hasattr(block, "conv_pw"):
        return block.conv_dw.bn
    return None


def _hidden_bn(block: nn.Module) -> nn.BatchNorm2d | None:
    """The last BN over an (fused) IRB's hidden channels; a ds block's hidden width is its input's."""
    if hasattr(block, "conv_dw") and hasattr(block, "conv_pw"):
        return block.conv_dw.bn
    if hasattr(block, "conv_exp"):
        return block.conv_exp.bn
    return None


class Gates:
    """Masks and Taylor-FO scores for one network built at ``widths`` of ``plan``'s variables."""

    def __init__(self, model: Network, plan: WidthPlan, widths: Sequence[int]):
        self.plan = plan
        self.masks = [torch.ones(int(w)) for w in widths]
        self.scores = [torch.zeros(int(w)) for w in widths]
        self.hidden: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer index -> (mask, score)
        self.batches = 0
        self._handles = []
        for v, var in enumerate(plan.variables):
            for slot in var.slots:
                for bn in _output_bns(model, slot):
                    self._handles.append(bn.register_forward_hook(self._hook(self.masks[v], self.scores[v])))
        for i, block in enumerate(model.blocks):
            carried = _carried_bn(block)
            if carried is not None and plan.layer_vars[i] is not None:
                v = self._input_variable(i)
                self._handles.append(carried.register_forward_hook(self._hook(self.masks[v], self.scores[v])))
            bn = _hidden_bn(block)
            if bn is not None:
                mask, score = torch.ones(bn.num_features), torch.zeros(bn.num_features)
                self.hidden[i] = (mask, score)
                self._handles.append(bn.register_forward_hook(self._hook(mask, score)))

    def _hook(self, mask: torch.Tensor, score: torch.Tensor) -> Callable:
        def hook(module: nn.Module, inputs: tuple, y: torch.Tensor) -> torch.Tensor:
            gated = y * mask.to(y.device).view(1, -1, 1, 1)
            if gated.requires_grad:
                detached = y.detach()

                def accumulate(grad: torch.Tensor) -> None:
                    score.add_(((grad * detached).sum((0, 2, 3)) ** 2).cpu() * mask)
                gated.register_hook(accumulate)
            return gated
        return hook

    def batch_done(self) -> None:
        self.batches += 1

    def mean_scores(self) -> list[torch.Tensor]:
        """Each variable's per-filter score averaged over the batches since the last :meth:`reset`."""
        return [s / max(self.batches, 1) for s in self.scores]

    def reset(self) -> None:
        for s in [*self.scores, *(score for _, score in self.hidden.values())]:
            s.zero_()
        self.batches = 0

    def alive(self) -> list[int]:
        return [int(m.sum()) for m in self.masks]

    def prune(self, variable: int, channel: int) -> None:
        self.masks[variable][channel] = 0.0

    def follow_hidden(self) -> None:
        """Keep each block's ``round(e_l * alive inputs)`` best hidden channels (by their own scores)."""
        for i, (mask, score) in self.hidden.items():
            layer = self.plan.arch.layers[i]
            in_var = self._input_variable(i)
            keep = max(1, round(layer.hidden_chs / layer.in_chs * int(self.masks[in_var].sum())))
            keep = min(keep, mask.numel())
            order = torch.argsort(score * mask + mask * 1e-30, descending=True)  # alive before pruned on ties
            mask.zero_()
            mask[order[:keep]] = 1.0

    def _input_variable(self, layer: int) -> int:
        for j in range(layer - 1, -1, -1):
            var = self.plan.layer_vars[j]
            if var is not None:
                return var
        return 0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
