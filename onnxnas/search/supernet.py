"""The supernet: one stochastic layer per position of a space, priced by the LUT.

A layer mixes its live candidates with Gumbel-softmax weights ``a = GumbelSoftmax(theta)``
at a constant temperature: ``x_{l+1} = sum_i a_i B_i(x_l)`` and ``LAT_l = sum_i a_i LAT_i``.
Candidates are onnxnas.blocks modules: one per (kernel, SE) as a Prunode over the hidden
width where the space offers the full width grid, one per concrete block otherwise.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onnxnas.blocks import Head, build_block
from onnxnas.blocks.spec import IRB_TYPES, BlockSpec
from onnxnas.search.latency import SpaceLatency
from onnxnas.search.prunode import Prunode, PrunodeMasks
from onnxnas.search.skipping import SkipCandidate, insert_skip, skip_multipliers
from onnxnas.space.choose import SKIP, Choice
from onnxnas.space.spec import LayerPosition, SearchSpace


class FixedCandidate(nn.Module):
    """A candidate with one shape and so one LUT latency."""

    def __init__(self, block: nn.Module, latency: float):
        super().__init__()
        self.block = block
        self.latency = latency

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, float]:
        return self.block(x), self.latency

    def expected_latency(self) -> float:
        return self.latency


class StochasticLayer(nn.Module):
    """The candidates of one position, their architecture weights, and what is left of them.

    ``theta`` keeps one entry per original candidate ("slot"); pruned slots are deleted
    from ``candidates`` (freeing their weights) and ignored by the softmax.
    """

    def __init__(self, position: LayerPosition, specs: list[BlockSpec], candidates: list[nn.Module]):
        super().__init__()
        self.position = position
        self.specs = specs  # the block each slot stands for (Prunodes: at their widest)
        self.candidates = nn.ModuleDict({str(i): c for i, c in enumerate(candidates)})
        self.theta = nn.Parameter(torch.full((len(candidates),), 1.0 / len(candidates)))
        self.skip_slot: int | None = None
        self.phi = self.lam = 1.0

    @property
    def alive(self) -> list[int]:
        return [int(k) for k in self.candidates]

    def candidate(self, slot: int) -> nn.Module:
        return self.candidates[str(slot)]

    def probabilities(self) -> dict[int, float]:
        """Noise-free probabilities of the live slots (what pruning thresholds)."""
        alive = self.alive
        probs = torch.softmax(self.theta.detach()[alive], 0).tolist()
        return dict(zip(alive, probs))

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, Any]:
        alive = self.alive
        if len(alive) == 1:
            return self.candidate(alive[0])(x, tau)
        weights = F.gumbel_softmax(self.theta[alive], tau=tau)
        scales = skip_multipliers(self)
        out: Any = 0.0
        latency: Any = 0.0
        for a, slot in zip(weights, alive):
            y, lat = self.candidate(slot)(x, tau)
            out = out + (a * scales.get(slot, 1.0)) * y
            latency = latency + a * lat
        return out, latency

    def expected_latency(self) -> float:
        return sum(p * self.candidate(s).expected_latency() for s, p in self.probabilities().items())

    def best_slot(self) -> int:
        probs = self.probabilities()
        return max(probs, key=probs.__getitem__)

    def choice(self) -> tuple[Choice, int]:
        """The most probable slot as a make_arch choice, with its hidden width (0 if none)."""
        slot = self.best_slot()
        cand = self.candidate(slot)
        if isinstance(cand, SkipCandidate):
            return SKIP, 0
        spec = self.specs[slot]
        width = cand.chosen_width() if isinstance(cand, Prunode) else spec.hidden_chs
        return {"kernel_size": spec.kernel_size, "se": spec.se, "hidden_chs": width}, width


def is_prunode_position(pos: LayerPosition, granularity: int) -> bool:
    """A Prunode needs the full width grid granularity..max (PruNet spaces); other spaces
    (e.g. UDC's width fractions) get one explicit candidate per width."""
    grid = tuple(range(granularity, pos.max_hidden + 1, granularity))
    return len(pos.hidden_choices) > 1 and pos.hidden_choices == grid


def candidate_count(pos: LayerPosition, granularity: int) -> int:
    """N_l: the number of candidates (architecture weights) of a layer."""
    per_block = 1 if is_prunode_position(pos, granularity) else max(len(pos.hidden_choices), 1)
    return len(pos.kernel_sizes) * len(pos.se_options) * per_block


def _layer_candidates(pos: LayerPosition, granularity: int, latency: SpaceLatency) -> tuple[list[BlockSpec], list[nn.Module]]:
    prunode = is_prunode_position(pos, granularity)
    widths = (pos.max_hidden,) if prunode else (pos.hidden_choices or (0,))
    specs, modules = [], []
    for k, se, hidden in itertools.product(pos.kernel_sizes, pos.se_options, widths):
        spec = pos.block(kernel_size=k, se=se, hidden_chs=hidden)
        if prunode:
            price = functools.partial(_width_latency, latency, pos, k, se)
            module: nn.Module = Prunode(build_block(spec), PrunodeMasks(pos.max_hidden, granularity), price)
        else:
            module = FixedCandidate(build_block(spec), latency.block(spec, pos.in_hw))
        specs.append(spec)
        modules.append(module)
    return specs, modules


def _width_latency(latency: SpaceLatency, pos: LayerPosition, kernel_size: int, se: bool, width: int) -> float:
    return latency.block(pos.block(kernel_size=kernel_size, se=se, hidden_chs=width), pos.in_hw)


class Supernet(nn.Module):
    """stem -> stochastic layers -> head; forward returns (logits, LAT in µs)."""

    def __init__(self, space: SearchSpace, latency: SpaceLatency, num_classes: int):
        super().__init__()
        self.space = space
        self.stem = build_block(space.stem_block())
        self.layers = nn.ModuleList(StochasticLayer(pos, *_layer_candidates(pos, space.granularity, latency))
                                    for pos in space.positions())
        self.head = Head(space.head_spec(num_classes))
        self.fixed_latency = latency.fixed()

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        latency: Any = self.fixed_latency
        for layer in self.layers:
            x, lat = layer(x, tau)
            latency = latency + lat
        return self.head(x), torch.as_tensor(latency, device=x.device)

    # ---- parameters ------------------------------------------------------------------
    def prunodes(self) -> Iterator[Prunode]:
        return (m for m in self.modules() if isinstance(m, Prunode))

    def arch_parameters(self) -> list[nn.Parameter]:
        """Layer thetas, then Prunode thetas, in module order (stable across resume)."""
        return [layer.theta for layer in self.layers] + [p.theta for p in self.prunodes()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # ---- state beyond the state_dict (what pruning and the masks changed) ------------
    def structure(self) -> dict[str, Any]:
        layers = [{"alive": layer.alive, "skip_slot": -1 if layer.skip_slot is None else layer.skip_slot}
                  for layer in self.layers]
        masks = {name: m.masks.state() for name, m in self.named_modules() if isinstance(m, Prunode)}
        return {"layers": layers, "masks": masks}

    def load_structure(self, structure: dict[str, Any]) -> None:
        """Replay pruning and skip insertion, then restore the mask states."""
        for layer, saved in zip(self.layers, structure["layers"]):
            if saved["skip_slot"] >= 0:
                insert_skip(layer, saved["skip_slot"], level=False)
            for slot in layer.alive:
                if slot not in saved["alive"]:
                    del layer.candidates[str(slot)]
        modules = dict(self.named_modules())
        for name, state in structure["masks"].items():
            modules[name].masks.load_state(state)

    # ---- reading out -----------------------------------------------------------------
    def expected_latency(self) -> float:
        """Predicted LAT under the noise-free probabilities (for logs)."""
        return self.fixed_latency + sum(layer.expected_latency() for layer in self.layers)

    def choices(self) -> tuple[list[Choice], dict[str, list[int]]]:
        """make_arch choices of the most probable blocks, and the hidden channels each keeps."""
        choices, hidden_index = [], {}
        for i, layer in enumerate(self.layers):
            choice, width = layer.choice()
            choices.append(choice)
            if choice != SKIP and layer.position.type in IRB_TYPES:
                hidden_index[str(i)] = list(range(width))
        return choices, hidden_index

    def deploy_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the chosen blocks under build_model(arch)'s keys (hidden dims at full width)."""
        state = {f"stem.{k}": v for k, v in self.stem.state_dict().items()}
        for i, layer in enumerate(self.layers):
            block = layer.candidate(layer.best_slot()).block
            state.update({f"blocks.{i}.{k}": v for k, v in block.state_dict().items()})
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def alive_summary(self) -> list[list[str]]:
        """Per layer, the live candidates by name (k3, k5se, skip ...) for the metrics log."""
        return [[_slot_name(layer, s) for s in layer.alive] for layer in self.layers]

    def prunode_report(self) -> list[dict[str, Any]]:
        """Per surviving Prunode (the chosen blocks, once pruning is done): its layer and :meth:`Prunode.report`."""
        return [{"layer": i, **cand.report()} for i, layer in enumerate(self.layers)
                for cand in (layer.candidate(s) for s in layer.alive) if isinstance(cand, Prunode)]

    def prunode_widths(self) -> dict[str, list[int]]:
        return {name: [m.masks.small, m.masks.large] for name, m in self.named_modules() if isinstance(m, Prunode)}


def _slot_name(layer: StochasticLayer, slot: int) -> str:
    if isinstance(layer.candidate(slot), SkipCandidate):
        return "skip"
    spec = layer.specs[slot]
    width = "" if isinstance(layer.candidate(slot), Prunode) or not spec.hidden_chs else f"h{spec.hidden_chs}"
    return f"k{spec.kernel_size}{'se' if spec.se else ''}{width}"
