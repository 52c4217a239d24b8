"""Load a weights checkpoint safely, check it against an arch, and slice it to the arch's widths.

A search checkpoint may hold a supernet's full hidden width; the arch keeps only some
hidden channels (``hidden_index``, default the first ``hidden_chs``). Which tensor
dimensions are "hidden" is not hard-coded: each block is built twice on the meta device
(widths ``h`` and ``h + 1``) and the dimensions that change are the hidden ones, so the
slicing follows the blocks' code wherever it goes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from onnxnas.arch import Arch
from onnxnas.blocks import build_block, build_model
from onnxnas.blocks.spec import BlockSpec
from onnxnas.deploy.grids import BITS_FIELD, RANGES_FIELD
from onnxnas.errors import OnnxNasError
from onnxnas.schema import MAX_CHANNELS, MAX_LAYERS
from onnxnas.search.checkpoint import PICKLE_FIX, check_tensors, load_torch

CHECKPOINT_VERSION = 1
StateDict = dict[str, torch.Tensor]
_SLICEABLE = ("irb", "fused_irb")  # ds blocks' hidden width is their input width


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: tensors, the kept hidden channels per layer, and where it came from."""

    state_dict: StateDict
    hidden_index: dict[int, list[int]]
    arch_hash: str | None
    source: str
    # Trained quantizer fields, raw; parsed and checked against the network by onnxnas.deploy.grids.weight_grids.
    quantizers: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read an onnxnas checkpoint, ``{'state_dict': {...}}`` or a plain state_dict; never unpickle code."""
    source = str(path)
    data = load_torch(path, "checkpoint")
    if not isinstance(data, Mapping):
        raise OnnxNasError(f"expected a dict of tensors, got {type(data).__name__}", where=source, fix=PICKLE_FIX)
    if "onnxnas_checkpoint" in data:
        if data["onnxnas_checkpoint"] != CHECKPOINT_VERSION:
            raise OnnxNasError(f"unsupported onnxnas_checkpoint version {data['onnxnas_checkpoint']!r}", where=source,
                               fix=f"this onnxnas reads version {CHECKPOINT_VERSION}")
        arch_hash = data.get("arch_hash")
        if arch_hash is not None and not isinstance(arch_hash, str):
            raise OnnxNasError(f"arch_hash must be a string, got {type(arch_hash).__name__}", where=source)
        return Checkpoint(check_tensors(data.get("state_dict"), source), _hidden_index(data.get("hidden_index"), source),
                          arch_hash, source, _quantizers(data))
    if isinstance(data.get("state_dict"), Mapping):  # torch.save({'state_dict': model.state_dict(), 'epoch': ...})
        return Checkpoint(check_tensors(data["state_dict"], source), {}, None, source, _quantizers(data))
    return Checkpoint(check_tensors(data, source), {}, None, source)


def _quantizers(data: Mapping[str, Any]) -> dict[str, Any]:
    """The optional trained grids (checked against the model in :mod:`onnxnas.deploy.grids`)."""
    return {field: data[field] for field in (RANGES_FIELD, BITS_FIELD) if field in data}


def _hidden_index(raw: Any, source: str) -> dict[int, list[int]]:
    """``{layer: [kept hidden channels]}`` with integer layers and channels (ranges are checked when slicing)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_LAYERS:
        raise OnnxNasError("hidden_index must map layer indices to lists of channel indices", where=source)
    index = {}
    for layer, kept in raw.items():
        if not str(layer).isdigit() or int(layer) >= MAX_LAYERS:
            raise OnnxNasError(f"hidden_index has key {layer!r}, not a layer index", where=source)
        if (not isinstance(kept, (list, tuple)) or len(kept) > MAX_CHANNELS
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in kept)):
            raise OnnxNasError(f"hidden_index[{layer}] must be a list of channel indices", where=source)
        index[int(layer)] = list(kept)
    return index


def fit_state_dict(checkpoint: Checkpoint, arch: Arch) -> StateDict:
    """The checkpoint's tensors at the arch's exact shapes, hidden channels sliced.

    Raises a user error naming the first tensor that is missing, extra, or whose
    non-hidden dimensions differ from the arch's.
    """
    model_state = build_model(arch).state_dict()
    expected = {k: tuple(v.shape) for k, v in model_state.items()}
    state = dict(checkpoint.state_dict)
    for name, tensor in state.items():
        if name in model_state and tensor.is_floating_point() != model_state[name].is_floating_point():
            raise _mismatch(checkpoint.source, f"tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}, "
                                               f"the arch needs {str(model_state[name].dtype).removeprefix('torch.')}")
    for i, layer in enumerate(arch.layers):
        if layer.type in _SLICEABLE:
            _slice_layer(state, f"blocks.{i}.", layer, checkpoint.hidden_index.get(i), checkpoint.source)
    for name, shape in expected.items():
        if name not in state:
            raise _mismatch(checkpoint.source, f"lacks tensor {name!r} (the arch needs shape {list(shape)})")
        if tuple(state[name].shape) != shape:
            raise _mismatch(checkpoint.source, f"tensor {name!r} has shape {list(state[name].shape)}, "
                                               f"the arch needs {list(shape)}")
    extra = [name for name in state if name not in expected]
    if extra:
        raise _mismatch(checkpoint.source, f"has tensor {extra[0]!r} (shape {list(state[extra[0]].shape)}) "
                                           "that the arch does not")
    return {name: state[name] for name in expected}


def _mismatch(source: str, message: str) -> OnnxNasError:
    return OnnxNasError(f"checkpoint does not match the arch: {message}", where=source,
                        fix="pass the arch.json this checkpoint was trained for")


def hidden_dims(spec: BlockSpec) -> dict[str, tuple[int, ...]]:
    """For each tensor of the block (relative name), the dimensions sized by the hidden width."""
    narrow, wide = _meta_shapes(spec), _meta_shapes(dataclasses.replace(spec, hidden_chs=spec.hidden_chs + 1))
    return {name: tuple(d for d, (a, b) in enumerate(zip(shape, wide[name])) if a != b) for name, shape in narrow.items()}


def _meta_shapes(spec: BlockSpec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_block(spec).state_dict().items()}


def _slice_layer(state: StateDict, prefix: str, spec: BlockSpec, kept: list[int] | None, source: str) -> None:
    """Slice one block's tensors in ``state`` along their hidden dimensions, in place."""
    dims = {prefix + name: d for name, d in hidden_dims(spec).items() if d}
    probe = next(iter(dims))
    if probe not in state or state[probe].dim() <= dims[probe][0]:
        return  # reported as a missing or misshapen tensor by the caller
    width = state[probe].shape[dims[probe][0]]
    index = list(range(spec.hidden_chs)) if kept is None else kept
    layer = prefix.rstrip(".").split(".")[-1]
    if width < spec.hidden_chs:
        raise _mismatch(source, f"tensor {probe!r} has shape {list(state[probe].shape)}: layer {layer} has "
                                f"{width} hidden channels, fewer than the arch's {spec.hidden_chs}")
    if len(index) != spec.hidden_chs or len(set(index)) != len(index) or not all(0 <= c < width for c in index):
        raise OnnxNasError(f"hidden_index[{layer}] must list {spec.hidden_chs} distinct channels in [0, {width})",
                           where=source, fix="regenerate the checkpoint with the search that wrote the arch")
    wide = _meta_shapes(dataclasses.replace(spec, hidden_chs=width))
    select = torch.tensor(index, dtype=torch.long)
    for name, hidden in dims.items():
        if name not in state:
            continue
        if tuple(state[name].shape) != wide[name[len(prefix):]]:
            raise _mismatch(source, f"tensor {name!r} has shape {list(state[name].shape)}, a layer {layer} "
                                    f"of hidden width {width} needs {list(wide[name[len(prefix):]])}")
        for d in hidden:
            state[name] = state[name].index_select(d, select)
