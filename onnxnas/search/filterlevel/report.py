"""BOPs of a filter-level arch as searched and as deployed, for ``arch stats`` and finalize's manifest.

As deployed, every conv with filter groups runs an INT8 kernel on INT8 activations (one scale per
tensor; the weights' narrower grids live inside INT8), so its filters count at 8:8.
"""

from __future__ import annotations

import dataclasses

from onnxnas.arch import Arch
from onnxnas.blocks.spec import FilterGroup
from onnxnas.cost import BopsCost
from onnxnas.search.filterlevel.slots import SpecT

DEPLOYED_BITS = 8


def _deployed(spec: SpecT) -> SpecT:
    return dataclasses.replace(spec, filter_groups=tuple(
        (name, tuple(FilterGroup(g.filters, DEPLOYED_BITS, DEPLOYED_BITS) for g in groups))
        for name, groups in spec.filter_groups))


def bops_report(arch: Arch) -> dict[str, float] | None:
    """``{"searched": ..., "deployed": ...}`` BOPs, or None for an arch without filter groups."""
    specs = [arch.stem, *arch.layers, arch.head]
    if not any(s.filter_groups for s in specs):
        return None
    deployed = dataclasses.replace(arch, stem=_deployed(arch.stem), layers=tuple(map(_deployed, arch.layers)),
                                   head=_deployed(arch.head))
    cost = BopsCost()
    return {"searched": cost.exact(arch), "deployed": cost.exact(deployed)}
