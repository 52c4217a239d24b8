"""The relaxed UDC network (paper eqs. 1-2): one weight tensor theta per conv, shared by every decision.

A layer computes ``f(x, q * m) * w``: ``q = sum_k z_q[k] Q(theta, b_k, r_k)`` (one learned range per
bitwidth and tensor), ``m = sum_k z_s[k] m_k`` (magnitude masks of theta, refreshed every 16 steps),
``w = sum_k z_w[k] w_k`` (the first rho_k of the hidden channels), and a skippable layer mixes
in identity, ``z_op[block] f + z_op[skip] x``, so depth is searched.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from onnxnas.blocks import build_block
from onnxnas.blocks.builder import Head
from onnxnas.compress.masks import RefreshedMasks
from onnxnas.compress.quantizer import LearnedRanges
from onnxnas.search.udc.options import BLOCK, SKIPPED, LayerOptions, layer_options
from onnxnas.space.spec import SearchSpace

Decisions = dict[str, torch.Tensor]  # decision name -> relaxed one-hot over its options


def _mix(weights: torch.Tensor, parts: list[torch.Tensor]) -> torch.Tensor:
    total = weights[0] * parts[0]
    for w, part in zip(weights[1:], parts[1:]):
        total = total + w * part
    return total


class UdcLayer(nn.Module):
    """One position's block at its widest option, with the ranges and masks of each weight tensor."""

    def __init__(self, options: LayerOptions):
        super().__init__()
        self.options = options
        pos = options.position
        self.block = build_block(pos.block(kernel_size=pos.kernel_sizes[0], se=pos.se_options[0],
                                           hidden_chs=options.widths[-1][1]))
        self.weight_names = [n for n, p in self.block.named_parameters() if p.dim() > 1]  # conv weights, SE included
        self.ranges = nn.ModuleDict({n.replace(".", "_"): LearnedRanges(options.bits) for n in self.weight_names})
        widest = options.widths[-1][1]
        width_masks = torch.zeros(len(options.widths), max(widest, 1))
        for k, (_, hidden) in enumerate(options.widths):
            width_masks[k, :hidden] = 1.0
        self.register_buffer("width_masks", width_masks, persistent=False)
        self.reset_masks()

    def reset_masks(self) -> None:
        """Start a new refresh cycle (each epoch), so a resumed run recomputes the same masks."""
        self._refreshers = {n: RefreshedMasks() for n in self.weight_names}
        self._masks: dict[str, tuple[torch.Tensor, ...]] = {}

    def refresh_masks(self) -> None:
        """One training step: masks m_k of every tensor, recomputed from |theta| every 16 steps (Alg. 2)."""
        params = dict(self.block.named_parameters())
        for n in self.weight_names:
            self._masks[n] = self._refreshers[n](params[n], self.options.fractions)

    @torch.no_grad()
    def init_ranges(self) -> None:
        params = dict(self.block.named_parameters())
        for n in self.weight_names:
            self.ranges[n.replace(".", "_")].init_from(params[n])

    def forward(self, x: torch.Tensor, z: Decisions, quantize: bool) -> torch.Tensor:
        if not self._masks:
            self.refresh_masks()
        params = dict(self.block.named_parameters())
        weights = {}
        for n in self.weight_names:
            theta, ranges = params[n], self.ranges[n.replace(".", "_")]
            if quantize:
                q = [ranges.quantize(theta, k) for k in range(len(self.options.bits))]
                theta = _mix(z["bits"], q) if "bits" in z else q[0]
            masks = self._masks[n]
            weights[n] = theta * (_mix(z["sparsity"], list(masks)) if "sparsity" in z else masks[0])
        if hasattr(self.block, "hidden_mask"):
            self.block.hidden_mask = _mix(z["width"], list(self.width_masks)) if "width" in z else None
        out = functional_call(self.block, weights, (x,), strict=False)
        if "op" in z:
            out = z["op"][BLOCK] * out + z["op"][SKIPPED] * x
        return out


class UdcSupernet(nn.Module):
    """Stem (fixed) -> one :class:`UdcLayer` per position -> head (fixed), with one logit vector per searched decision."""

    def __init__(self, space: SearchSpace, num_classes: int):
        super().__init__()
        self.space = space
        self.options = layer_options(space)
        self.stem = build_block(space.stem_block())
        self.layers = nn.ModuleList(UdcLayer(o) for o in self.options)
        self.head = Head(space.head_spec(num_classes))
        self.logits = nn.ParameterDict({f"{i}_{d}": nn.Parameter(torch.zeros(o.count(d)))
                                        for i, o in enumerate(self.options) for d in o.searched()})
        self.register_buffer("ranges_ready", torch.tensor(False))

    def decisions(self) -> list[dict[str, nn.Parameter]]:
        """Per layer, its searched decisions' logits (stored as normalized log pi after projections)."""
        return [{d: self.logits[f"{i}_{d}"] for d in o.searched()} for i, o in enumerate(self.options)]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.logits.values()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.logits.values())

    def forward(self, x: torch.Tensor, z: list[Decisions]) -> torch.Tensor:
        x = self.stem(x)
        quantize = bool(self.ranges_ready)
        for layer, decisions in zip(self.layers, z):
            x = layer(x, decisions, quantize)
        return self.head(x)

    def refresh_masks(self) -> None:
        for layer in self.layers:
            layer.refresh_masks()

    def reset_masks(self) -> None:
        for layer in self.layers:
            layer.reset_masks()

    @torch.no_grad()
    def init_ranges(self) -> None:
        """The ranges' MSE init from the trained theta (end of warm-up); quantization is on from here."""
        for layer in self.layers:
            layer.init_ranges()
        self.ranges_ready.fill_(True)

    def argmax_config(self) -> list[dict[str, int]]:
        """The likeliest option of every decision (fixed decisions at their only option)."""
        return [{d: int(logits.detach().argmax()) for d, logits in decisions.items()} for decisions in self.decisions()]

    def quant_ranges(self, config: list[dict[str, int]]) -> dict[str, float]:
        """The learned range of each quantized tensor at its chosen bits, in build_model(arch)'s names
        (none before the ranges are initialized, or for a skipped or 32-bit layer)."""
        if not bool(self.ranges_ready):
            return {}
        ranges = {}
        for i, (layer, c) in enumerate(zip(self.layers, config)):
            k = c.get("bits", 0)
            if c.get("op", BLOCK) == BLOCK and layer.options.bits[k] < 32:
                ranges.update({f"blocks.{i}.{n}": float(layer.ranges[n.replace(".", "_")].ranges[k].detach())
                               for n in layer.weight_names})
        return ranges

    def deploy_state_dict(self, skipped: list[bool]) -> dict[str, torch.Tensor]:
        """theta in ``build_model(arch)``'s names (full hidden width: finalize keeps the first hidden_chs)."""
        state = {f"stem.{k}": v for k, v in self.stem.state_dict().items()}
        for i, layer in enumerate(self.layers):
            if not skipped[i]:
                state.update({f"blocks.{i}.{k}": v for k, v in layer.block.state_dict().items()})
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().clone() for k, v in state.items()}
