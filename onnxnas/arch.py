"""The Arch dataclass and its arch.json form: versioned, strictly validated.

Schema errors name the JSON path (``$.layers[3].hidden_chs``); an arch that does not fit
its space names the layer index. Search writes this file, finalize and `arch stats` read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from onnxnas.blocks.spec import ACTIVATIONS, BLOCK_TYPES, IRB_TYPES, BlockSpec, HeadSpec
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, read_json
from onnxnas.schema import MAX_CHANNELS, MAX_CLASSES, MAX_KERNEL, MAX_LAYERS, MAX_RESOLUTION, MAX_STRIDE, Fields
from onnxnas.space.spec import SearchSpace

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Arch:
    """A concrete network of a space: stem, one BlockSpec per layer position, head."""

    space: str
    space_hash: str
    resolution: int
    in_chs: int
    stem: BlockSpec
    layers: tuple[BlockSpec, ...]
    head: HeadSpec
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "space": self.space,
            "space_hash": self.space_hash,
            "resolution": self.resolution,
            "in_chs": self.in_chs,
            "stem": self.stem.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "head": self.head.to_dict(),
            "provenance": self.provenance,
        }

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_chs, self.resolution, self.resolution)

    @property
    def hash(self) -> str:
        """Hash of the network itself (provenance excluded)."""
        body = {k: v for k, v in self.to_dict().items() if k != "provenance"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def layer_inputs(self) -> list[tuple[BlockSpec, int]]:
        """Each layer with the spatial size of its input."""
        hw = self.stem.out_hw(self.resolution)
        result = []
        for layer in self.layers:
            result.append((layer, hw))
            hw = layer.out_hw(hw)
        return result

    @property
    def depth(self) -> int:
        return sum(layer.type != "skip" for layer in self.layers)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())


_BLOCK_INTS = {"in_chs": MAX_CHANNELS, "out_chs": MAX_CHANNELS, "stride": MAX_STRIDE, "kernel_size": MAX_KERNEL,
               "hidden_chs": MAX_CHANNELS, "weight_bits": 32}


def _block(value: Any, path: str, source: str) -> BlockSpec:
    f = Fields(value, path, source)
    kind = f.string("type")
    if kind not in BLOCK_TYPES:
        raise f.fail("type", f"unknown block type {kind!r}", fix=f"use one of: {', '.join(BLOCK_TYPES)}")
    given = {name: f.integer(name, ... if name in ("in_chs", "out_chs") else None, high=high)
             for name, high in _BLOCK_INTS.items()}
    act = f.string("act", "relu")
    if act not in ACTIVATIONS:
        raise f.fail("act", f"unknown activation {act!r}", fix=f"use one of: {', '.join(ACTIVATIONS)}")
    fractions = {name: f.number(name, 1.0, low=0.0, high=1.0, low_open=True)
                 for name in ("nonzero_fraction", "width_fraction")}
    if kind in IRB_TYPES and given["hidden_chs"] is None:
        raise f.fail("hidden_chs", f"required for a {kind} block", fix="add 'hidden_chs'")
    if kind != "skip" and given["kernel_size"] is None:
        raise f.fail("kernel_size", "required field is missing", fix="add 'kernel_size'")
    spec = BlockSpec(type=kind, act=act, se=f.boolean("se", False),
                     **{k: v for k, v in given.items() if v is not None}, **fractions)
    f.done()
    return spec


def arch_from_dict(data: Any, source: str = "arch.json") -> Arch:
    """Validate a parsed arch.json document (schema only; see :func:`check_fits_space`)."""
    top = Fields(data, "$", source)
    version = top.get("schema_version", None)
    if version != SCHEMA_VERSION:
        raise top.fail("schema_version", f"unsupported schema version {version!r}",
                       fix=f"this onnxnas reads version {SCHEMA_VERSION}")
    layers = top.list("layers", max_items=MAX_LAYERS)
    head = top.object("head")
    arch = Arch(
        space=top.identifier("space"),
        space_hash=top.string("space_hash", ""),
        resolution=top.integer("resolution", high=MAX_RESOLUTION),
        in_chs=top.integer("in_chs", 3, high=MAX_CHANNELS),
        stem=_block(top.get("stem"), "$.stem", source),
        layers=tuple(_block(layer, f"$.layers[{i}]", source) for i, layer in enumerate(layers)),
        head=HeadSpec(in_chs=head.integer("in_chs", high=MAX_CHANNELS), hidden_chs=head.integer("hidden_chs", high=MAX_CHANNELS),
                      num_classes=head.integer("num_classes", high=MAX_CLASSES),
                      act=head.string("act", "relu", choices=ACTIVATIONS)),
        provenance=top.object("provenance", {}).data,
    )
    head.done()
    top.done()
    _check_chain(top, arch)
    return arch


def _check_chain(r: Fields, arch: Arch) -> None:
    """Channels must chain from stem through layers to head; skips must keep the shape."""
    chs = arch.stem.out_chs
    if arch.stem.in_chs != arch.in_chs:
        raise r.fail("stem.in_chs", f"is {arch.stem.in_chs} but in_chs is {arch.in_chs}")
    for i, layer in enumerate(arch.layers):
        if layer.in_chs != chs:
            raise r.fail(f"layers[{i}].in_chs", f"is {layer.in_chs} but the previous layer outputs {chs} channels")
        if layer.type == "skip" and (layer.stride != 1 or layer.in_chs != layer.out_chs):
            raise r.fail(f"layers[{i}]", "a skip must keep the shape (stride 1, in_chs == out_chs)")
        if layer.type == "ds" and layer.hidden_chs != layer.in_chs:
            raise r.fail(f"layers[{i}].hidden_chs", f"a ds block's hidden_chs equals in_chs ({layer.in_chs})")
        chs = layer.out_chs
    if arch.head.in_chs != chs:
        raise r.fail("head.in_chs", f"is {arch.head.in_chs} but the last layer outputs {chs} channels")


def load_arch(path: str | Path) -> Arch:
    return arch_from_dict(read_json(path, "arch.json"), str(path))


def check_fits_space(arch: Arch, space: SearchSpace, source: str = "arch.json") -> None:
    """Reject an arch that its space cannot express, naming the layer index."""
    def fail(index: int | str, message: str) -> OnnxNasError:
        return OnnxNasError(f"layer {index}: {message}", where=source, fix=f"make the arch fit space '{space.name}'")

    if arch.space != space.name:
        raise OnnxNasError(f"arch is of space {arch.space!r}, not {space.name!r}", where=source, fix="pass the matching --space")
    if arch.resolution != space.resolution:
        raise OnnxNasError(f"resolution {arch.resolution} differs from the space's {space.resolution}", where=source)
    if arch.stem != space.stem_block():
        raise fail("stem", f"{arch.stem.to_dict()} differs from the space's stem {space.stem_block().to_dict()}")
    positions = space.positions()
    if len(arch.layers) != len(positions):
        raise OnnxNasError(f"has {len(arch.layers)} layers, space '{space.name}' has {len(positions)} positions "
                           "(skipped layers stay in the list as type 'skip')", where=source)
    for pos, layer in zip(positions, arch.layers):
        if layer.type == "skip":
            if not pos.skippable:
                raise fail(pos.index, "cannot be skipped: its input and output shapes differ or the space forbids it")
            continue
        if layer.type != pos.type:
            raise fail(pos.index, f"block type {layer.type!r}, the space has {pos.type!r} here")
        if (layer.in_chs, layer.out_chs, layer.stride) != (pos.in_chs, pos.out_chs, pos.stride):
            raise fail(pos.index, f"in/out/stride {layer.in_chs}/{layer.out_chs}/{layer.stride}, "
                                  f"the space has {pos.in_chs}/{pos.out_chs}/{pos.stride}")
        if layer.kernel_size not in pos.kernel_sizes:
            raise fail(pos.index, f"kernel {layer.kernel_size} not in {list(pos.kernel_sizes)}")
        if layer.se not in pos.se_options:
            raise fail(pos.index, f"se={layer.se} not offered (options {list(pos.se_options)})")
        if layer.act != pos.act:
            raise fail(pos.index, f"activation {layer.act!r}, the space has {pos.act!r}")
        if pos.hidden_choices and layer.hidden_chs not in pos.hidden_choices:
            raise fail(pos.index, f"hidden_chs {layer.hidden_chs} is not a searchable width (multiples of "
                                  f"{space.granularity} up to {pos.max_hidden})")
