"""TensorRT engine build with Polygraphy loaders: timing cache, 2:4 sparse weights, compatibility modes.

Precision is set exactly as the LUT's TensorRT backend sets it (strongly typed from
TensorRT 11, builder flags up to 10), so the shipped engine runs the kernels the LUT
timed. The plan file is TensorRT's bytes untouched: trtexec must load it, so every
piece of metadata goes to the manifest instead.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path
from typing import Any

import torch

from onnxnas.errors import OnnxNasError, choice_error
from onnxnas.fileio import atomic_write_bytes
from onnxnas.timing.tensorrt import import_tensorrt, major_version, precision_flags

HARDWARE_COMPATIBILITY = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
DEFAULT_TIMING_CACHE = Path.home() / ".cache" / "onnxnas" / "tensorrt.timing.cache"  # shared, never shipped


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Builder settings recorded in the manifest next to the engine."""

    timing_cache: Path | None = None
    sparse_weights: bool = False
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    workspace_mib: int | None = None

    def __post_init__(self) -> None:
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise choice_error("hardware compatibility level", self.hardware_compatibility, tuple(HARDWARE_COMPATIBILITY),
                               where="--hardware-compatibility")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise OnnxNasError("--exclude-lean-runtime needs --version-compatible")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        return data


def tensorrt_available() -> bool:
    """TensorRT can build here: the Python package and a CUDA device are both present."""
    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def build_engine(onnx_path: Path, engine_path: Path, precision: str, options: EngineOptions) -> dict[str, Any]:
    """Build ``engine_path`` from ``onnx_path``; return what the manifest records about it."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    trt = import_tensorrt()
    major = major_version(trt.__version__)
    flags = precision_flags(precision, major)
    level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPATIBILITY[options.hardware_compatibility])
    pools = {trt.MemoryPoolType.WORKSPACE: options.workspace_mib << 20} if options.workspace_mib else None
    cache = str(options.timing_cache) if options.timing_cache else None
    if options.timing_cache:
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
    config = CreateConfig(fp16="FP16" in flags, int8="INT8" in flags, sparse_weights=options.sparse_weights,
                          load_timing_cache=cache, hardware_compatibility_level=level,
                          version_compatible=options.version_compatible,
                          exclude_lean_runtime=options.exclude_lean_runtime, memory_pool_limits=pools)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=major >= 11)
    start = time.perf_counter()
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            plan = EngineBytesFromNetwork(network, config=config, save_timing_cache=cache)()
    except PolygraphyException as exc:
        raise OnnxNasError(f"TensorRT {trt.__version__} could not build an engine: {exc}", where=str(onnx_path)) from exc
    atomic_write_bytes(engine_path, bytes(plan))
    return {"tensorrt": trt.__version__, "builder_flags": list(flags), "strongly_typed": major >= 11,
            "build_s": round(time.perf_counter() - start, 2), **options.to_dict()}
