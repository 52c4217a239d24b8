"""The Arch dataclass and its arch.json form: versioned, strictly validated.

Schema errors name the JSON path (``$.layers[3].hidden_chs``); an arch that does not fit
its space names the layer index. Search writes this file, finalize and `arch stats` read it.

An arch either fits its space (``"space": NAME``) or is derived from it (``"derived_from": NAME``,
e.g. NeuralScale's widths): both get the same structural checks, and :func:`check_fits_space`
checks the space's width lists only for the first kind, so every command takes both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onnxnas.blocks.spec import (ACTIVATIONS, BLOCK_TYPES, BN_EPS, CONV_NAMES, HEAD_CONV_NAMES, IRB_TYPES, PADDINGS,
                                 BlockSpec, FilterGroup, FilterGroups, HeadSpec)
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, read_json
from onnxnas.schema import MAX_CHANNELS, MAX_CLASSES, MAX_KERNEL, MAX_LAYERS, MAX_RESOLUTION, MAX_STRIDE, Fields
from onnxnas.space.spec import LayerPosition, SearchSpace, StageSpec

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
    derived: bool = False  # widths changed from the space's (written as "derived_from")
    bn_eps: float = BN_EPS  # every BatchNorm's epsilon (NVIDIA's GPUNet: 1e-3)
    dropout: float = 0.0  # before the classifier, in training only
    drop_path_rate: float = 0.0  # stochastic depth of residual blocks in training (see build_model)

    def to_dict(self) -> dict[str, Any]:
        """The arch.json document; the network-wide fields appear only when they differ from their defaults,
        so archs written before they existed keep their hashes."""
        network = {name: getattr(self, name) for name, default in (("bn_eps", BN_EPS), ("dropout", 0.0),
                                                                   ("drop_path_rate", 0.0))
                   if getattr(self, name) != default}
        return {
            "schema_version": SCHEMA_VERSION,
            "derived_from" if self.derived else "space": self.space,
            "space_hash": self.space_hash,
            "resolution": self.resolution,
            "in_chs": self.in_chs,
            **network,
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
MAX_BITS = 32


def _filter_groups(f: Fields, names: tuple[str, ...], filters: dict[str, int], what: str) -> FilterGroups:
    """``{"conv_pw": [{"filters", "weight_bits", "act_bits"}, ...]}``: known convs, each list summing to its filters."""
    if not f.has("filter_groups"):
        return ()
    groups = f.object("filter_groups")
    result = []
    for name in names:
        if not groups.has(name):
            continue
        items = groups.list(name, min_items=1, max_items=MAX_CHANNELS)
        parsed = []
        for i, item in enumerate(items):
            g = Fields(item, f"{groups.at(name)}[{i}]", f.source)
            parsed.append(FilterGroup(filters=g.integer("filters", high=MAX_CHANNELS),
                                      weight_bits=g.integer("weight_bits", high=MAX_BITS),
                                      act_bits=g.integer("act_bits", high=MAX_BITS)))
            g.done()
        total = sum(g.filters for g in parsed)
        if total != filters[name]:
            raise groups.fail(name, f"groups sum to {total} filters, but {name} has {filters[name]}",
                              fix=f"make the 'filters' of {name}'s groups add up to {filters[name]}")
        result.append((name, tuple(parsed)))
    unknown = sorted(set(map(str, groups.data)) - set(names))
    if unknown:
        raise groups.fail(unknown[0], f"no conv {unknown[0]!r} in {what}",
                          fix=f"use the conv names of {what}: {', '.join(names) or 'none'}")
    return tuple(result)


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
    spec = BlockSpec(type=kind, act=act, se=f.boolean("se", False), padding=f.string("padding", "same", choices=PADDINGS),
                     **{k: v for k, v in given.items() if v is not None}, **fractions)
    filters = {conv.name: conv.out_chs for conv in spec.convs()}
    groups = _filter_groups(f, CONV_NAMES[kind], filters, f"a {kind} block")
    f.done()
    return dataclasses.replace(spec, filter_groups=groups)


def _head(head: Fields) -> HeadSpec:
    spec = HeadSpec(in_chs=head.integer("in_chs", high=MAX_CHANNELS), hidden_chs=head.integer("hidden_chs", high=MAX_CHANNELS),
                    num_classes=head.integer("num_classes", high=MAX_CLASSES),
                    act=head.string("act", "relu", choices=ACTIVATIONS))
    groups = _filter_groups(head, HEAD_CONV_NAMES, {"conv": spec.hidden_chs}, "the head")
    head.done()
    return dataclasses.replace(spec, filter_groups=groups)


def arch_from_dict(data: Any, source: str = "arch.json") -> Arch:
    """Validate a parsed arch.json document (schema only; see :func:`check_fits_space`)."""
    top = Fields(data, "$", source)
    version = top.get("schema_version", None)
    if version != SCHEMA_VERSION:
        raise top.fail("schema_version", f"unsupported schema version {version!r}",
                       fix=f"this onnxnas reads version {SCHEMA_VERSION}")
    layers = top.list("layers", max_items=MAX_LAYERS)
    if top.has("space") == top.has("derived_from"):
        raise top.fail("space", "give exactly one of 'space' (an arch of the space) and 'derived_from' "
                                "(an arch whose widths were changed from it)", fix="keep one of the two fields")
    derived = top.has("derived_from")
    arch = Arch(
        space=top.identifier("derived_from" if derived else "space"),
        space_hash=top.string("space_hash", ""),
        resolution=top.integer("resolution", high=MAX_RESOLUTION),
        in_chs=top.integer("in_chs", 3, high=MAX_CHANNELS),
        stem=_block(top.get("stem"), "$.stem", source),
        layers=tuple(_block(layer, f"$.layers[{i}]", source) for i, layer in enumerate(layers)),
        head=_head(top.object("head")),
        provenance=top.object("provenance", {}).data,
        derived=derived,
        bn_eps=top.number("bn_eps", BN_EPS, low=0.0, high=1.0, low_open=True),
        dropout=top.number("dropout", 0.0, low=0.0, high=0.99),
        drop_path_rate=top.number("drop_path_rate", 0.0, low=0.0, high=0.99),
    )
    top.done()
    _check_chain(top, arch)
    return arch


def _check_chain(r: Fields, arch: Arch) -> None:
    """Channels must chain from stem through layers to head; skips must keep the shape; every kxk
    conv must see an input at least as large as its kernel ('valid' padding shrinks the maps)."""
    chs = arch.stem.out_chs
    if arch.stem.in_chs != arch.in_chs:
        raise r.fail("stem.in_chs", f"is {arch.stem.in_chs} but in_chs is {arch.in_chs}")
    hw = arch.resolution
    for where, spec in (("stem", arch.stem), *((f"layers[{i}]", layer) for i, layer in enumerate(arch.layers))):
        if spec.type != "skip" and spec.padding == "valid" and hw < spec.kernel_size:
            raise r.fail(f"{where}.padding", f"a 'valid' {spec.kernel_size}x{spec.kernel_size} conv gets a {hw}x{hw} "
                                             "input, smaller than its kernel", fix="use padding 'same' here")
        hw = spec.out_hw(hw)
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
    """Reject an arch that its space cannot express, naming the layer index.

    A derived arch keeps the space's layer positions, block types, strides, kernels, SE,
    activations, compression options and residual adds, but not its widths.
    """
    def fail(index: int | str, message: str) -> OnnxNasError:
        return OnnxNasError(f"layer {index}: {message}", where=source, fix=f"make the arch fit space '{space.name}'")

    if arch.space != space.name:
        raise OnnxNasError(f"arch is of space {arch.space!r}, not {space.name!r}", where=source, fix="pass the matching --space")
    if arch.resolution != space.resolution:
        raise OnnxNasError(f"resolution {arch.resolution} differs from the space's {space.resolution}", where=source)
    stem, expected_stem = dataclasses.replace(arch.stem, filter_groups=()), space.stem_block()
    if arch.derived:
        stem = dataclasses.replace(stem, out_chs=expected_stem.out_chs)
    if stem != expected_stem:
        raise fail("stem", f"{arch.stem.to_dict()} differs from the space's stem {expected_stem.to_dict()}")
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
        if arch.derived:
            _check_derived_layer(layer, pos, fail)
        elif (layer.in_chs, layer.out_chs, layer.stride) != (pos.in_chs, pos.out_chs, pos.stride):
            raise fail(pos.index, f"in/out/stride {layer.in_chs}/{layer.out_chs}/{layer.stride}, "
                                  f"the space has {pos.in_chs}/{pos.out_chs}/{pos.stride}")
        if layer.kernel_size not in pos.kernel_sizes:
            raise fail(pos.index, f"kernel {layer.kernel_size} not in {list(pos.kernel_sizes)}")
        if layer.se not in pos.se_options:
            raise fail(pos.index, f"se={layer.se} not offered (options {list(pos.se_options)})")
        if layer.act != pos.act:
            raise fail(pos.index, f"activation {layer.act!r}, the space has {pos.act!r}")
        if not arch.derived and pos.hidden_choices and layer.hidden_chs not in pos.hidden_choices:
            raise fail(pos.index, f"hidden_chs {layer.hidden_chs} is not a searchable width (multiples of "
                                  f"{space.granularity} up to {pos.max_hidden})")
        _check_compression(layer, space.stages[pos.stage], lambda message: fail(pos.index, message))


def _check_derived_layer(layer: BlockSpec, pos: LayerPosition, fail: Callable[[int, str], OnnxNasError]) -> None:
    """Widths are free in a derived arch; the stride and every residual add of the space are not."""
    if layer.stride != pos.stride:
        raise fail(pos.index, f"stride {layer.stride}, the space has {pos.stride} (a derived arch changes widths only)")
    space_has_add = pos.type in IRB_TYPES and pos.stride == 1 and pos.in_chs == pos.out_chs
    if space_has_add and not layer.has_residual:
        raise fail(pos.index, f"in_chs {layer.in_chs} != out_chs {layer.out_chs} would silently drop the residual add "
                              "the space has here; layers joined by an identity add share one width")


def _check_compression(layer: BlockSpec, stage: StageSpec, fail: Callable[[str], OnnxNasError]) -> None:
    """Bits and fractions must be options the layer's stage offers (e.g. mbv2: bits {1, 4, 8, 32})."""
    if layer.weight_bits not in stage.weight_bits:
        raise fail(f"weight_bits {layer.weight_bits} not offered (options {list(stage.weight_bits)})")
    for name, options in (("nonzero_fraction", stage.nonzero_fractions), ("width_fraction", stage.width_fractions)):
        value = getattr(layer, name)
        if not any(math.isclose(value, option, abs_tol=1e-9) for option in options):
            raise fail(f"{name} {value:g} not offered (options {[float(o) for o in options]})")


def check_filter_ops(arch: Arch, ops: Sequence[tuple[int, int]], source: str = "arch.json") -> None:
    """Filter-level archs: every group's (weight_bits, act_bits) is one of ``--ops`` and each conv's
    groups follow the ``--ops`` order (each op at most once), as the search assigns them."""
    order = {op: i for i, op in enumerate(ops)}
    named: list[tuple[str, BlockSpec | HeadSpec]] = [("stem", arch.stem), *((f"layers[{i}]", l) for i, l in enumerate(arch.layers)),
                                                     ("head", arch.head)]
    for where, spec in named:
        for conv, groups in spec.filter_groups:
            previous = -1
            for g in groups:
                op = (g.weight_bits, g.act_bits)
                if op not in order:
                    raise OnnxNasError(f"$.{where}.filter_groups.{conv}: op {op[0]}:{op[1]} is not in --ops "
                                       f"{','.join(f'{w}:{a}' for w, a in ops)}", where=source,
                                       fix="use only the ops the search was given")
                if order[op] <= previous:
                    raise OnnxNasError(f"$.{where}.filter_groups.{conv}: groups must follow the --ops order "
                                       f"({','.join(f'{w}:{a}' for w, a in ops)}), each op once", where=source,
                                       fix="sort the groups by their op's position in --ops")
                previous = order[op]
