"""What is searched: an arch, its slots, the ops, the mode; configurations to archs and their BOPs.

BOPs always come from :class:`onnxnas.cost.BopsCost` on the arch a configuration gives, so the
search, the feasibility pass, ``arch stats`` and finalize's manifest agree by construction.
"""

from __future__ import annotations

import dataclasses
import functools

from onnxnas.arch import Arch
from onnxnas.cost import BopsCost
from onnxnas.errors import OnnxNasError
from onnxnas.search.filterlevel.configuration import BinomialSampler, MultinomialSampler, Sampler, largest_op
from onnxnas.search.filterlevel.ops import Op, format_ops
from onnxnas.search.filterlevel.slots import Configuration, Slot, SpecT, make_slots, prune_arch, quant_arch

_BOPS = BopsCost()


@dataclasses.dataclass(frozen=True)
class Problem:
    arch: Arch
    slots: tuple[Slot, ...]
    ops: tuple[Op, ...]
    mode: str

    @classmethod
    def of(cls, arch: Arch, ops: tuple[Op, ...], mode: str, source: str) -> "Problem":
        return cls(dataclasses.replace(arch, stem=_plain(arch.stem), layers=tuple(map(_plain, arch.layers)),
                                       head=_plain(arch.head)), make_slots(arch, mode, source), ops, mode)

    @property
    def top(self) -> Op:
        """The largest op: the pruning mode's op of every kept filter, and the relative budget's reference."""
        return self.ops[largest_op(self.ops)]

    @functools.cached_property
    def sampler(self) -> Sampler:
        return MultinomialSampler(self.ops) if self.mode == "quant" else BinomialSampler()

    def arch_of(self, config: Configuration) -> Arch:
        if self.mode == "quant":
            return quant_arch(self.arch, self.slots, config, self.ops)
        return prune_arch(self.arch, self.slots, config, self.top)

    def bops(self, config: Configuration) -> float:
        return _BOPS.exact(self.arch_of(config))

    def homogeneous(self, op: int) -> Configuration:
        """Every filter at ops[op] (prune mode: every filter kept)."""
        if self.mode == "prune":
            return tuple((s.filters,) for s in self.slots)
        return tuple(tuple(s.filters if i == op else 0 for i in range(len(self.ops))) for s in self.slots)

    def cheapest(self) -> tuple[Configuration, str]:
        """The least-BOPs configuration and its description: every filter at the cheapest op (quant), or
        one filter kept per hidden width (prune). BOPs grow with every bit and filter, so where one op
        has the fewest weight and activation bits this is the global minimum."""
        if self.mode == "prune":
            return tuple((1,) for _ in self.slots), f"one hidden filter per block, every conv at {self.top}"
        best = min(range(len(self.ops)), key=lambda i: self.bops(self.homogeneous(i)))
        return self.homogeneous(best), f"every filter at {self.ops[best]}"

    def reference_bops(self) -> float:
        """BOPs of the same arch with every searched conv at the largest op (what ``0.5x`` is relative to)."""
        return self.bops(self.homogeneous(largest_op(self.ops)))


def _plain(spec: SpecT) -> SpecT:
    """The spec without earlier filter groups: the search assigns them afresh."""
    return dataclasses.replace(spec, filter_groups=())


def parse_bops_budget(text: str, problem: Problem) -> float:
    """``3.2e9`` (absolute BOPs) or ``0.5x`` (relative to :meth:`Problem.reference_bops`); checked against the
    cheapest configuration, which the error names."""
    stripped = text.strip()
    relative = stripped.endswith("x")
    try:
        value = float(stripped[:-1] if relative else stripped)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise OnnxNasError(f"{text[:40]!r} is not a positive finite number of BOPs or a ratio like 0.5x",
                           where="--budget-bops", fix="write e.g. --budget-bops 3.2e9 or --budget-bops 0.5x")
    target = value * problem.reference_bops() if relative else value
    cheapest, what = problem.cheapest()
    floor = problem.bops(cheapest)
    if target < floor:
        raise OnnxNasError(f"budget {target:.6g} BOPs is below the cheapest configuration ({what}: {floor:.6g} BOPs, "
                           f"{floor / problem.reference_bops():.4f}x) of this arch with --ops {format_ops(problem.ops)}",
                           where="--budget-bops", fix=f"ask for at least {floor:.6g} (or add cheaper ops)")
    return target
