"""Checkpoints: the search state for --resume, and the weights file finalize reads.

Both load with ``torch.load(..., weights_only=True)``: only tensors, dicts, lists, numbers
and strings inside (RNG states are stored as tensors). Both are written atomically, so a
run killed mid-write keeps the previous file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from onnxnas.arch import Arch
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_bytes

WEIGHTS_FORMAT = 1
SEARCH_FORMAT = 1


def save_torch(path: str | Path, obj: Any) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, what: str) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise OnnxNasError(f"{what} not found", where=str(path), fix="check the path") from exc
    except Exception as exc:  # unpickling errors have no common base
        raise OnnxNasError(f"cannot read {what}: {str(exc).splitlines()[0]}", where=str(path),
                           fix="the file is damaged or not an onnxnas checkpoint") from exc


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


def load_search_state(path: str | Path) -> dict[str, Any]:
    state = load_torch(path, "search checkpoint")
    if not isinstance(state, dict) or state.get("onnxnas_search") != SEARCH_FORMAT:
        raise OnnxNasError("not an onnxnas search checkpoint of this version", where=str(path),
                           fix="start a new search in an empty --out")
    return state


def save_weights(path: str | Path, arch: Arch, state_dict: dict[str, torch.Tensor],
                 hidden_index: dict[str, list[int]]) -> Path:
    """The finalize contract: build_model(arch)'s keys; hidden dims may be wider than the
    arch's hidden_chs, and ``hidden_index[layer]`` lists the hidden channels to keep."""
    return save_torch(path, {"onnxnas_checkpoint": WEIGHTS_FORMAT, "arch_hash": arch.hash,
                             "state_dict": state_dict, "hidden_index": hidden_index})
