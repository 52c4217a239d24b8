"""Trained weight grids from a checkpoint: what makes a compressed model deploy exactly (docs/design.md §7, §12).

A search that trains quantizers (UDC's per-tensor ranges, the filter-level method's
per-filter-group ranges and bits) saves them beside its state_dict::

    torch.save({"onnxnas_checkpoint": 1, "state_dict": model.state_dict(),
                "quant_ranges": {"blocks.3.conv_pw.0.weight": 0.42,                 # one range per tensor
                                 "blocks.4.conv_pw.0.weight": ranges_per_filter},  # or one per output channel
                "quant_bits": {"blocks.4.conv_pw.0.weight": bits_per_filter}}, path)  # optional, int or per channel

Keys are parameter names of the concrete network (``build_model(arch).state_dict()``),
values floats, ints, lists or 1-D tensors. A tensor's bits default to its layer's
(:func:`onnxnas.deploy.concrete.layer_weight_bits`). ``finalize`` then puts the weights
on exactly these grids, in the reference and in the artefact: the integers are those of
``onnxnas.compress.quantizer.integers``, the scale is range / (2^(b-1) - 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from onnxnas.errors import OnnxNasError
from onnxnas.schema import MAX_CHANNELS, Fields, is_finite_number

FLOAT_BITS = 32
RANGES_FIELD = "quant_ranges"
BITS_FIELD = "quant_bits"


@dataclasses.dataclass(frozen=True)
class WeightGrid:
    """One weight tensor's trained quantizer: clip range and bits, each per tensor or per output channel."""

    range: float | np.ndarray
    bits: int | np.ndarray | None = None  # None: the layer's bits


def weight_grids(fields: Mapping[str, Any], module: nn.Module, source: str) -> dict[str, WeightGrid]:
    """Parse and check a checkpoint's ``quant_ranges`` / ``quant_bits`` against the network to deploy.

    Raises OnnxNasError naming the checkpoint, the field and parameter, and the fix for:
    a parameter the network lacks or that is not a conv/linear weight, a range that is not
    positive and finite, bits outside 1..8, a per-channel list of the wrong length, or
    bits without a range (a grid needs its range; max|w| would not be the trained grid).
    """
    document = Fields({k: _plain(v) for k, v in fields.items() if v is not None}, "$", source)
    ranges = document.object(RANGES_FIELD, {})
    bits = document.object(BITS_FIELD, {})
    weights = {f"{name}.weight": m.weight.shape[0] for name, m in module.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))}
    for table in (ranges, bits):
        for name in table.data:
            if name not in weights:
                known = ", ".join(sorted(weights)[:4])
                raise table.fail(name, "names no conv or linear weight of this network",
                                 fix=f"use parameter names of the arch's network, e.g. {known}")
    extra = sorted(set(bits.data) - set(ranges.data))
    if extra:
        raise bits.fail(extra[0], "has bits but no trained range", fix=f"add {RANGES_FIELD}[{extra[0]!r}]")
    grids = {}
    for name in ranges.data:
        channels = weights[name]
        r = _per_channel(ranges.items(name, lambda v: is_finite_number(v) and v > 0, "positive finite numbers",
                                      max_items=MAX_CHANNELS), channels, ranges, name)
        b = bits.items(name, lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8,
                       "integers in 1..8", max_items=MAX_CHANNELS) if name in bits.data else None
        grids[name] = WeightGrid(r, None if b is None else _per_channel(b, channels, bits, name))
    ranges.done()
    bits.done()
    return grids


def _plain(value: Any) -> Any:
    """Tensors (what ``torch.save`` holds) as the numbers and lists the schema checks."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _per_channel(values: tuple[Any, ...], channels: int, table: Fields, name: str) -> Any:
    if len(values) == 1:
        return values[0]
    if len(values) != channels:
        raise table.fail(name, f"has {len(values)} entries; the layer has {channels} output channels",
                         fix="give one value per tensor or one per output channel")
    return np.asarray(values)


def grid_for(name: str, grids: Mapping[str, WeightGrid] | None, layer_bits: int) -> tuple[Any, Any]:
    """(bits, range) of parameter ``name``: its trained grid, else the layer's bits and no range (max|w|)."""
    grid = (grids or {}).get(name)
    if grid is None:
        return layer_bits, None
    if grid.bits is None and layer_bits >= FLOAT_BITS:
        raise OnnxNasError(f"{RANGES_FIELD}[{name!r}]: a trained range for a layer that deploys as float",
                           fix=f"give its {BITS_FIELD}, or the arch layer's weight_bits, or --precision int8")
    return (layer_bits if grid.bits is None else grid.bits), grid.range
