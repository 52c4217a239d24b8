"""Search-space dataclasses: stages of candidate blocks, plus a fixed stem and head.

A space is data. :meth:`SearchSpace.positions` unrolls it into the layer positions of
the network, each with the shape it sees and the candidates it may hold; the LUT, the
supernet and arch validation all read that one unrolled view.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from typing import Any

from onnxnas.blocks.spec import IRB_TYPES, BlockSpec, HeadSpec


@dataclasses.dataclass(frozen=True)
class StemSpec:
    out_chs: int
    kernel_size: int = 3
    stride: int = 2
    act: str = "relu"


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: ``layers`` positions that share a block type and option sets.

    Hidden widths of IRB-like blocks come from either ``max_expansion`` (every multiple of
    the space granularity up to ``max_expansion * in_chs``: PruNet) or ``expansion`` times
    each of ``width_fractions`` (UDC). ``skippable`` lists layer indices within the stage
    that may become a skip; ``None`` means every layer whose input and output shapes match.
    """

    type: str
    out_chs: int
    layers: int
    stride: int = 1
    kernel_sizes: tuple[int, ...] = (3,)
    act: str = "relu"
    se: tuple[bool, ...] = (False,)
    max_expansion: float | None = None
    expansion: float | None = None
    width_fractions: tuple[float, ...] = (1.0,)
    weight_bits: tuple[int, ...] = (32,)
    nonzero_fractions: tuple[float, ...] = (1.0,)
    skippable: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class LayerPosition:
    """A layer position of the unrolled space: its shape and the choices it offers."""

    index: int
    stage: int
    layer_in_stage: int
    type: str
    in_chs: int
    out_chs: int
    stride: int
    in_hw: int
    act: str
    kernel_sizes: tuple[int, ...]
    se_options: tuple[bool, ...]
    hidden_choices: tuple[int, ...]
    skippable: bool

    @property
    def max_hidden(self) -> int:
        return max(self.hidden_choices) if self.hidden_choices else 0

    def candidates(self, *, include_skip: bool = False) -> list[BlockSpec]:
        """Every block this position can hold, at every searchable hidden width."""
        hidden = self.hidden_choices or (0,)
        specs = [
            self.block(kernel_size=k, se=se, hidden_chs=h)
            for k, se, h in itertools.product(self.kernel_sizes, self.se_options, hidden)
        ]
        if include_skip and self.skippable:
            specs.append(self.skip())
        return specs

    def block(self, *, kernel_size: int, se: bool = False, hidden_chs: int = 0, **compression: Any) -> BlockSpec:
        irb = self.type in IRB_TYPES
        return BlockSpec(self.type, self.in_chs, self.out_chs, self.stride, kernel_size, self.act,
                         hidden_chs=hidden_chs if irb else 0, se=se if irb else False, **compression)

    def skip(self) -> BlockSpec:
        return BlockSpec("skip", self.in_chs, self.out_chs, self.stride)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    name: str
    resolution: int
    in_chs: int
    granularity: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["head"].pop("filter_groups")  # an arch-only field: space hashes (LUT headers) stay as they were
        return data

    @property
    def hash(self) -> str:
        """Content hash: a LUT or arch made for another version of the space is detectable."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def stem_block(self) -> BlockSpec:
        return BlockSpec("conv", self.in_chs, self.stem.out_chs, self.stem.stride, self.stem.kernel_size, self.stem.act)

    @property
    def stem_out_hw(self) -> int:
        return self.stem_block().out_hw(self.resolution)

    def head_spec(self, num_classes: int | None = None) -> HeadSpec:
        if num_classes is None:
            return self.head
        return dataclasses.replace(self.head, num_classes=num_classes)

    def positions(self) -> list[LayerPosition]:
        positions: list[LayerPosition] = []
        chs, hw = self.stem.out_chs, self.stem_out_hw
        for stage_index, stage in enumerate(self.stages):
            for layer in range(stage.layers):
                stride = stage.stride if layer == 0 else 1
                shape_kept = stride == 1 and chs == stage.out_chs
                skippable = shape_kept if stage.skippable is None else (layer in stage.skippable)
                positions.append(LayerPosition(
                    index=len(positions), stage=stage_index, layer_in_stage=layer, type=stage.type,
                    in_chs=chs, out_chs=stage.out_chs, stride=stride, in_hw=hw, act=stage.act,
                    kernel_sizes=stage.kernel_sizes, se_options=stage.se,
                    hidden_choices=self._hidden_choices(stage, chs), skippable=skippable,
                ))
                chs, hw = stage.out_chs, (hw + stride - 1) // stride
        return positions

    def _hidden_choices(self, stage: StageSpec, in_chs: int) -> tuple[int, ...]:
        if stage.type == "ds":
            return (in_chs,)
        if stage.type not in IRB_TYPES:
            return ()
        g = self.granularity
        if stage.max_expansion is not None:
            return tuple(range(g, int(stage.max_expansion * in_chs) + 1, g))
        full = (stage.expansion or 1.0) * in_chs
        return tuple(sorted({max(g, round(f * full / g) * g) for f in stage.width_fractions}))

    @property
    def last_chs(self) -> int:
        return self.stages[-1].out_chs if self.stages else self.stem.out_chs
