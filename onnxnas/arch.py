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
from onnxnas.space.spec import SearchSpace

SCHEMA_VERSION = 1
_LAYER_FIELDS = {f.name: f for f in dataclasses.fields(BlockSpec)}


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


class _Reader:
    """Path-aware typed access for arch.json (errors read '$.layers[2].stride: ...')."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str, fix: str | None = None) -> OnnxNasError:
        return OnnxNasError(f"{path}: {message}", where=self.source, fix=fix)

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {type(value).__name__}")
        return value

    def field(self, data: dict[str, Any], name: str, path: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if name not in data:
            if default is ...:
                raise self.fail(f"{path}.{name}", "required field is missing", fix=f"add '{name}'")
            return default
        value = data[name]
        bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        if not isinstance(value, kind) or bad_bool:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(f"{path}.{name}", f"expected {names}, got {value!r}")
        return value

    def unknown(self, data: dict[str, Any], known: set[str], path: str) -> None:
        extra = sorted(set(data) - known)
        if extra:
            raise self.fail(f"{path}.{extra[0]}", "unknown field", fix=f"remove it; known fields: {', '.join(sorted(known))}")


def _block(r: _Reader, value: Any, path: str) -> BlockSpec:
    data = r.mapping(value, path)
    r.unknown(data, set(_LAYER_FIELDS), path)
    kind = r.field(data, "type", path, str)
    if kind not in BLOCK_TYPES:
        raise r.fail(f"{path}.type", f"unknown block type {kind!r}", fix=f"use one of: {', '.join(BLOCK_TYPES)}")
    required = ("in_chs", "out_chs")
    positive = {name: r.field(data, name, path, int, ... if name in required else None)
                for name in (*required, "stride", "kernel_size", "hidden_chs", "weight_bits")}
    for name, number in positive.items():
        if number is not None and number < 1:
            raise r.fail(f"{path}.{name}", f"expected a positive integer, got {number}")
    act = r.field(data, "act", path, str, "relu")
    if act not in ACTIVATIONS:
        raise r.fail(f"{path}.act", f"unknown activation {act!r}", fix=f"use one of: {', '.join(ACTIVATIONS)}")
    fractions = {name: float(r.field(data, name, path, (int, float), 1.0)) for name in ("nonzero_fraction", "width_fraction")}
    for name, fraction in fractions.items():
        if not 0 < fraction <= 1:
            raise r.fail(f"{path}.{name}", f"expected a fraction in (0, 1], got {fraction}")
    if kind in IRB_TYPES and positive["hidden_chs"] is None:
        raise r.fail(f"{path}.hidden_chs", f"required for a {kind} block", fix="add 'hidden_chs'")
    if kind != "skip" and positive["kernel_size"] is None:
        raise r.fail(f"{path}.kernel_size", "required field is missing", fix="add 'kernel_size'")
    given = {k: v for k, v in positive.items() if v is not None}
    return BlockSpec(type=kind, act=act, se=r.field(data, "se", path, bool, False), **given, **fractions)


def arch_from_dict(data: Any, source: str = "arch.json") -> Arch:
    """Validate a parsed arch.json document (schema only; see :func:`check_fits_space`)."""
    r = _Reader(source)
    top = r.mapping(data, "$")
    version = top.get("schema_version")
    if version != SCHEMA_VERSION:
        raise r.fail("$.schema_version", f"unsupported schema version {version!r}",
                     fix=f"this onnxnas reads version {SCHEMA_VERSION}")
    r.unknown(top, {"schema_version", "space", "space_hash", "resolution", "in_chs", "stem", "layers", "head", "provenance"}, "$")
    layers = r.field(top, "layers", "$", list)
    head = r.mapping(r.field(top, "head", "$", dict), "$.head")
    r.unknown(head, {f.name for f in dataclasses.fields(HeadSpec)}, "$.head")
    arch = Arch(
        space=r.field(top, "space", "$", str),
        space_hash=r.field(top, "space_hash", "$", str, ""),
        resolution=r.field(top, "resolution", "$", int),
        in_chs=r.field(top, "in_chs", "$", int, 3),
        stem=_block(r, top.get("stem"), "$.stem"),
        layers=tuple(_block(r, layer, f"$.layers[{i}]") for i, layer in enumerate(layers)),
        head=HeadSpec(in_chs=r.field(head, "in_chs", "$.head", int), hidden_chs=r.field(head, "hidden_chs", "$.head", int),
                      num_classes=r.field(head, "num_classes", "$.head", int), act=r.field(head, "act", "$.head", str, "relu")),
        provenance=r.field(top, "provenance", "$", dict, {}),
    )
    _check_chain(r, arch)
    return arch


def _check_chain(r: _Reader, arch: Arch) -> None:
    """Channels must chain from stem through layers to head; skips must keep the shape."""
    chs = arch.stem.out_chs
    if arch.stem.in_chs != arch.in_chs:
        raise r.fail("$.stem.in_chs", f"is {arch.stem.in_chs} but in_chs is {arch.in_chs}")
    for i, layer in enumerate(arch.layers):
        if layer.in_chs != chs:
            raise r.fail(f"$.layers[{i}].in_chs", f"is {layer.in_chs} but the previous layer outputs {chs} channels")
        if layer.type == "skip" and (layer.stride != 1 or layer.in_chs != layer.out_chs):
            raise r.fail(f"$.layers[{i}]", "a skip must keep the shape (stride 1, in_chs == out_chs)")
        if layer.type == "ds" and layer.hidden_chs != layer.in_chs:
            raise r.fail(f"$.layers[{i}].hidden_chs", f"a ds block's hidden_chs equals in_chs ({layer.in_chs})")
        chs = layer.out_chs
    if arch.head.in_chs != chs:
        raise r.fail("$.head.in_chs", f"is {arch.head.in_chs} but the last layer outputs {chs} channels")


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
