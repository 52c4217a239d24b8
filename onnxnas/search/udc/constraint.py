"""UDC's hard constraints: expected cost of relaxed decisions, exact cost of an arch, the normalized penalty.

Size (docs/design.md §7): per layer ``(s b + H(s)) N(rho)`` with the option mixtures plugged in
(paper section 3.1), N linear in the hidden width; stem, head and classifier at 8 bits, dense.
Latency (docs/design.md §13): the int8 LUT's calibrated prediction, through the Cost protocol's
mixture tree (sub-8-bit and sparse weights run at the 8-bit key, so only width and operator move it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from onnxnas.arch import Arch
from onnxnas.compress.size import FIXED_BITS, MIB, binary_entropy, bound_bits
from onnxnas.cost import LatencyCost, Mixture, Placed, RelaxedArch, block_size_bits, head_size_bits, size_report
from onnxnas.lut.table import LatencyTable
from onnxnas.search.udc.options import BLOCK, LayerOptions
from onnxnas.search.udc.supernet import Decisions
from onnxnas.space.spec import SearchSpace

ENTROPY_EPS = 1e-9


def _binary_entropy(s: torch.Tensor | float) -> torch.Tensor | float:
    """H(s) of a mixed fraction, in float64 and clamped away from 0 and 1 so its gradient stays finite."""
    if not isinstance(s, torch.Tensor):
        return binary_entropy(s)
    s = s.double().clamp(ENTROPY_EPS, 1.0 - ENTROPY_EPS)
    return -(s * torch.log2(s) + (1.0 - s) * torch.log2(1.0 - s))


def _expectation(z: Decisions, name: str, values: Sequence[float]) -> torch.Tensor | float:
    if name not in z:
        return float(values[0])
    return (z[name] * torch.tensor(values, dtype=z[name].dtype)).sum()


class SizeModel:
    """The size bound in MiB, expected (plug-in mixtures) and exact (``cost.size_report``)."""

    def __init__(self, space: SearchSpace, options: Sequence[LayerOptions], num_classes: int):
        self.options = list(options)
        head = space.head_spec(num_classes)
        stem_bits = bound_bits(sum(c.weights for c in space.stem_block().convs()), FIXED_BITS, 1.0)
        self.fixed_bits = stem_bits + head_size_bits(head)
        self.lines = []  # per layer: N(h) = n0 + slope * h
        for o in self.options:
            pos = o.position
            specs = [pos.block(kernel_size=pos.kernel_sizes[0], se=pos.se_options[0], hidden_chs=h, weight_bits=1,
                               nonzero_fraction=1.0) for h in (o.widths[0][1], o.widths[-1][1])]
            n_a, n_b = (block_size_bits(s) for s in specs)  # (1 * 1 + 0) N = N
            h_a, h_b = o.widths[0][1], o.widths[-1][1]
            slope = (n_b - n_a) / (h_b - h_a) if h_b != h_a else 0.0
            self.lines.append((n_a - slope * h_a, slope))

    def expected_mib(self, z: Sequence[Decisions]) -> torch.Tensor:
        total: torch.Tensor | float = self.fixed_bits
        for o, (n0, slope), decisions in zip(self.options, self.lines, z):
            s = _expectation(decisions, "sparsity", o.fractions)
            b = _expectation(decisions, "bits", o.bits)
            h = _expectation(decisions, "width", [w[1] for w in o.widths])
            bits = (s * b + _binary_entropy(s)) * (n0 + slope * h)
            total = total + (decisions["op"][BLOCK] * bits if "op" in decisions else bits)
        return (torch.as_tensor(total) / (8 * MIB)).float()

    def exact_mib(self, arch: Arch) -> float:
        return size_report(arch).total_mib


class LatencyModel:
    """Calibrated int8 LUT latency in µs: a :class:`~onnxnas.cost.RelaxedArch` of (operator, width) mixtures."""

    def __init__(self, space: SearchSpace, options: Sequence[LayerOptions], table: LatencyTable, num_classes: int):
        self.cost = LatencyCost(table, "int8")
        self.space, self.options, self.head = space, list(options), space.head_spec(num_classes)
        self.stem = space.stem_block()
        self.cost.fixed_us(self.stem, space.resolution, self.head, self._head_hw())  # missing keys fail here, up front
        for o in self.options:
            for _, hidden in o.widths:
                self.cost.block_us(self._spec(o, hidden), o.position.in_hw)

    def _head_hw(self) -> int:
        last = self.options[-1].position
        return (last.in_hw + last.stride - 1) // last.stride

    @staticmethod
    def _spec(o: LayerOptions, hidden: int):
        pos = o.position
        return pos.block(kernel_size=pos.kernel_sizes[0], se=pos.se_options[0], hidden_chs=hidden, weight_bits=8)

    def relaxed(self, z: Sequence[Decisions]) -> RelaxedArch:
        layers = []
        for o, decisions in zip(self.options, z):
            leaves = tuple(Placed(self._spec(o, hidden), o.position.in_hw) for _, hidden in o.widths)
            block = Mixture(decisions["width"], leaves) if "width" in decisions else leaves[0]
            if "op" in decisions:
                block = Mixture(decisions["op"], (block, Placed(o.position.skip(), o.position.in_hw)))
            layers.append(block)
        return RelaxedArch(self.space.resolution, self.stem, tuple(layers), self.head)

    def expected_us(self, z: Sequence[Decisions]) -> torch.Tensor:
        return self.cost.expected(self.relaxed(z))

    def exact_us(self, arch: Arch) -> float:
        return self.cost.exact(arch)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A hard cap: ``target`` e* in ``unit``; the search aims at ê = e* (1 - margin)."""

    name: str
    flag: str
    unit: str
    target: float
    margin: float
    expected: Callable[[Sequence[Decisions]], torch.Tensor]
    exact: Callable[[Arch], float]

    @property
    def aim(self) -> float:
        return self.target * (1.0 - self.margin)

    def penalty(self, z: Sequence[Decisions]) -> tuple[torch.Tensor, torch.Tensor]:
        """(|E(z)/ê - 1|, E(z))."""
        value = self.expected(z)
        return (value / self.aim - 1.0).abs(), value

    def met(self, value: float) -> bool:
        return value <= self.target * (1.0 + 1e-12) or math.isclose(value, self.target)

    def show(self, value: float) -> str:
        return f"{value:.4f} MiB" if self.unit == "MiB" else f"{value:.1f} us"
