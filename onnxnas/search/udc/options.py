"""What each layer position of a space may choose under UDC, and the concrete choice of one configuration.

Widths, bits and fractions are sorted from cheapest to most expensive, so "the next cheaper option"
(the repair pass) is the previous index; the operator list is (block, skip). Decisions with one
option are fixed, not searched. Kernel and SE are fixed at the stage's first option (UDC does not search them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from onnxnas.blocks.spec import IRB_TYPES
from onnxnas.errors import OnnxNasError
from onnxnas.space.choose import SKIP, Choice
from onnxnas.space.spec import LayerPosition, SearchSpace

DECISIONS = ("op", "width", "bits", "sparsity")
BLOCK, SKIPPED = 0, 1  # "op" option indices: the position's block, or identity


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """One position's option lists: operators, (width fraction, hidden channels), weight bits, non-zero fractions."""

    position: LayerPosition
    ops: tuple[str, ...]
    widths: tuple[tuple[float, int], ...]
    bits: tuple[int, ...]
    fractions: tuple[float, ...]

    def count(self, decision: str) -> int:
        return len({"op": self.ops, "width": self.widths, "bits": self.bits, "sparsity": self.fractions}[decision])

    def searched(self) -> tuple[str, ...]:
        """The decisions with more than one option (each gets a categorical pi)."""
        return tuple(d for d in DECISIONS if self.count(d) > 1)

    def choice(self, config: dict[str, int]) -> Choice:
        """The make_arch choice of this position under ``config`` (decision -> option index)."""
        if self.ops[config.get("op", BLOCK)] == "skip":
            return SKIP
        pos = self.position
        fraction, hidden = self.widths[config.get("width", 0)]
        return {"kernel_size": pos.kernel_sizes[0], "se": pos.se_options[0], "hidden_chs": hidden,
                "width_fraction": fraction, "weight_bits": self.bits[config.get("bits", 0)],
                "nonzero_fraction": self.fractions[config.get("sparsity", 0)]}


def _widths(pos: LayerPosition, stage_fractions: Sequence[float], granularity: int, expansion: float | None) -> tuple[tuple[float, int], ...]:
    if pos.type not in IRB_TYPES:
        return ((1.0, 0),)
    if pos.type == "ds":
        return ((1.0, pos.in_chs),)
    full = (expansion or 1.0) * pos.in_chs  # the same rounding as SearchSpace._hidden_choices
    return tuple(sorted((float(f), max(granularity, round(f * full / granularity) * granularity)) for f in stage_fractions))


def layer_options(space: SearchSpace) -> list[LayerOptions]:
    """The UDC options of every position; a space without bit or sparsity options is refused."""
    result = []
    for pos in space.positions():
        stage = space.stages[pos.stage]
        if stage.max_expansion is not None:
            raise OnnxNasError(f"stages[{pos.stage}] sets max_expansion (PruNet widths); UDC searches expansion x "
                               "width_fractions", where=f"--space {space.name}",
                               fix="give the stage 'expansion' and 'width_fractions' instead")
        result.append(LayerOptions(pos, ("block", "skip") if pos.skippable else ("block",),
                                   _widths(pos, stage.width_fractions, space.granularity, stage.expansion),
                                   tuple(sorted(stage.weight_bits)), tuple(sorted(float(s) for s in stage.nonzero_fractions))))
    if not any(o.count("bits") > 1 or o.count("sparsity") > 1 for o in result):
        raise OnnxNasError(f"space {space.name!r} offers no compression options (every stage has one weight_bits "
                           "and one nonzero_fractions value)", where="--space",
                           fix="use a UDC space (tiny-udc, mbv2) or add weight_bits / nonzero_fractions lists to its stages")
    return result


def cheapest(options: Sequence[LayerOptions]) -> list[dict[str, int]]:
    """The configuration with every decision at its cheapest option (skip where allowed): the space's minimum."""
    return [{"op": o.count("op") - 1, "width": 0, "bits": 0, "sparsity": 0} for o in options]
