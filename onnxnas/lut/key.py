"""Canonical LUT keys: every field that changes a block's timing, and nothing else.

Identical candidates at different layer positions share one key, so each is timed once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxnas.blocks.spec import BlockSpec, HeadSpec

if TYPE_CHECKING:
    from onnxnas.arch import Arch
    from onnxnas.space.spec import SearchSpace


@dataclasses.dataclass(frozen=True)
class KeyedBlock:
    """A timeable unit: a block (or the head) at the input shape it sees in the network."""

    key: str
    spec: BlockSpec | HeadSpec
    input_shape: tuple[int, int, int, int]


def block_key(spec: BlockSpec, in_hw: int, precision: str, batch: int = 1) -> str:
    """e.g. ``irb:1x24x72x72:o64:k3:s2:h96:se1:swish:res0:fp32``; int8 keys end in ``:w8``, and a
    block whose kxk conv is not 'same'-padded says so after its stride (``...:s2:pvalid:h96:...``).

    A key names what the deployed block computes with, not the arch's compression
    fields: every weight of 1..8 bits deploys as an INT8 tensor and unstructured zeros
    stay in it, so a 4-bit, 50%-sparse layer runs at its 8-bit dense key (docs/design.md §4).
    """
    if spec.type == "skip":
        raise ValueError("skip layers have no latency entry (they are removed from the graph)")
    parts = [spec.type, f"{batch}x{spec.in_chs}x{in_hw}x{in_hw}", f"o{spec.out_chs}", f"k{spec.kernel_size}",
             f"s{spec.stride}", *_padding(spec), f"h{spec.hidden_chs}", f"se{int(spec.se)}", spec.act, f"res{int(spec.has_residual)}",
             precision, *_container(precision)]
    return ":".join(parts)


def _padding(spec: BlockSpec) -> list[str]:
    """'same' padding is the default and adds nothing, so every existing key stays as it was."""
    return [] if spec.padding == "same" else [f"p{spec.padding}"]


def _container(precision: str) -> list[str]:
    """The weight container of an int8 deployment (INT8 for every bitwidth TensorRT and ORT run)."""
    return ["w8"] if precision == "int8" else []


def head_key(spec: HeadSpec, in_hw: int, precision: str, batch: int = 1) -> str:
    return ":".join(["head", f"{batch}x{spec.in_chs}x{in_hw}x{in_hw}", f"h{spec.hidden_chs}",
                     f"c{spec.num_classes}", spec.act, precision, *_container(precision)])


def keyed_block(spec: BlockSpec, in_hw: int, precision: str, batch: int = 1) -> KeyedBlock:
    return KeyedBlock(block_key(spec, in_hw, precision, batch), spec, (batch, spec.in_chs, in_hw, in_hw))


def keyed_head(spec: HeadSpec, in_hw: int, precision: str, batch: int = 1) -> KeyedBlock:
    return KeyedBlock(head_key(spec, in_hw, precision, batch), spec, (batch, spec.in_chs, in_hw, in_hw))


def width_group(key: str) -> tuple[str, int] | None:
    """(key with the hidden width blanked, hidden width): entries differing only in width share a group."""
    parts = key.split(":")
    hidden = [i for i, p in enumerate(parts) if p.startswith("h") and p[1:].isdigit()]
    if not hidden or parts[0] == "head":
        return None
    i = hidden[0]
    return ":".join(parts[:i] + ["h*"] + parts[i + 1:]), int(parts[i][1:])


def arch_units(arch: "Arch", precision: str, batch: int = 1) -> list[KeyedBlock]:
    """The timeable units of one network, in order: stem, each non-skip layer, head."""
    units = [keyed_block(arch.stem, arch.resolution, precision, batch)]
    hw = arch.stem.out_hw(arch.resolution)
    for layer in arch.layers:
        if layer.type != "skip":
            units.append(keyed_block(layer, hw, precision, batch))
        hw = layer.out_hw(hw)
    units.append(keyed_head(arch.head, hw, precision, batch))
    return units


def space_units(space: "SearchSpace", precision: str, batch: int = 1, num_classes: int | None = None) -> list[KeyedBlock]:
    """Every unique unit any arch of ``space`` can contain, deduplicated by key, in a stable order."""
    units = {}
    stem = space.stem_block()
    candidates = [keyed_block(stem, space.resolution, precision, batch)]
    last_hw = space.stem_out_hw
    for pos in space.positions():
        candidates += [keyed_block(spec, pos.in_hw, precision, batch) for spec in pos.candidates()]
        last_hw = (pos.in_hw + pos.stride - 1) // pos.stride
    candidates.append(keyed_head(space.head_spec(num_classes), last_hw, precision, batch))
    for unit in candidates:
        units.setdefault(unit.key, unit)
    return list(units.values())
