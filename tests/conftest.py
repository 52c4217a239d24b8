"""Shared fixtures and the skip rules for hardware markers."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def _has_tensorrt() -> bool:
    return _has_cuda() and importlib.util.find_spec("tensorrt") is not None


def _has_trtexec() -> bool:
    return shutil.which("trtexec") is not None


_SKIPS = {
    "gpu": (_has_cuda, "needs a CUDA device"),
    "tensorrt": (_has_tensorrt, "needs TensorRT and a CUDA device"),
    "trtexec": (_has_trtexec, "needs trtexec on PATH"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for name, (available, reason) in _SKIPS.items():
        if available():
            continue
        marker = pytest.mark.skip(reason=reason)
        for item in items:
            if name in item.keywords:
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
