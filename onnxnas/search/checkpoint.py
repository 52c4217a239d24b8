"""Checkpoints: the search state for --resume, and the weights file finalize reads.

One loader serves both (:func:`load_torch`): a regular file of bounded size, read with
``torch.load(..., weights_only=True)`` so only tensors, dicts, lists, numbers and strings
come back (RNG states are stored as tensors), every failure as one line. Every field a
reader uses is then checked (:func:`check_tensors`, :func:`load_search_state`) before it
is used. Both are written atomically, so a run killed mid-write keeps the previous file.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from onnxnas.arch import Arch
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_bytes, read_regular_bytes
from onnxnas.schema import MAX_LIST, Fields

WEIGHTS_FORMAT = 1
SEARCH_FORMAT = 1
MAX_CHECKPOINT_BYTES = 4 << 30  # GPUNet-1 in fp32 is ~50 MB; a search state a few times that
PICKLE_FIX = "save only tensors: torch.save({'state_dict': model.state_dict()}, path)"


def save_torch(path: str | Path, obj: Any) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, what: str) -> Any:
    """A torch.save file's contents, never unpickling code; any failure is one user-error line."""
    data = read_regular_bytes(path, what, MAX_CHECKPOINT_BYTES)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the weights-only unpickler met a class or function to import
            raise OnnxNasError(f"{what} is not a plain-tensor checkpoint: it needs pickled code to load, which is "
                               "refused", where=str(path), fix=PICKLE_FIX) from exc
        raise _damaged(path, what, "not a torch.save file, or a truncated one") from exc
    except Exception as exc:  # a damaged zip or pickle raises any of a dozen unrelated types
        raise _damaged(path, what, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]) from exc


def _damaged(path: str | Path, what: str, reason: str) -> OnnxNasError:
    return OnnxNasError(f"cannot read {what}: {reason}", where=str(path),
                        fix="the file is damaged or not a torch.save checkpoint; regenerate it")


def check_tensors(state: Any, source: str, what: str = "state_dict") -> dict[str, torch.Tensor]:
    """``state`` as a name -> tensor dict whose floating-point tensors are all finite."""
    if not isinstance(state, Mapping) or len(state) > MAX_LIST:
        raise OnnxNasError(f"{what} must map names to tensors, got {type(state).__name__}", where=source,
                           fix=PICKLE_FIX)
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise OnnxNasError(f"{what}[{name!r}] must be a tensor, got {type(tensor).__name__}", where=source,
                               fix=PICKLE_FIX)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise OnnxNasError(f"{what}[{name!r}] holds NaN or infinite values", where=source,
                               fix="use a checkpoint from before training diverged")
    return dict(state)


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_search_state(path: str | Path, state: dict[str, Any]) -> Path:
    return save_torch(path, {"onnxnas_search": SEARCH_FORMAT, **state})


def load_search_state(path: str | Path, max_epoch: int = 2**31,
                      check_method: Callable[[Fields], None] | None = None) -> dict[str, Any]:
    """A search checkpoint with every field the resume reads checked: types, epoch range, finite weights.

    The fields every method's trainer saves are checked here (epoch, metrics, model, config,
    RNG, AMP scaler, each ``*_opt`` optimizer); ``check_method`` checks the method's own, and
    then no unknown field may remain.
    """
    source = str(path)
    f = Fields(load_torch(path, "search checkpoint"), "$", source)
    if f.get("onnxnas_search", None) != SEARCH_FORMAT:
        raise OnnxNasError("not an onnxnas search checkpoint of this version", where=source,
                           fix="start a new search in an empty --out")
    epoch = f.integer("epoch", low=0, high=max_epoch)
    metrics = f.list("metrics")
    if len(metrics) != epoch or not all(isinstance(m, dict) for m in metrics):
        raise f.fail("metrics", f"expected one object per finished epoch ({epoch}), got {len(metrics)} item(s)")
    for name in [k for k in f.data if isinstance(k, str) and k.endswith("_opt")]:
        optimizer = f.object(name)
        optimizer.object("state")
        optimizer.list("param_groups", min_items=1)
    f.object("scaler")
    f.object("config")
    rng = f.object("rng")
    generator = rng.get("torch")
    if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8 or generator.dim() != 1:
        raise rng.fail("torch", "expected the CPU generator state (a 1-D uint8 tensor)")
    rng.get("cuda", None)
    check_tensors(f.get("model"), source, "model")
    if check_method is not None:  # a resume: the method knows all its fields, so nothing may be left over
        check_method(f)
        f.done()
    return f.data


def save_weights(path: str | Path, arch: Arch, state_dict: dict[str, torch.Tensor],
                 hidden_index: dict[str, list[int]], quant_ranges: dict[str, float] | None = None) -> Path:
    """The finalize contract: build_model(arch)'s keys; hidden dims may be wider than the
    arch's hidden_chs, and ``hidden_index[layer]`` lists the hidden channels to keep.
    ``quant_ranges`` (trained quantizers, see :mod:`onnxnas.deploy.grids`) make finalize use those grids."""
    extra = {"quant_ranges": quant_ranges} if quant_ranges else {}
    return save_torch(path, {"onnxnas_checkpoint": WEIGHTS_FORMAT, "arch_hash": arch.hash,
                             "state_dict": state_dict, "hidden_index": hidden_index, **extra})

